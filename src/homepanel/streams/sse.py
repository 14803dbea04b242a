"""Server-Sent Events to the browser: hub streams and byte-exact pass-through relays.

Hub streams are the hot path: a thousand browsers at twenty events a second each cost one
socket write per event, and little else. `HubStreamResponse` sends the frames the hub encoded
once (with sse-starlette's `ServerSentEvent`) and the hub's shared `: ping`; one task per
browser listens for its disconnect; a browser that stops reading is dropped by the hub when
its queue is full (a write stuck on its socket then holds only what the kernel and uvicorn
buffer, until the socket dies); server shutdown ends the streams by closing the hubs
(`core/server.py`).

Relays forward upstream bytes as they are, cut only at event boundaries, on sse-starlette's
response, which ends them on server shutdown and drops a client whose socket accepts nothing
for `SEND_TIMEOUT`. They rely on the upstream's own keep-alives: a ping inserted between two TCP
chunks of one upstream event would end it early.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import anyio
import httpx2
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from homepanel.streams.hub import StreamHub, Subscription

logger = logging.getLogger(__name__)

SEND_TIMEOUT = 30.0
RETRY_MS = 3000  # how long a browser waits before reconnecting
# An event larger than this is forwarded before it is complete rather than held in memory.
MAX_HELD_BYTES = 1 << 20
_BOUNDARIES = (b"\r\n\r\n", b"\n\n", b"\r\r")
SSE_HEADERS: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_event(detail: str, error_code: str) -> bytes:
    """The uniform error body, as a final `event: error` of a stream that already started."""
    body = {"detail": detail, "error_code": error_code, "timestamp": datetime.now(UTC).isoformat()}
    return f"event: error\ndata: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


class HubStreamResponse(Response):
    """A browser's subscription to a hub, resuming after `Last-Event-ID` when it can."""

    media_type = "text/event-stream"

    def __init__(self, hub: StreamHub, last_event_id: str | None) -> None:
        # Not `Response.__init__`: a body-less Response would announce `Content-Length: 0`.
        self.status_code = 200
        self.background = None
        self.init_headers(SSE_HEADERS)
        self._hub = hub
        self._last_event_id = last_event_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self._hub.subscribe(self._last_event_id)
        listener = asyncio.create_task(_until_disconnect(receive, subscription))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in _hub_frames(subscription):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            listener.cancel()
            self._hub.unsubscribe(subscription)


async def _until_disconnect(receive: Receive, subscription: Subscription) -> None:
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await receive()
    subscription.end()


async def _hub_frames(subscription: Subscription) -> AsyncIterator[bytes]:
    opening = [ServerSentEvent(retry=RETRY_MS).encode()]
    if subscription.resync:
        opening.append(ServerSentEvent(event="resync", data="{}").encode())
    opening += [event.frame for event in subscription.backlog]
    yield b"".join(opening)
    async for batch in subscription.batches():
        yield b"".join([event.frame for event in batch])
    if subscription.dropped:
        yield ServerSentEvent(event="resync", data='{"reason":"too slow"}').encode()


class RelayResponse(EventSourceResponse):
    """Streams an open upstream SSE response to the browser, then closes it, always.

    sse-starlette ends it on server shutdown and drops a stuck client; its pings are off.
    The upstream is closed when the stream ends, when the browser leaves, and also when the
    browser left before the first byte (then the body is never iterated).
    """

    def __init__(self, upstream: httpx2.Response, service: str) -> None:
        self._upstream = upstream
        self._service = service
        super().__init__(self._frames(), headers=SSE_HEADERS, ping=0, send_timeout=SEND_TIMEOUT)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()

    async def _frames(self) -> AsyncIterator[bytes]:
        held = b""
        try:
            async for chunk in self._upstream.aiter_raw():
                held += chunk
                cut = max((held.rfind(b) + len(b) for b in _BOUNDARIES if b in held), default=0)
                if len(held) > MAX_HELD_BYTES:
                    cut = len(held)
                if cut:
                    yield held[:cut]
                    held = held[cut:]
        except httpx2.HTTPError as exc:
            logger.warning("%s stream broke: %s: %s", self._service, type(exc).__name__, exc)
            # The incomplete event is dropped: a browser would otherwise dispatch half of it.
            yield error_event(
                f"{self._service} stream broke off; reconnect to continue", "UPSTREAM_STREAM_BROKEN"
            )
            return
        if held:
            yield held
