"""One login for the panel: the access token buys a JWT, sent as a Bearer header or a cookie.

- JWTs are HS256 only, with `exp iat jti` required and `atf`, a keyed fingerprint of the current
  access token: changing `ACCESS_TOKEN` logs everyone out without touching the JWT secret.
- The cookie exists because `EventSource` and `<img src>` cannot send headers. A state change
  authenticated by the cookie alone must also pass a CSRF check.
- Logout revokes the `jti` until the token would have expired anyway.
- The tenth wrong access token in a row from one address locks it out for 15 minutes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import math
import os
import secrets
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import jwt
from fastapi import Request

from homepanel.core.errors import Forbidden, RateLimited, Unauthorized
from homepanel.store.db import Database

logger = logging.getLogger(__name__)

COOKIE_NAME = "homepanel_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCKOUT_AFTER = 10
LOCKOUT_SECONDS = 15 * 60
_MAX_TRACKED_ADDRESSES = 10_000
_MAX_JWT_LENGTH = 4096
_LEEWAY = 30  # seconds of clock skew forgiven on `exp` and `iat`
_VERIFIED_CACHE = 1024  # tokens whose signature need not be checked again


def load_or_create_secret(path: Path) -> str:
    """Read the JWT secret kept in the data dir, creating it (mode 0600) on first start.

    `O_EXCL` makes two racing starts agree on one secret, and the mode is set at creation so
    the secret is never readable by others, not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(64))
            file.flush()
            os.fsync(file.fileno())
        logger.info("Generated a new JWT secret in %s", path)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise PermissionError(f"{path} is readable by other users; run: chmod 600 {path}")
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds a secret shorter than 32 characters")
    return secret


@dataclass(frozen=True, slots=True)
class Session:
    """A verified login."""

    jti: str
    expires_at: int
    via_cookie: bool


class TokenService:
    """Issues, verifies and revokes the panel's JWTs."""

    def __init__(self, secret: str, access_token: str, ttl: int, db: Database) -> None:
        self._key = secret.encode()
        self._access_token = access_token.encode()
        self._fingerprint = self.fingerprint(access_token)
        self.ttl = ttl
        self._db = db
        self._revoked: dict[str, int] = {}
        # A browser sends the same JWT with every request: check its signature once. Expiry
        # and revocation are still checked on every use.
        self._claims = functools.lru_cache(maxsize=_VERIFIED_CACHE)(self._decode)

    def fingerprint(self, access_token: str) -> str:
        return hmac.new(self._key, access_token.encode(), hashlib.sha256).hexdigest()[:32]

    def check_access_token(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._access_token)

    async def load_revoked(self) -> None:
        now = int(time.time())
        await self._db.execute("DELETE FROM revoked_tokens WHERE expires_at <= ?", (now,))
        rows = await self._db.fetchall("SELECT jti, expires_at FROM revoked_tokens")
        self._revoked = {jti: expires_at for jti, expires_at in rows}

    def issue(self) -> str:
        now = int(time.time())
        claims = {
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(16),
            "atf": self._fingerprint,
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str, *, via_cookie: bool = False) -> Session:
        if len(token) > _MAX_JWT_LENGTH:
            raise Unauthorized()
        jti, expires_at = self._claims(token)
        if expires_at <= time.time() - _LEEWAY or jti in self._revoked:
            raise Unauthorized()
        return Session(jti=jti, expires_at=expires_at, via_cookie=via_cookie)

    def _decode(self, token: str) -> tuple[str, int]:
        """The `jti` and `exp` of a genuine token of ours; Unauthorized for anything else."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                options={"require": ["exp", "iat", "jti"]},
                leeway=_LEEWAY,
            )
        except jwt.PyJWTError:
            raise Unauthorized() from None
        jti, fingerprint = claims.get("jti"), claims.get("atf")
        if not isinstance(jti, str) or not isinstance(fingerprint, str):
            raise Unauthorized()
        if not hmac.compare_digest(fingerprint, self._fingerprint):
            raise Unauthorized()
        return jti, int(claims["exp"])

    async def revoke(self, session: Session) -> None:
        now = int(time.time())
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp > now}
        self._revoked[session.jti] = session.expires_at
        await self._db.execute(
            "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)",
            (session.jti, session.expires_at),
        )


class LoginLockout:
    """Counts consecutive wrong tokens per address; bounded so spoofed floods cannot grow it."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._locked_until: dict[str, float] = {}

    def check(self, address: str) -> None:
        until = self._locked_until.get(address)
        if until is None:
            return
        remaining = until - time.monotonic()
        if remaining > 0:
            raise RateLimited(
                math.ceil(remaining), "Too many wrong access tokens; this address is locked out"
            )
        del self._locked_until[address]

    def failed(self, address: str) -> None:
        count = self._failures.pop(address, 0) + 1
        if count >= LOCKOUT_AFTER:
            now = time.monotonic()
            self._locked_until = {a: t for a, t in self._locked_until.items() if t > now}
            self._locked_until[address] = now + LOCKOUT_SECONDS
            logger.warning("Login locked for %s after %d wrong tokens", address, count)
            return
        self._failures[address] = count
        while len(self._failures) > _MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def _csrf_ok(request: Request, allowed_origins: list[str]) -> bool:
    origin = request.headers.get("origin")
    if origin is not None:
        return origin in allowed_origins
    return "x-requested-with" in request.headers


async def require_session(request: Request) -> Session:
    """Router dependency: the request's login, from the Bearer header or else the cookie."""
    tokens: TokenService = request.app.state.tokens
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized()
        return tokens.verify(token.strip())
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        raise Unauthorized()
    session = tokens.verify(cookie, via_cookie=True)
    if request.method not in SAFE_METHODS and not _csrf_ok(
        request, request.app.state.settings.cors_origins
    ):
        raise Forbidden(
            "Cross-site request refused: send X-Requested-With or an allowed Origin",
            error_code="CSRF_CHECK_FAILED",
        )
    return session
