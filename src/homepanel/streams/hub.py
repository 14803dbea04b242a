"""One upstream stream, shared by every subscriber.

The hub owns the only connection to an upstream event stream. It opens with the first
subscriber, closes when the last one leaves, and is reopened with backoff while anyone is
subscribed. Each subscriber has a bounded queue. Publishing never waits: a subscriber whose
queue is full is dropped with a `resync` event, so one stalled browser can neither slow the
others nor grow memory. Recent events stay in a ring buffer, so a reconnecting client that
sends `Last-Event-ID` gets what it missed.

Fan-out is the hot path (a thousand browsers times twenty events a second), so the per-browser
work is kept to a queue put and one socket write: each event is framed once, here, a
subscriber takes everything queued in one batch, and one timer pings every subscriber.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256
HISTORY_SIZE = 1000
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
PING_INTERVAL = 15.0  # keeps proxies and browsers from timing out an idle stream


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One event as sent to browsers: `id:`, `event:` and one line of JSON `data:`, and
    `frame`, those lines encoded once for every subscriber."""

    seq: int
    id: str
    event: str
    data: str
    frame: bytes


def _event(seq: int, id: str, event: str, data: str) -> HubEvent:
    frame = ServerSentEvent(data, event=event, id=id).encode()
    return HubEvent(seq, id, event, data, frame)


# Not an event: a `: ping` comment, queued to subscribers by the hub's timer.
KEEPALIVE = HubEvent(0, "", "", "", ServerSentEvent(comment="ping").encode())


def backoff_delay(attempt: int) -> float:
    """1 s, 2 s, 4 s ... capped at 60 s, each jittered to 50-100 % so that many backends
    (or one backend's many hubs) do not reconnect in lockstep after an upstream restart."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311


class Subscription:
    """One subscriber's view of the hub: missed events first, then live ones."""

    def __init__(self, backlog: list[HubEvent], resync: bool) -> None:
        self.backlog = backlog
        self.resync = resync  # its Last-Event-ID was too old: it must reload its state
        self.dropped = False
        self._queue: asyncio.Queue[HubEvent | None] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, event: HubEvent) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def end(self, *, dropped: bool = False) -> None:
        """Stop the subscription; a dropped one ends with a `resync` event."""
        self.dropped = dropped
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def batches(self) -> AsyncIterator[list[HubEvent]]:
        """Everything queued since the last batch, keep-alives included, waiting for at least
        one. A browser that fell behind catches up in one write instead of many."""
        while (first := await self._queue.get()) is not None:
            batch = [first]
            while not self._queue.empty():
                if (event := self._queue.get_nowait()) is None:
                    yield batch
                    return
                batch.append(event)
            yield batch

    async def live(self) -> AsyncIterator[HubEvent]:
        """The events one at a time, for subscribers inside the backend."""
        async for batch in self.batches():
            for event in batch:
                if event is not KEEPALIVE:
                    yield event


Source = Callable[[], AsyncIterator[dict[str, Any]]]


class StreamHub:
    """Fans one upstream stream (`source`: connect and yield messages) out to subscribers."""

    def __init__(self, name: str, source: Source, *, event: str) -> None:
        self.name = name
        self._source = source
        self._event = event
        self._boot = secrets.token_hex(4)  # ids of a previous run are never taken for ours
        self._seq = 0
        self._history: deque[HubEvent] = deque(maxlen=HISTORY_SIZE)
        self._subscribers: set[Subscription] = set()
        self._pump: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        backlog, resync = self._missed_since(last_event_id)
        subscription = Subscription(backlog, resync)
        self._subscribers.add(subscription)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name=f"{self.name} stream")
            self._pinger = asyncio.create_task(self._ping(), name=f"{self.name} pings")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        if not self._subscribers and self._pump is not None:
            self._stop_tasks()
            logger.info("%s stream closed: no subscriber left", self.name)

    async def close(self) -> None:
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers.clear()
        await asyncio.gather(*self._stop_tasks(), return_exceptions=True)

    def _stop_tasks(self) -> list[asyncio.Task[None]]:
        tasks = [task for task in (self._pump, self._pinger) if task is not None]
        for task in tasks:
            task.cancel()
        self._pump = self._pinger = None
        return tasks

    def _missed_since(self, last_event_id: str | None) -> tuple[list[HubEvent], bool]:
        if not last_event_id:
            return [], False
        boot, _, seq = last_event_id.partition("-")
        if boot != self._boot or not seq.isdigit():
            return [], True
        last = int(seq)
        oldest = self._history[0].seq if self._history else self._seq + 1
        if last > self._seq or last < oldest - 1:
            return [], True
        return [event for event in self._history if event.seq > last], False

    def _publish(self, message: dict[str, Any]) -> None:
        self._seq += 1
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        event = _event(self._seq, f"{self._boot}-{self._seq}", self._event, data)
        self._history.append(event)
        for subscription in list(self._subscribers):
            if not subscription.offer(event):
                self._subscribers.discard(subscription)
                subscription.end(dropped=True)
                logger.warning("%s: dropped a subscriber that stopped reading", self.name)

    async def _ping(self) -> None:
        """One timer for every subscriber, also while the upstream is away. A subscriber whose
        queue is full gets no ping: it is not idle, it is behind."""
        while True:
            await asyncio.sleep(PING_INTERVAL)
            for subscription in self._subscribers:
                subscription.offer(KEEPALIVE)

    async def _run(self) -> None:
        """Keep the upstream stream open for as long as anyone listens."""
        attempt = 0
        while True:
            try:
                async for message in self._source():
                    attempt = 0  # it delivered: the next failure starts from 1 s again
                    self._publish(message)
                reason = "the upstream ended the stream"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke, the subscribers wait for a reconnect
                reason = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            delay = backoff_delay(attempt)
            attempt += 1
            self.reconnects += 1
            logger.warning(
                "%s stream lost (%s); reconnect attempt %d in %.1f s",
                self.name,
                reason,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)
