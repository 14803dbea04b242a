"""One upstream stream, shared by every subscriber.

The hub owns the only connection to an upstream event stream. It opens with the first
subscriber, closes when the last one leaves, and is reopened with backoff while anyone is
subscribed. Each subscriber has a bounded queue. Publishing never waits: a subscriber whose
queue is full is dropped with a `resync` event, so one stalled browser can neither slow the
others nor grow memory. Recent events stay in a ring buffer, so a reconnecting client that
sends `Last-Event-ID` gets what it missed.
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

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256
HISTORY_SIZE = 1000
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One event as sent to browsers: `id:`, `event:` and one line of JSON `data:`."""

    seq: int
    id: str
    event: str
    data: str


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

    async def live(self) -> AsyncIterator[HubEvent]:
        while (event := await self._queue.get()) is not None:
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
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        if not self._subscribers and self._pump is not None:
            self._pump.cancel()
            self._pump = None
            logger.info("%s stream closed: no subscriber left", self.name)

    async def close(self) -> None:
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers.clear()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None

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
        event = HubEvent(
            seq=self._seq,
            id=f"{self._boot}-{self._seq}",
            event=self._event,
            data=json.dumps(message, ensure_ascii=False, separators=(",", ":")),
        )
        self._history.append(event)
        for subscription in list(self._subscribers):
            if not subscription.offer(event):
                self._subscribers.discard(subscription)
                subscription.end(dropped=True)
                logger.warning("%s: dropped a subscriber that stopped reading", self.name)

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
