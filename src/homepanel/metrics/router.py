"""`/api/metrics/...`: the history the collectors keep, per server, guest, automation, device.

`period` picks the resolution: 1h raw samples, 6h and 24h one-minute averages, 7d five-minute,
30d thirty-minute, 1y hourly. Points come oldest first, up to the last closed bucket.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from homepanel.automations.schemas import NAME_PATTERN
from homepanel.core.deps import API_DEPENDENCIES, SettingsDep
from homepanel.core.errors import ErrorResponse, NotConfigured, NotFound
from homepanel.metrics.schemas import (
    AutomationMetrics,
    DeviceMetrics,
    Period,
    ServerMetrics,
    VmMetrics,
    points,
)
from homepanel.store.metrics import AUTOMATION, PERIODS, SERVER, VM, Kind, MetricsStore

router = APIRouter(
    prefix="/api/metrics",
    tags=["metrics"],
    dependencies=API_DEPENDENCIES,
    responses={code: {"model": ErrorResponse} for code in (401, 404, 422, 503)},
)


class History:
    """What every metrics route needs: the store, the clock, and the series lookup."""

    def __init__(self, request: Request, settings: SettingsDep) -> None:
        if not settings.metrics_enabled:
            raise NotConfigured("Metrics history is off: METRICS_ENABLED=false")
        self.store: MetricsStore = request.app.state.metrics
        self.now = request.app.state.clock.time()
        self.settings = settings

    async def series(self, kind: str, name: str) -> int:
        series_id = await self.store.known(kind, name)
        if series_id is None:
            raise NotFound(f"No metrics recorded for {kind} {name!r}", error_code="NO_METRICS")
        return series_id

    async def points(self, kind: Kind, name: str, period: str, raw_interval: int) -> dict:
        series_id = await self.series(kind.name, name)
        tier, rows = await self.store.history(kind, series_id, period, self.now)
        return {"period": period, "interval": tier or raw_interval, "data": points(rows)}


HistoryDep = Annotated[History, Depends()]


@router.get("/server/{server_id}")
async def server_metrics(
    history: HistoryDep, server_id: str, period: Period = "1h"
) -> ServerMetrics:
    interval = history.settings.metrics_interval_servers
    body = await history.points(SERVER, server_id, period, interval)
    return ServerMetrics(server_id=server_id, **body)


@router.get("/vm/{server_id}/{vmid}")
async def vm_metrics(
    history: HistoryDep,
    server_id: str,
    vmid: Annotated[int, Path(ge=100, le=999_999_999)],
    period: Period = "1h",
) -> VmMetrics:
    interval = history.settings.metrics_interval_vms
    body = await history.points(VM, f"{server_id}/{vmid}", period, interval)
    return VmMetrics(server_id=server_id, vmid=vmid, **body)


@router.get("/automation/{name:path}")
async def automation_metrics(
    history: HistoryDep,
    name: Annotated[str, Path(pattern=NAME_PATTERN)],
    period: Period = "1h",
) -> AutomationMetrics:
    interval = history.settings.metrics_interval_automations
    body = await history.points(AUTOMATION, name, period, interval)
    return AutomationMetrics(automation_name=name, **body)


@router.get("/device/{topic:path}")
async def device_metrics(
    history: HistoryDep,
    topic: Annotated[str, Path(max_length=65535, pattern=r"^[^\x00-\x1f#+]+$")],
    period: Period = "1h",
) -> DeviceMetrics:
    """The device's states, each stored when it changed (timestamps in ms precision)."""
    series_id = await history.series("device", topic)
    since = history.now - PERIODS[period][1]
    states = await history.store.device_states(series_id, since)
    data = [{"timestamp": ts_ms / 1000, "state": state} for ts_ms, state in states]
    return DeviceMetrics(topic=topic, period=period, data=data)
