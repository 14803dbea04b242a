"""The upstream client base: one pooled HTTP client per upstream.

It owns what every upstream shares: the timeout, TLS choice, credentials injected here and never
seen by a route, the mapping of transport failures to 502/504, and single-flight GETs
(identical concurrent GETs share one upstream request, so 50 tabs polling the same widget cost
the upstream one call). What an upstream's status codes *mean* is left to its own client.

Two HTTP stacks, each where it is best: aiohttp for request/response calls, the hot path of
every dashboard poll, where a call costs about half of what it costs with httpx2
(`bench/README.md`, proxy overhead); httpx2 for streams, whose built-in SSE parser the hub
and the relays use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import httpx2
from httpx2 import EventSource
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr, TypeAdapter, ValidationError
from pydantic_core import from_json
from yarl import URL

from homepanel.core.errors import ApiError, NotFound, UpstreamError, UpstreamTimeout

logger = logging.getLogger(__name__)

Params = Mapping[str, str | int | float]
OnCall = Callable[[float, str | None], None]  # (seconds, error or None)
IDENTITY = {"Accept-Encoding": "identity"}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A fully read upstream answer; immutable so coalesced callers can share it safely."""

    service: str
    status_code: int
    reason: str
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def message(self) -> str:
        """The upstream's own words about an error, from its JSON body or the reason phrase."""
        if "text/html" in self.headers.get("content-type", ""):
            return "an HTML error page"
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(self.content)
        if isinstance(body, dict):
            for key in ("message", "detail", "error"):
                if isinstance(body.get(key), str) and body[key].strip():
                    return body[key].strip().splitlines()[0][:300]
        return self.reason or f"HTTP {self.status_code}"

    def raise_for_status(self, *, credentials: str, not_found: str | None = None) -> None:
        """Map a non-2xx answer to our errors.

        401/403 mean the backend's own credentials are wrong (never the browser's fault): a 502
        that names the variables to fix. 404 becomes ours only when the caller says what was
        not found; anything else is a broken upstream.
        """
        if self.ok:
            return
        if self.status_code in (401, 403):
            raise UpstreamError(
                f"{self.service} rejected the backend's credentials ({self.message()}): "
                f"check {credentials}",
                error_code="UPSTREAM_AUTH_FAILED",
            )
        if self.status_code == 404 and not_found is not None:
            raise NotFound(not_found)
        raise UpstreamError(f"{self.service} answered {self.status_code}: {self.message()}")

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
            return from_json(self.content)  # pydantic's parser: twice as fast as json.loads
        except ValueError:
            raise UpstreamError(
                f"{self.service} answered {self.status_code} with malformed JSON",
                error_code="UPSTREAM_BAD_RESPONSE",
            ) from None


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def parse_as(kind: type[T], data: Any, service: str) -> T:
    """Validate upstream data against our model of it; a mismatch is a broken upstream (502)."""
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError:
        raise UpstreamError(
            f"{service} answered in an unexpected format", error_code="UPSTREAM_BAD_RESPONSE"
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


def _stream_timeout(read: float) -> httpx2.Timeout:
    return httpx2.Timeout(connect=5.0, read=read, write=10.0, pool=5.0)


def basic_auth(username: str | None, password: SecretStr | None) -> tuple[str, str] | None:
    """httpx2's Basic auth pair, or None when no user is configured."""
    if not username:
        return None
    return (username, password.get_secret_value() if password is not None else "")


def path_segments(name: str) -> str:
    """`main/kitchen/light` -> each segment percent-encoded, the slashes kept as separators."""
    return "/".join(quote(segment, safe="") for segment in name.split("/"))


class SingleFlight:
    """Runs one call per key at a time; concurrent callers with the same key share its result.

    The first caller runs the call itself, in its own task: a task per call, to be shared,
    cost every request tens of microseconds, and calls rarely overlap. Those arriving meanwhile
    wait for its outcome. If the first caller is cancelled (a closed tab), its call goes with
    it and one of those still waiting runs it anew: nobody is left without an answer, and
    nobody joins a call that was started for callers who are gone.
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[Any]]) -> Any:
        while (shared := self._calls.get(key)) is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not shared.cancelled() or (current is not None and current.cancelling()):
                    raise  # this caller was cancelled, not the call
        outcome = asyncio.get_running_loop().create_future()
        self._calls[key] = outcome
        try:
            result = await call()
        except asyncio.CancelledError:
            outcome.cancel()
            raise
        except BaseException as exc:
            outcome.set_exception(exc)
            outcome.exception()  # retrieved: nobody else may be waiting for it
            raise
        finally:
            del self._calls[key]
        outcome.set_result(result)
        return result


class UpstreamClient:
    """Talks HTTP to one upstream; raises ApiError subclasses for transport failures."""

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        verify: bool | Path = True,
        credentials: str = "",
        on_call: OnCall | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self._on_call = on_call  # told each call's duration and failure, for health and metrics
        self.credentials = credentials  # the variables to fix when the upstream refuses us
        self._base_url = base_url.rstrip("/")
        tls = tls_verify(verify)  # one context (a pinned CA read once) for both pools
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls),
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0)),
            # Uncompressed: on a home LAN, gzip costs both ends more CPU than it saves in time.
            headers={**(headers or {}), **_authorization(auth), **IDENTITY},
            cookie_jar=aiohttp.DummyCookieJar(),  # Frigate's client keeps its login token itself
        )
        # Long-lived streams get their own pool, so a burst of open log tails can never make
        # REST calls wait for a connection.
        self._streams = httpx2.AsyncClient(
            base_url=base_url,
            headers={**(headers or {}), **IDENTITY},  # relayed bytes are the event bytes
            auth=auth,
            verify=tls,
            follow_redirects=False,
            timeout=httpx2.Timeout(None, connect=5.0),
        )
        self._single_flight = SingleFlight()

    async def get(
        self, path: str, params: Params | None = None, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """GET, coalesced with any identical GET already in flight (`headers` are not part of
        the identity: they carry the backend's own credentials, the same for every caller)."""
        key = (path, tuple(sorted((params or {}).items())))
        return await self._single_flight.run(
            key, lambda: self.request("GET", path, params=params, headers=headers)
        )

    async def get_json(
        self,
        kind: type[T],
        path: str,
        params: Params | None = None,
        *,
        not_found: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """A coalesced GET whose 2xx JSON answer is validated as `kind`."""
        response = await self.get(path, params, headers=headers)
        response.raise_for_status(credentials=self.credentials, not_found=not_found)
        return parse_as(kind, response.json(), self.service)

    async def send_json(
        self,
        kind: type[T],
        method: str,
        path: str,
        *,
        params: Params | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        not_found: str | None = None,
    ) -> T:
        """A state-changing call (never coalesced) whose JSON answer is validated as `kind`."""
        response = await self.request(method, path, params=params, content=content, headers=headers)
        response.raise_for_status(credentials=self.credentials, not_found=not_found)
        return parse_as(kind, response.json(), self.service)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        started = time.perf_counter()
        # Our paths arrive percent-encoded segment by segment: they must not be quoted again.
        url = URL(self._base_url + path, encoded=True)
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                json=json,
                data=content,
                headers=headers,
                allow_redirects=False,
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed(exc, started) from None
        self._report(started, response.status)
        logger.debug(
            "%s %s %s -> %s in %.1f ms",
            self.service,
            method,
            path,
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        return UpstreamResponse(
            service=self.service,
            status_code=response.status,
            reason=response.reason or "",
            headers=response.headers,
            content=body,
        )

    def _report(self, started: float, status: int) -> None:
        if self._on_call is not None:
            # Refused credentials or a server error make the upstream unusable: "down".
            broken = status >= 500 or status in (401, 403)
            self._on_call(time.perf_counter() - started, f"HTTP {status}" if broken else None)

    def _failed(self, exc: Exception, started: float) -> ApiError:
        logger.warning("%s request failed: %s: %s", self.service, type(exc).__name__, exc)
        error = self._transport_error(exc)
        if self._on_call is not None:
            self._on_call(time.perf_counter() - started, error.detail)
        return error

    def _transport_error(self, exc: Exception) -> ApiError:
        """What went wrong on the wire, whichever of the two stacks raised it."""
        if isinstance(exc, TimeoutError | httpx2.TimeoutException):
            return UpstreamTimeout(f"{self.service} did not answer within {self.timeout:g} s")
        if isinstance(exc, aiohttp.ClientSSLError) or (
            isinstance(exc, httpx2.ConnectError) and "CERTIFICATE" in str(exc).upper()
        ):
            return UpstreamError(
                f"{self.service}: TLS certificate verification failed",
                error_code="UPSTREAM_TLS_ERROR",
            )
        if isinstance(exc, aiohttp.ClientConnectorError | httpx2.ConnectError):
            return UpstreamError(
                f"{self.service} is unreachable", error_code="UPSTREAM_UNREACHABLE"
            )
        return UpstreamError(
            f"{self.service} closed the connection without a valid answer",
            error_code="UPSTREAM_UNREACHABLE",
        )

    async def open_stream(
        self,
        method: str,
        path: str,
        *,
        read_timeout: float,
        params: Params | None = None,
        json: Any = None,
        not_found: str | None = None,
    ) -> httpx2.Response:
        """Start a streaming request; errors surface here, before any byte reaches a browser.

        `read_timeout` is the longest silence allowed between two chunks. The caller owns the
        returned open response and must close it.
        """
        request = self._streams.build_request(
            method, path, params=params, json=json, timeout=_stream_timeout(read_timeout)
        )
        started = time.perf_counter()
        try:
            response = await self._streams.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise self._failed(exc, started) from None
        self._report(started, response.status_code)
        try:
            await self._check_stream(response, not_found)
        except BaseException:
            await response.aclose()
            raise
        return response

    @contextlib.asynccontextmanager
    async def events(self, path: str, *, read_timeout: float) -> AsyncIterator[EventSource]:
        """An upstream SSE stream, parsed into events (multi-line data joined, comments dropped)."""
        started = time.perf_counter()
        try:
            async with self._streams.sse(path, timeout=_stream_timeout(read_timeout)) as source:
                self._report(started, source.response.status_code)
                await self._check_stream(source.response, None)
                yield source
        except httpx2.HTTPError as exc:
            raise self._failed(exc, started) from None

    async def _check_stream(self, response: httpx2.Response, not_found: str | None) -> None:
        if response.is_success and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            return
        content = await response.aread() if not response.is_success else b""
        headers = CIMultiDictProxy(CIMultiDict(response.headers.multi_items()))
        answer = UpstreamResponse(
            self.service, response.status_code, response.reason_phrase, headers, content
        )
        answer.raise_for_status(credentials=self.credentials, not_found=not_found)
        raise UpstreamError(
            f"{self.service} answered a stream request with something other than events",
            error_code="UPSTREAM_BAD_RESPONSE",
        )

    async def aclose(self) -> None:
        await self._session.close()
        await self._streams.aclose()


def _authorization(auth: tuple[str, str] | None) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth is not None else {}
