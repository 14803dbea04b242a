"""The metrics API's shapes, as the spec has them (plus CPU min/max per bucket).

The routes send their points as JSON built once per point (points.py), so the models here
describe the answers (OpenAPI) rather than build them. How a point of a server, guest or
automation looks is decided by `Kind.look` (the store builds it in SQL, and keeps it with
archived hourly rows); how a device state looks, by `store.schema.device_point`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, JsonValue

Period = Literal["1h", "6h", "24h", "7d", "30d", "1y"]


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
