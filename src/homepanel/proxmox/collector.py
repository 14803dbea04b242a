"""Collects Proxmox metrics: each server every `METRICS_INTERVAL_SERVERS`, its guests every
`METRICS_INTERVAL_VMS`.

A server cycle costs two requests (node status and RRD network rates), a guest cycle one
(`/cluster/resources`), whatever the number of guests. Servers are collected in parallel and
apart: one that is down is retried, then skipped, and never delays the others. Guest network
and disk figures are cumulative counters; they are stored as rates between two cycles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from homepanel.core.schedule import Clock, retried_or_skipped
from homepanel.proxmox.client import ProxmoxClient
from homepanel.proxmox.schemas import PveResource
from homepanel.store.metrics import SERVER, VM, MetricsStore, counter_delta

Sample = dict[str, float | None]


@dataclass(frozen=True, slots=True)
class _Counters:
    ts: float
    netin: float
    netout: float
    diskread: float
    diskwrite: float


def _rate(previous: float, current: float, seconds: float) -> float | None:
    delta = counter_delta(previous, current)
    return None if delta is None or seconds <= 0 else delta / seconds


class ProxmoxCollector:
    def __init__(self, clients: Iterable[ProxmoxClient], store: MetricsStore, clock: Clock):
        self._clients = list(clients)
        self._store = store
        self._clock = clock
        self._counters: dict[str, _Counters] = {}

    async def collect_servers(self, tick: float) -> bool:
        """One round; False when a server had to be skipped."""
        found = await asyncio.gather(*(self._server(client) for client in self._clients))
        samples = {client.server.id: s for client, s in zip(self._clients, found, strict=True) if s}
        if samples:
            await self._store.record_samples(SERVER, int(tick), samples)
        return len(samples) == len(self._clients)

    async def collect_guests(self, tick: float) -> bool:
        """One round; False when a server's guests had to be skipped."""
        found = await asyncio.gather(*(self._guests(client, tick) for client in self._clients))
        samples = {
            name: sample
            for per_server in found
            if per_server
            for name, sample in per_server.items()
        }
        if samples:
            await self._store.record_samples(VM, int(tick), samples)
        return all(per_server is not None for per_server in found)

    async def _server(self, client: ProxmoxClient) -> Sample | None:
        status, rates = await asyncio.gather(
            retried_or_skipped(
                client.node_status, what=f"{client.label} status", clock=self._clock
            ),
            retried_or_skipped(client.net_rates, what=f"{client.label} RRD", clock=self._clock),
        )
        if status is None:
            return None
        memory = status.memory
        return {
            "cpu_percent": round(status.cpu * 100, 2),
            "ram_used": memory.used,
            "ram_total": memory.total,
            "ram_percent": round(memory.used / memory.total * 100, 2) if memory.total else None,
            "disk_read": None,  # Proxmox has no node disk I/O figures
            "disk_write": None,
            "net_rx": rates[0] if rates else None,
            "net_tx": rates[1] if rates else None,
        }

    async def _guests(self, client: ProxmoxClient, tick: float) -> dict[str, Sample] | None:
        guests = await retried_or_skipped(
            client.guest_resources, what=f"{client.label} guests", clock=self._clock
        )
        if guests is None:
            return None
        samples = {}
        for guest in guests:
            name = f"{client.server.id}/{guest.vmid}"
            if guest.status != "running":
                self._counters.pop(name, None)  # a later start counts from zero again
                continue
            samples[name] = self._guest_sample(name, guest, tick)
        return samples

    def _guest_sample(self, name: str, guest: PveResource, tick: float) -> Sample:
        now = _Counters(tick, guest.netin, guest.netout, guest.diskread, guest.diskwrite)
        before = self._counters.get(name)
        self._counters[name] = now
        sample: Sample = {
            "cpu_percent": round(guest.cpu * 100, 2),
            "ram_used": guest.mem,
            "ram_total": guest.maxmem,
        }
        for column, field in (
            ("net_rx", "netin"),
            ("net_tx", "netout"),
            ("disk_read", "diskread"),
            ("disk_write", "diskwrite"),
        ):
            sample[column] = (
                _rate(getattr(before, field), getattr(now, field), now.ts - before.ts)
                if before
                else None
            )
        return sample
