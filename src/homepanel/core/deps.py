"""FastAPI dependencies shared by every router: settings, the caller's IP, the login.

They are `async def` although none awaits: FastAPI runs a plain `def` dependency in a worker
thread, a hop that costs more than the dependency itself on every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from homepanel.core.auth import Session, require_session
from homepanel.core.config import Settings
from homepanel.core.errors import NotConfigured
from homepanel.core.ratelimit import RateLimiter, client_ip


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_client_ip(request: Request) -> str:
    return client_ip(request, request.app.state.trusted_networks)


async def rate_limit_api(request: Request) -> None:
    """`RATE_LIMIT_API` per client IP. An event stream is one request, counted once."""
    limiter: RateLimiter = request.app.state.rate_limiter
    ip = await get_client_ip(request)
    await limiter.hit(request.app.state.settings.rate_limit_api, "api", ip)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientIp = Annotated[str, Depends(get_client_ip)]


async def api_access(request: Request) -> Session:
    """The rate limit first (it also slows unauthenticated floods), then the login. One
    dependency with no sub-dependencies: each costs FastAPI some tens of microseconds per
    request."""
    await rate_limit_api(request)
    return await require_session(request)


# Every `/api/` router but login.
API_DEPENDENCIES = [Depends(api_access)]
SessionDep = Annotated[Session, Depends(require_session)]


def upstream(name: str, label: str, variable: str) -> Callable[[Request], Any]:
    """A dependency yielding the client of upstream `name`, or 503 when it is not configured."""

    async def dependency(request: Request) -> Any:
        client = request.app.state.upstreams.get(name)
        if client is None:
            raise NotConfigured(f"{label} is not configured: set {variable}")
        return client

    return dependency
