"""The upstream client base: one pooled httpx2 client per upstream.

It owns what every upstream shares: the timeout, TLS choice, credentials injected here and never
seen by a route, the mapping of transport failures to 502/503/504, and single-flight GETs
(identical concurrent GETs share one upstream request, so 50 tabs polling the same widget cost
the upstream one call). What an upstream's status codes *mean* is left to its own client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from homepanel.core.errors import ApiError, UpstreamError, UpstreamTimeout

logger = logging.getLogger(__name__)

Params = Mapping[str, str | int | float]


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A fully read upstream answer; immutable so coalesced callers can share it safely."""

    service: str
    status_code: int
    reason: str
    headers: httpx2.Headers
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The body as JSON, or 502: an upstream answering HTML or garbage is a broken upstream."""
        content_type = self.headers.get("content-type", "")
        if "json" not in content_type:
            shown = content_type.split(";")[0] or "no content type"
            raise UpstreamError(
                f"{self.service} answered {self.status_code} with {shown} instead of JSON",
                error_code="UPSTREAM_BAD_RESPONSE",
            )
        try:
            return json.loads(self.content)
        except ValueError:
            raise UpstreamError(
                f"{self.service} answered {self.status_code} with malformed JSON",
                error_code="UPSTREAM_BAD_RESPONSE",
            ) from None


def tls_verify(choice: bool | Path) -> bool | ssl.SSLContext:
    """`True`/`False`, or pin a self-signed host's CA file (Proxmox's `pve-root-ca.pem`).

    Home-lab hosts are reached by IP and their certificates rarely carry an IP SAN, so with a
    pinned CA the host name is not checked; the chain still must lead to that CA.
    """
    if isinstance(choice, bool):
        return choice
    context = ssl.create_default_context(cafile=str(choice))
    context.check_hostname = False
    return context


class SingleFlight:
    """Runs one call per key at a time; concurrent callers with the same key share its result.

    The shared call runs while anyone still waits for it: one caller giving up (a closed tab)
    does not cancel it for the others, and the last one leaving does, so nobody later joins a
    call that was started long ago for callers that are gone.
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, _SharedCall] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[Any]]) -> Any:
        shared = self._calls.get(key)
        if shared is None:
            shared = _SharedCall(asyncio.ensure_future(call()))
            self._calls[key] = shared
            shared.task.add_done_callback(lambda _: self._forget(key, shared))
        shared.waiters += 1
        try:
            return await asyncio.shield(shared.task)
        finally:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                self._forget(key, shared)
                shared.task.cancel()

    def _forget(self, key: Hashable, shared: _SharedCall) -> None:
        if self._calls.get(key) is shared:
            del self._calls[key]
        if shared.task.done() and not shared.task.cancelled():
            shared.task.exception()  # retrieved: every caller may have gone before it ended


@dataclass(slots=True)
class _SharedCall:
    task: asyncio.Future[Any]
    waiters: int = 0


class UpstreamClient:
    """Talks HTTP to one upstream; raises ApiError subclasses for transport failures."""

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        auth: httpx2.Auth | tuple[str, str] | None = None,
        verify: bool | Path = True,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self._client = httpx2.AsyncClient(
            base_url=base_url,
            headers=headers,
            auth=auth,
            verify=tls_verify(verify),
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
        )
        self._single_flight = SingleFlight()

    async def get(self, path: str, params: Params | None = None) -> UpstreamResponse:
        """GET, coalesced with any identical GET already in flight."""
        key = (path, tuple(sorted((params or {}).items())))
        return await self._single_flight.run(key, lambda: self.request("GET", path, params=params))

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
    ) -> UpstreamResponse:
        started = time.perf_counter()
        try:
            response = await self._client.request(method, path, params=params, json=json)
        except httpx2.HTTPError as exc:
            raise self._transport_error(exc) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.debug(
            "%s %s %s -> %s in %.1f ms",
            self.service,
            method,
            path,
            response.status_code,
            elapsed_ms,
        )
        return UpstreamResponse(
            service=self.service,
            status_code=response.status_code,
            reason=response.reason_phrase,
            headers=response.headers,
            content=response.content,
        )

    def _transport_error(self, exc: httpx2.HTTPError) -> ApiError:
        logger.warning("%s request failed: %s: %s", self.service, type(exc).__name__, exc)
        if isinstance(exc, httpx2.PoolTimeout):
            return ApiError(
                f"Too many requests to {self.service} in flight; try again",
                status_code=503,
                error_code="UPSTREAM_BUSY",
            )
        if isinstance(exc, httpx2.TimeoutException):
            return UpstreamTimeout(f"{self.service} did not answer within {self.timeout:g} s")
        if isinstance(exc, httpx2.ConnectError) and "CERTIFICATE" in str(exc).upper():
            return UpstreamError(
                f"{self.service}: TLS certificate verification failed",
                error_code="UPSTREAM_TLS_ERROR",
            )
        if isinstance(exc, httpx2.ConnectError):
            return UpstreamError(
                f"{self.service} is unreachable", error_code="UPSTREAM_UNREACHABLE"
            )
        return UpstreamError(
            f"{self.service} closed the connection without a valid answer",
            error_code="UPSTREAM_UNREACHABLE",
        )

    async def aclose(self) -> None:
        await self._client.aclose()
