"""Server-Sent Events to the browser: hub streams and byte-exact pass-through relays.

Hub streams are framed by sse-starlette, which also sends the `: ping` keep-alive and drops a
client whose socket accepts nothing for `SEND_TIMEOUT`. Relays forward upstream bytes as they
are, cut only at event boundaries, and rely on the upstream's own keep-alives. A ping inserted
between two TCP chunks of one upstream event would end it early.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import anyio
import httpx2
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from homepanel.streams.hub import StreamHub, Subscription

logger = logging.getLogger(__name__)

PING_INTERVAL = 15.0
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


def hub_stream(hub: StreamHub, last_event_id: str | None) -> EventSourceResponse:
    """A browser's subscription to `hub`, resuming after `last_event_id` when it can."""
    subscription = hub.subscribe(last_event_id)
    return EventSourceResponse(
        _hub_events(hub, subscription),
        headers=SSE_HEADERS,
        ping=PING_INTERVAL,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        send_timeout=SEND_TIMEOUT,
    )


async def _hub_events(hub: StreamHub, subscription: Subscription) -> AsyncIterator[ServerSentEvent]:
    try:
        yield ServerSentEvent(retry=RETRY_MS)
        if subscription.resync:
            yield ServerSentEvent(event="resync", data="{}")
        for event in subscription.backlog:
            yield ServerSentEvent(event.data, event=event.event, id=event.id)
        async for event in subscription.live():
            yield ServerSentEvent(event.data, event=event.event, id=event.id)
        if subscription.dropped:
            yield ServerSentEvent(event="resync", data='{"reason":"too slow"}')
    finally:
        hub.unsubscribe(subscription)


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
