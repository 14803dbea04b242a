"""What Proxmox sends (parsed leniently, quirks absorbed) and what we answer (the spec's shapes).

Upstream models coerce the quirks once, here: `loadavg` strings, `vmid` as a string on old LXC
lists, fractional or string `cpus`, `template: 1`. Anything that still does not fit is a broken
upstream (502), not a crash.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from homepanel.core.config import ProxmoxServer

GuestType = Literal["qemu", "lxc"]
# UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:  (pve-common PVE/UPID.pm)
UPID_PATTERN = (
    r"^UPID:[A-Za-z0-9-]{1,63}:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}"
    r":[A-Za-z0-9_-]{1,32}:[^:/\s]{0,64}:[^:/\s]{1,128}:$"
)


def _number(value: object) -> float:
    number = 0.0 if value is None or value == "" else float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):  # json.loads accepts NaN and Infinity; JSON output cannot
        raise ValueError("not a finite number")
    return number


def _whole(value: object) -> int:
    return round(_number(value))


Number = Annotated[float, BeforeValidator(_number)]
Whole = Annotated[int, BeforeValidator(_whole)]


def _percent(used: int, total: int) -> float:
    return round(used / total * 100, 1) if total > 0 else 0.0


def _compact(value: float) -> int | float:
    """`2.0` -> `2`: whole CPU counts stay integers in our JSON, fractional LXC limits do not."""
    return int(value) if value.is_integer() else value


class _Upstream(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PveCpuInfo(_Upstream):
    cpus: Whole = 0
    model: str = ""


class PveUsage(_Upstream):
    total: Whole = 0
    used: Whole = 0
    free: Whole = 0
    avail: Whole | None = None


class PveNodeStatus(_Upstream):
    uptime: Whole = 0
    cpu: Number = 0.0
    loadavg: list[Number] = Field(default_factory=list)
    cpuinfo: PveCpuInfo = Field(default_factory=PveCpuInfo)
    memory: PveUsage = Field(default_factory=PveUsage)
    swap: PveUsage = Field(default_factory=PveUsage)
    rootfs: PveUsage = Field(default_factory=PveUsage)
    pveversion: str = ""

    @property
    def version(self) -> str | None:
        """`pve-manager/8.3.2/3e76eec2` -> `8.3.2`, saving a call to /version."""
        parts = self.pveversion.split("/")
        return parts[1] if len(parts) > 1 else None


class PveGuest(_Upstream):
    """One item of `/nodes/{node}/qemu` or `/lxc`, or a `status/current` answer."""

    vmid: Whole
    name: str | None = None
    status: str = "unknown"
    uptime: Whole = 0
    cpu: Number = 0.0
    cpus: Number = 0.0
    mem: Whole = 0
    maxmem: Whole = 0
    disk: Whole = 0
    maxdisk: Whole = 0
    netin: Whole = 0
    netout: Whole = 0
    diskread: Whole = 0
    diskwrite: Whole = 0
    template: bool = False

    def display_name(self, guest_type: GuestType) -> str:
        # Proxmox's own fallbacks, so the panel shows what the Proxmox UI shows.
        return self.name or (f"VM {self.vmid}" if guest_type == "qemu" else f"CT{self.vmid}")


class PveResource(PveGuest):
    """A guest in `/cluster/resources?type=vm`: the lists' fields plus `type` and `node`,
    and real disk I/O counters for qemu guests too."""

    type: str
    node: str


class PveRrdPoint(_Upstream):
    """A row of `rrddata`: rates in bytes per second; a gap row has only `time`."""

    time: int
    netin: float | None = None
    netout: float | None = None


class PveTask(_Upstream):
    upid: str
    node: str
    type: str = ""
    id: str = ""
    user: str = ""
    status: str
    exitstatus: str | None = None
    starttime: Whole = 0


# --- our API -------------------------------------------------------------------------------


class ServerSummary(BaseModel):
    id: str
    name: str
    ip: str
    node: str
    online: bool
    version: str | None = None
    uptime: int | None = None
    cpu_count: int | None = None
    cpu_usage: float | None = None
    memory_total: int | None = None
    memory_used: int | None = None
    memory_percent: float | None = None

    @classmethod
    def offline(cls, server: ProxmoxServer) -> ServerSummary:
        return cls(id=server.id, name=server.name, ip=server.host, node=server.node, online=False)

    @classmethod
    def from_status(cls, server: ProxmoxServer, status: PveNodeStatus) -> ServerSummary:
        memory = status.memory
        return cls(
            id=server.id,
            name=server.name,
            ip=server.host,
            node=server.node,
            online=True,
            version=status.version,
            uptime=status.uptime,
            cpu_count=status.cpuinfo.cpus,
            cpu_usage=status.cpu,
            memory_total=memory.total,
            memory_used=memory.used,
            memory_percent=_percent(memory.used, memory.total),
        )


class ServerList(BaseModel):
    servers: list[ServerSummary]


class CpuStatus(BaseModel):
    count: int
    usage: float
    model: str


class Usage(BaseModel):
    total: int
    used: int
    free: int
    percent: float

    @classmethod
    def of(cls, total: int, used: int, free: int) -> Usage:
        return cls(total=total, used=used, free=free, percent=_percent(used, total))


class ServerStatus(BaseModel):
    server_id: str
    node: str
    status: Literal["online"]
    uptime: int
    loadavg: list[float]
    cpu: CpuStatus
    memory: Usage
    swap: Usage
    rootfs: Usage

    @classmethod
    def from_status(cls, server: ProxmoxServer, status: PveNodeStatus) -> ServerStatus:
        memory, rootfs = status.memory, status.rootfs
        return cls(
            server_id=server.id,
            node=server.node,
            status="online",
            uptime=status.uptime,
            loadavg=status.loadavg,
            cpu=CpuStatus(count=status.cpuinfo.cpus, usage=status.cpu, model=status.cpuinfo.model),
            # `free` changed meaning in PVE 8.4 (now raw MemFree); total - used is the same
            # "available" figure on every version.
            memory=Usage.of(memory.total, memory.used, max(memory.total - memory.used, 0)),
            swap=Usage.of(status.swap.total, status.swap.used, status.swap.free),
            # `avail` is what non-root can still write; `free` includes root-reserved blocks.
            rootfs=Usage.of(
                rootfs.total, rootfs.used, rootfs.avail if rootfs.avail is not None else rootfs.free
            ),
        )


class _GuestBase(BaseModel):
    """The fields a guest has in both the list and the detail view."""

    vmid: int
    type: GuestType
    name: str
    status: str
    uptime: int
    cpu: float
    mem: int
    maxmem: int
    disk: int
    maxdisk: int

    @staticmethod
    def _common(guest_type: GuestType, guest: PveGuest) -> dict[str, Any]:
        shared = {"vmid", "status", "uptime", "cpu", "mem", "maxmem", "disk", "maxdisk"}
        return guest.model_dump(include=shared) | {
            "type": guest_type,
            "name": guest.display_name(guest_type),
        }


class GuestSummary(_GuestBase):
    maxcpu: int | float
    template: bool = Field(description="A template cannot be started; Proxmox marks it so")

    @classmethod
    def of(cls, guest_type: GuestType, guest: PveGuest) -> GuestSummary:
        return cls(
            **cls._common(guest_type, guest),
            maxcpu=_compact(guest.cpus),
            template=guest.template,
        )


class GuestList(BaseModel):
    server_id: str
    total: int
    vms: int
    containers: int
    running: int
    stopped: int
    instances: list[GuestSummary]

    @classmethod
    def of(cls, server_id: str, guests: list[GuestSummary]) -> GuestList:
        return cls(
            server_id=server_id,
            total=len(guests),
            vms=sum(g.type == "qemu" for g in guests),
            containers=sum(g.type == "lxc" for g in guests),
            running=sum(g.status == "running" for g in guests),
            stopped=sum(g.status == "stopped" for g in guests),
            instances=guests,
        )


class GuestDetail(_GuestBase):
    node: str
    cpus: int | float
    netin: int
    netout: int
    diskread: int
    diskwrite: int

    @classmethod
    def of(cls, node: str, guest_type: GuestType, guest: PveGuest) -> GuestDetail:
        counters = guest.model_dump(include={"netin", "netout", "diskread", "diskwrite"})
        return cls(
            **cls._common(guest_type, guest), **counters, node=node, cpus=_compact(guest.cpus)
        )


class PowerAction(StrEnum):
    start = "start"
    stop = "stop"
    shutdown = "shutdown"
    restart = "restart"

    @property
    def proxmox_command(self) -> str:
        """Proxmox has no `restart` (501); `reboot` is the graceful shutdown + start."""
        return "reboot" if self is PowerAction.restart else self.value

    def message(self, vmid: int) -> str:
        verb = {
            PowerAction.start: "Запуск",
            PowerAction.stop: "Остановка",
            PowerAction.shutdown: "Выключение",
            PowerAction.restart: "Перезагрузка",
        }[self]
        return f"{verb} VM {vmid}"


class ActionResult(BaseModel):
    success: bool
    task: str = Field(description="The Proxmox task UPID; poll /tasks/{upid} for its outcome")
    message: str


class TaskStatus(BaseModel):
    server_id: str
    upid: str
    node: str
    type: str
    id: str
    user: str
    status: str = Field(description="running, or stopped once the task ended")
    exitstatus: str | None
    starttime: int
    success: bool | None = Field(description="null while running; true when it ended OK")

    @classmethod
    def of(cls, server_id: str, task: PveTask) -> TaskStatus:
        success = None
        if task.status == "stopped":
            exit_text = task.exitstatus or ""
            success = exit_text == "OK" or exit_text.startswith("WARNINGS")
        return cls(
            server_id=server_id,
            upid=task.upid,
            node=task.node,
            type=task.type,
            id=task.id,
            user=task.user,
            status=task.status,
            exitstatus=task.exitstatus,
            starttime=task.starttime,
            success=success,
        )
