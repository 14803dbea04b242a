"""`POST /api/auth/login` and `POST /api/auth/logout`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from homepanel.audit.log import audited
from homepanel.core.auth import COOKIE_NAME, LoginLockout, TokenService
from homepanel.core.deps import ClientIp, SessionDep, SettingsDep, rate_limit_api
from homepanel.core.errors import ErrorResponse, Unauthorized
from homepanel.core.ratelimit import RateLimiter

router = APIRouter(prefix="/api/auth", tags=["auth"])

WRONG_TOKEN = "Неверный токен доступа"  # noqa: S105 - the spec's message, not a secret


class LoginRequest(BaseModel):
    token: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    success: bool
    jwt: str
    expires_in: int


class LogoutResponse(BaseModel):
    success: bool


@router.post(
    "/login",
    responses={401: {"model": ErrorResponse}, 429: {"model": ErrorResponse}},
)
async def login(
    body: LoginRequest, request: Request, response: Response, ip: ClientIp, settings: SettingsDep
) -> LoginResponse:
    """Trade the panel's access token for a JWT (also set as an HttpOnly cookie)."""
    lockout: LoginLockout = request.app.state.login_lockout
    limiter: RateLimiter = request.app.state.rate_limiter
    tokens: TokenService = request.app.state.tokens
    async with audited(request, "login", "panel"):
        lockout.check(ip)
        await limiter.hit(settings.rate_limit_login, "login", ip)
        if not tokens.check_access_token(body.token):
            lockout.failed(ip)
            raise Unauthorized(WRONG_TOKEN, error_code="INVALID_ACCESS_TOKEN")
    lockout.succeeded(ip)
    token = tokens.issue()
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=tokens.ttl,
        httponly=True,
        samesite="strict",
        secure=settings.is_production,
        path="/",
    )
    return LoginResponse(success=True, jwt=token, expires_in=tokens.ttl)


@router.post(
    "/logout",
    dependencies=[Depends(rate_limit_api)],
    responses={401: {"model": ErrorResponse}, 429: {"model": ErrorResponse}},
)
async def logout(request: Request, response: Response, session: SessionDep) -> LogoutResponse:
    """Revoke this JWT and clear the cookie."""
    tokens: TokenService = request.app.state.tokens
    async with audited(request, "logout", "panel"):
        await tokens.revoke(session)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return LogoutResponse(success=True)
