"""Keeps device-state history: a permanent subscriber of the MQTT hub.

A state is stored only when it changed, where keys that change with every message
(`METRICS_DEVICE_IGNORED_KEYS`: link quality, last seen, ...) do not count as a change.
Timestamps are milliseconds, unique per topic, so two messages within one second are both kept.
While the tracker runs, the hub's one upstream connection stays open.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from homepanel.core.schedule import Clock
from homepanel.store.metrics import MetricsStore
from homepanel.streams.hub import StreamHub

logger = logging.getLogger(__name__)

FLUSH_EVERY = 1.0  # seconds: the changes of a second go to the store together


class DeviceTracker:
    def __init__(
        self, hub: StreamHub, store: MetricsStore, ignored_keys: Iterable[str], clock: Clock
    ) -> None:
        self._hub = hub
        self._store = store
        self._ignored = frozenset(ignored_keys)
        self._clock = clock
        self._last: dict[str, Any] = {}
        self._last_ms: dict[str, int] = {}
        self._pending: list[tuple[str, int, Any]] = []

    async def run(self) -> None:
        self._last = {
            topic: self._essence(state)
            for topic, state in (await self._store.last_device_states()).items()
        }
        flusher = asyncio.create_task(self._flush_every_second())
        try:
            dropped = True
            while dropped:  # resubscribe if the hub drops us for being slow; not once it closes
                subscription = self._hub.subscribe()
                try:
                    async for event in subscription.live():
                        self.observe(json.loads(event.data))
                finally:
                    self._hub.unsubscribe(subscription)
                dropped = subscription.dropped
        finally:
            flusher.cancel()
            await self.flush()

    def observe(self, message: dict[str, Any]) -> None:
        """Queue the message's state if it differs from the topic's last stored one."""
        topic, payload = message["topic"], message["payload"]
        essence = self._essence(payload)
        if self._last.get(topic, _NOTHING) == essence:
            return
        self._last[topic] = essence
        ts_ms = max(int(self._clock.time() * 1000), self._last_ms.get(topic, 0) + 1)
        self._last_ms[topic] = ts_ms
        self._pending.append((topic, ts_ms, payload))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await self._store.record_device_states(pending)

    async def _flush_every_second(self) -> None:
        while True:
            await self._clock.sleep(FLUSH_EVERY)
            try:
                await self.flush()
            except Exception:  # the tracker outlives a failed write; the next one may pass
                logger.exception("Could not store device states")

    def _essence(self, payload: Any) -> Any:
        if isinstance(payload, dict):
            return {k: v for k, v in payload.items() if k not in self._ignored}
        return payload


_NOTHING = object()
