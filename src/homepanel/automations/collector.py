"""Collects automation activity every `METRICS_INTERVAL_AUTOMATIONS`: triggers and errors per
interval, from the cumulative counts the Automation API reports (reset by a restart)."""

from __future__ import annotations

from homepanel.automations.client import AutomationClient
from homepanel.core.schedule import Clock, retried_or_skipped
from homepanel.store.metrics import AUTOMATION, MetricsStore, counter_delta


class AutomationCollector:
    def __init__(self, client: AutomationClient, store: MetricsStore, clock: Clock) -> None:
        self._client = client
        self._store = store
        self._clock = clock
        self._counts: dict[str, tuple[float | None, float | None]] = {}

    async def collect(self, tick: float) -> bool:
        """One round; False when the Automation API could not be read."""
        listing = await retried_or_skipped(
            self._client.automations, what="Automation API metrics", clock=self._clock
        )
        if listing is None:
            return False
        samples = {}
        for automation in listing.automations:
            status = automation.mqtt.status
            counts = (
                (status.triggers_count, status.errors_count) if status is not None else (None, None)
            )
            before = self._counts.get(automation.automation_name)
            self._counts[automation.automation_name] = counts
            if before is not None:  # a delta needs two readings
                samples[automation.automation_name] = {
                    "triggers_count": counter_delta(before[0], counts[0]),
                    "errors_count": counter_delta(before[1], counts[1]),
                }
        if samples:
            await self._store.record_samples(AUTOMATION, int(tick), samples)
        return True
