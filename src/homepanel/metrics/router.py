"""`/api/metrics/...`: the history the collectors keep, per server, guest, automation, device.

`period` picks the resolution: 1h raw samples, 6h and 24h one-minute averages, 7d five-minute,
30d thirty-minute, 1y hourly. Points come oldest first, up to the last closed bucket. The
points arrive as JSON already (points.py); the models only document the answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic_core import to_json

from homepanel.automations.schemas import NAME_PATTERN
from homepanel.core.config import Settings
from homepanel.core.deps import API_DEPENDENCIES, SettingsDep
from homepanel.core.errors import ErrorResponse, NotConfigured, NotFound
from homepanel.metrics.points import EncodedHistory
from homepanel.metrics.schemas import (
    AutomationMetrics,
    DeviceMetrics,
    Period,
    ServerMetrics,
    VmMetrics,
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

    def __init__(self, request: Request, settings: Settings) -> None:
        self.store: MetricsStore = request.app.state.metrics
        self.encoded: EncodedHistory = request.app.state.encoded_history
        self.now = request.app.state.clock.time()
        self.settings = settings

    async def series(self, kind: str, name: str) -> int:
        series_id = await self.store.known(kind, name)
        if series_id is None:
            raise NotFound(f"No metrics recorded for {kind} {name!r}", error_code="NO_METRICS")
        return series_id

    async def answer(
        self, kind: Kind, name: str, period: str, raw_interval: int, **fields: Any
    ) -> Response:
        series_id = await self.series(kind.name, name)
        data = await self.encoded.points(kind, series_id, period, self.now)
        interval = PERIODS[period][0] or raw_interval
        return _json(fields | {"period": period, "interval": interval}, data)


def _json(fields: dict[str, Any], data: bytes) -> Response:
    """`fields` plus the encoded `data` points, as the JSON body of a 200 answer."""
    body = to_json(fields)[:-1] + b',"data":' + data + b"}"
    return Response(body, media_type="application/json")


async def get_history(request: Request, settings: SettingsDep) -> History:
    """A function, not `Depends(History)`: FastAPI runs a class's `__init__` in a worker
    thread, a hop on every request."""
    if not settings.metrics_enabled:
        raise NotConfigured("Metrics history is off: METRICS_ENABLED=false")
    return History(request, settings)


HistoryDep = Annotated[History, Depends(get_history)]


@router.get("/server/{server_id}", response_model=ServerMetrics)
async def server_metrics(history: HistoryDep, server_id: str, period: Period = "1h") -> Response:
    interval = history.settings.metrics_interval_servers
    return await history.answer(SERVER, server_id, period, interval, server_id=server_id)


@router.get("/vm/{server_id}/{vmid}", response_model=VmMetrics)
async def vm_metrics(
    history: HistoryDep,
    server_id: str,
    vmid: Annotated[int, Path(ge=100, le=999_999_999)],
    period: Period = "1h",
) -> Response:
    interval = history.settings.metrics_interval_vms
    name = f"{server_id}/{vmid}"
    return await history.answer(VM, name, period, interval, server_id=server_id, vmid=vmid)


@router.get("/automation/{name:path}", response_model=AutomationMetrics)
async def automation_metrics(
    history: HistoryDep,
    name: Annotated[str, Path(pattern=NAME_PATTERN)],
    period: Period = "1h",
) -> Response:
    interval = history.settings.metrics_interval_automations
    return await history.answer(AUTOMATION, name, period, interval, automation_name=name)


@router.get("/device/{topic:path}", response_model=DeviceMetrics)
async def device_metrics(
    history: HistoryDep,
    topic: Annotated[str, Path(max_length=65535, pattern=r"^[^\x00-\x1f#+]+$")],
    period: Period = "1h",
) -> Response:
    """The device's states, each stored when it changed (timestamps in ms precision)."""
    series_id = await history.series("device", topic)
    data = await history.encoded.device_states(series_id, period, history.now)
    return _json({"topic": topic, "period": period}, data)
