"""The metrics API's shapes, as the spec has them (plus CPU min/max per bucket).

The routes send their points as JSON built once per point (points.py), so the models here
describe the answers (OpenAPI) rather than build them; `point` is the one place that decides
how a stored row looks in the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, JsonValue
from pydantic_core import to_json

Period = Literal["1h", "6h", "24h", "7d", "30d", "1y"]
_BYTES = ("ram_used", "ram_total")


def point(columns: Sequence[str], row: Sequence[Any]) -> bytes:
    """A stored row (ts, *columns) as an API point: bytes as whole numbers, the rest rounded
    to 2 places."""
    fields: dict[str, Any] = {"timestamp": row[0]}
    for name, value in zip(columns, row[1:], strict=True):
        if value is None:
            fields[name] = None
        elif name in _BYTES:
            fields[name] = round(value)
        else:
            fields[name] = round(value, 2)
    return to_json(fields)


def device_point(ts_ms: int, state: str) -> bytes:
    """A stored device state (JSON text, spliced in as it is) as an API point."""
    return b'{"timestamp":%b,"state":%b}' % (to_json(ts_ms / 1000), state.encode())


class _Series(BaseModel):
    period: Period
    interval: int = Field(description="seconds between points")


class _UsagePoint(BaseModel):
    timestamp: int
    cpu_percent: float | None
    cpu_min: float | None = Field(description="lowest CPU % within the point's bucket")
    cpu_max: float | None = Field(description="highest CPU % within the point's bucket")
    ram_used: int | None
    ram_total: int | None
    net_rx: float | None = Field(description="bytes per second")
    net_tx: float | None
    disk_read: float | None = Field(description="bytes per second")
    disk_write: float | None


class ServerPoint(_UsagePoint):
    ram_percent: float | None
    disk_read: float | None = Field(description="always null: Proxmox has no node disk I/O")


class ServerMetrics(_Series):
    server_id: str
    data: list[ServerPoint]


class VmPoint(_UsagePoint):
    pass


class VmMetrics(_Series):
    server_id: str
    vmid: int
    data: list[VmPoint]


class AutomationPoint(BaseModel):
    timestamp: int
    triggers_count: float | None = Field(description="triggers within the point's interval")
    errors_count: float | None


class AutomationMetrics(_Series):
    automation_name: str
    data: list[AutomationPoint]


class DevicePoint(BaseModel):
    timestamp: float = Field(description="seconds, with milliseconds")
    state: JsonValue


class DeviceMetrics(BaseModel):
    topic: str
    period: Period
    data: list[DevicePoint]
