"""Talks to Frigate NVR: config, events, stats and camera snapshots.

Frigate 0.14+ on its authenticated port wants a login: `POST /api/login` returns a JWT in the
`frigate_token` cookie, which we send as a Bearer token, renew once on a 401 and otherwise
reuse. No browser header is ever forwarded: Frigate 0.13/0.14 answer any request carrying an
`Origin` without `X-CSRF-TOKEN` with 401 "Missing CSRF header", GETs included.
"""

from __future__ import annotations

import asyncio
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote

from homepanel.core.config import Settings
from homepanel.core.errors import UpstreamError
from homepanel.core.http import OnCall, Params, UpstreamClient, UpstreamResponse, parse_as
from homepanel.frigate.schemas import FrigateConfig, FrigateEvent, FrigateStats

TIMEOUT = 5.0
CREDENTIALS = "FRIGATE_USERNAME / FRIGATE_PASSWORD"


class FrigateClient:
    def __init__(self, settings: Settings, on_call: OnCall | None = None) -> None:
        assert settings.frigate_url is not None
        self._http = UpstreamClient(
            "Frigate",
            settings.frigate_url,
            timeout=TIMEOUT,
            verify=settings.frigate_verify_ssl,
            on_call=on_call,
        )
        self._credentials: dict[str, str] | None = None
        if settings.frigate_username:
            password = settings.frigate_password
            self._credentials = {
                "user": settings.frigate_username,
                "password": password.get_secret_value() if password else "",
            }
        self._token: str | None = None
        self._login_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def config(self) -> FrigateConfig:
        return parse_as(FrigateConfig, (await self._get("/api/config")).json(), "Frigate")

    async def events(self, params: Params) -> list[FrigateEvent]:
        query = {**params, "include_thumbnails": 0}  # each thumbnail is a few KB of base64
        return parse_as(
            list[FrigateEvent], (await self._get("/api/events", query)).json(), "Frigate"
        )

    async def stats(self) -> FrigateStats:
        return parse_as(FrigateStats, (await self._get("/api/stats")).json(), "Frigate")

    async def snapshot(self, camera: str, height: int) -> bytes:
        """The camera's latest frame as JPEG (the stock error image while it is offline).

        `h` is what 0.13/0.14 read and `height` what 0.15+ read; each ignores the other.
        """
        response = await self._get(
            f"/api/{quote(camera, safe='')}/latest.jpg",
            {"h": height, "height": height},
            not_found=f"Unknown camera {camera!r}",
        )
        if not response.headers.get("content-type", "").startswith("image/jpeg"):
            raise UpstreamError(
                "Frigate answered the snapshot with something other than a JPEG",
                error_code="UPSTREAM_BAD_RESPONSE",
            )
        return response.content  # decoded: 0.13-0.15's nginx may gzip JPEGs

    async def _get(
        self, path: str, params: Params | None = None, *, not_found: str | None = None
    ) -> UpstreamResponse:
        token = await self._current_token()
        response = await self._http.get(path, params, headers=_bearer(token))
        if response.status_code == 401 and self._credentials is not None:
            token = await self._renew(stale=token)
            response = await self._http.get(path, params, headers=_bearer(token))
        response.raise_for_status(credentials=CREDENTIALS, not_found=not_found)
        return response

    async def _current_token(self) -> str | None:
        if self._credentials is None or self._token is not None:
            return self._token
        return await self._renew(stale=None)

    async def _renew(self, stale: str | None) -> str:
        """Log in again, once for all the callers that saw the same token rejected."""
        async with self._login_lock:
            if self._token is not None and self._token != stale:
                return self._token
            response = await self._http.request("POST", "/api/login", json=self._credentials)
            if not response.ok:
                raise UpstreamError(
                    f"Frigate refused the login ({response.message()}): check {CREDENTIALS}",
                    error_code="UPSTREAM_AUTH_FAILED",
                )
            self._token = _cookie_token(response)
            return self._token


def _bearer(token: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None


def _cookie_token(response: UpstreamResponse) -> str:
    for header in response.headers.getall("set-cookie", []):
        try:
            cookie = SimpleCookie(header)
        except CookieError:
            continue
        if "frigate_token" in cookie and cookie["frigate_token"].value:
            return cookie["frigate_token"].value
    raise UpstreamError(
        "Frigate accepted the login but sent no frigate_token cookie",
        error_code="UPSTREAM_BAD_RESPONSE",
    )
