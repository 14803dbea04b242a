"""A simulated standalone Proxmox VE host: pveproxy's wire format, quirks included.

The panel has to survive what real hosts send, so this fake reproduces it faithfully
(see shared/reference/upstream-behaviour.md, section 1): loadavg as strings, string LXC
vmids on old hosts, error text that lives only in the HTTP reason phrase, 3-second 401s,
power actions that "succeed" with a UPID and fail later inside the task, and so on.
Two generations are simulated: ``pve8`` (PVE 8.3) and ``pve9`` (PVE 9.0, newest behaviour).

aiohttp is used because it can send a custom reason phrase, which old PVE uses to carry
the error message. The shared fault knobs (`simulator.faults`) emulate a host that is down.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Any, Literal
from urllib.parse import unquote

from aiohttp import web

from homepanel.simulator.faults import SimulatedService

API = "/api2/json"
Flavor = Literal["pve8", "pve9"]
GuestType = Literal["qemu", "lxc"]

_JSON = "application/json;charset=UTF-8"
_MIB = 1024**2
_LXC_MAXSWAP = 512 * _MIB  # Proxmox's default container swap
_COMPRESS_ABOVE = 1024  # pveproxy gzips bodies larger than this when the client accepts it

# pve-common PVE::JSONSchema / PVE::Tools::upid_decode / pve-http-server extract_auth_value.
_INTEGER = re.compile(r"[+-]?\d+")
_VMID = re.compile(r"[1-9][0-9]{2,8}")
_UPID = re.compile(
    r"UPID:([a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):"
)
# The privileges the panel's checks involve; the configured token has them all.
PRIVILEGES = frozenset({"Sys.Audit", "VM.Audit", "VM.PowerMgmt"})
_PRIVILEGES = web.RequestKey("privileges", frozenset)
_AUTH_ID = web.RequestKey("auth_id", str)  # the calling token's id, user@realm!tokenid
# GET /access/permissions without `path` reports these paths plus every path with an ACL
# (PVE::RPCEnvironment::get_effective_permissions), leaving out those without privileges.
_DEFAULT_ACL_PATHS = (
    "/",
    "/access",
    "/access/groups",
    "/nodes",
    "/pool",
    "/sdn",
    "/storage",
    "/vms",
)
# PVE::AccessControl's userid_or_token_regex: user@realm, optionally !tokenid.
_USERID = re.compile(r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+(?:![A-Za-z][A-Za-z0-9.\-_]+)?")
_TOKEN_HEADER = re.compile(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)")

_ACTIONS: dict[str, tuple[str, ...]] = {
    "qemu": ("start", "stop", "shutdown", "reboot", "reset"),
    "lxc": ("start", "stop", "shutdown", "reboot"),
}
_TASK_PREFIX = {"qemu": "qm", "lxc": "vz"}
_CONFIG_DIR = {"qemu": "qemu-server", "lxc": "lxc"}

# Node RRD layouts (section 1.10): timeframe -> (step in seconds, rows returned).
_RRD_PVE8 = {
    "hour": (60, 70),
    "day": (1800, 70),
    "week": (10800, 70),
    "month": (43200, 70),
    "year": (604800, 70),
}
_RRD_PVE9 = {
    "hour": (60, 60),
    "day": (60, 1440),
    "week": (1800, 336),
    "month": (1800, 1440),
    "year": (21600, 1440),
    "decade": (604800, 570),
}
_RRD_CF = ("AVERAGE", "MAX")
_RRD_SAMPLES = 4  # samples consolidated into one row; enough for AVERAGE and MAX to differ
_RESOURCE_TYPES = ("vm", "storage", "node", "sdn")

_CPU_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi "
    "mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon "
    "pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni "
    "pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 sdbg fma cx16 xtpr pdcm sse4_1 sse4_2 "
    "x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm "
    "3dnowprefetch cpuid_fault epb invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced "
    "tpr_shadow flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms "
    "invpcid rdseed adx smap clflushopt clwb intel_pt sha_ni xsaveopt xsavec xgetbv1 xsaves "
    "split_lock_detect avx_vnni dtherm ida arat pln pts hwp hwp_notify hwp_act_window "
    "hwp_epp hwp_pkg_req hfi umip pku ospke waitpkg gfni vaes vpclmulqdq rdpid movdiri "
    "movdir64b fsrm md_clear serialize arch_lbr ibt flush_l1d arch_capabilities"
)


@dataclass(frozen=True)
class _Release:
    """What differs between the two simulated Proxmox generations."""

    release: str
    version: str
    repoid: str
    kernel: str
    kernel_build: str
    qemu: str
    secureboot: int
    auth_failure_reason: str  # pve-manager >= 9.1.5 hides the detail behind one phrase
    message_in_body: bool  # libpve-http-server-perl >= 5.2.0 repeats the error in JSON
    mem_available: bool  # PVE 8.4+: used = total - MemAvailable, free = raw MemFree
    pressure: bool  # PVE 9 adds PSI pressure* fields to guest lists
    list_disk_io: bool  # PVE 8 lists qemu diskread/diskwrite as 0, PVE 9 leaves them out
    rrd: dict[str, tuple[int, int]]  # rrddata timeframe -> (step, rows)
    rrd_v9: bool  # pve-*-9.0 RRDs: more fields, trailing gap row popped, memhost in resources


_RELEASES: dict[str, _Release] = {
    "pve8": _Release(
        release="8.3",
        version="8.3.2",
        repoid="3e76eec21c4a14a7",
        kernel="6.8.12-5-pve",
        kernel_build="#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-5 (2024-12-03T10:26Z)",
        qemu="9.0.2",
        secureboot=0,
        auth_failure_reason="invalid token value!",
        message_in_body=False,
        mem_available=False,
        pressure=False,
        list_disk_io=True,
        rrd=_RRD_PVE8,
        rrd_v9=False,
    ),
    "pve9": _Release(
        release="9.0",
        version="9.0.6",
        repoid="49c767b70aeb6648",
        kernel="6.14.8-2-pve",
        kernel_build="#1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2 (2025-07-22T10:04Z)",
        qemu="10.0.2",
        secureboot=1,
        auth_failure_reason="Authentication failed!",
        message_in_body=True,
        mem_available=True,
        pressure=True,
        list_disk_io=False,
        rrd=_RRD_PVE9,
        rrd_v9=True,
    ),
}


@dataclass
class Guest:
    """One VM or container as configured on the host, plus the simulator's runtime state."""

    vmid: int
    type: GuestType
    name: str
    running: bool
    cpus: float  # qemu: whole vCPUs; lxc may be fractional, e.g. 1.5
    maxmem: int
    maxdisk: int
    template: bool = False
    tags: str | None = None  # ";"-separated, like Proxmox
    booted_at: float = field(default=0.0, compare=False)  # wall-clock start of the current run
    pid: int = field(default=0, compare=False)


@dataclass(frozen=True)
class _Profile:
    """A stable appetite for one guest (or the host), drawn once from the seed."""

    cpu: float  # typical CPU share
    mem: float  # typical memory share
    disk: float  # share of the root disk in use
    netin: int  # bytes per second while running
    netout: int
    diskread: int
    diskwrite: int
    phase: float

    @classmethod
    def draw(cls, rng: random.Random) -> _Profile:
        return cls(
            cpu=rng.uniform(0.005, 0.3),
            mem=rng.uniform(0.2, 0.85),
            disk=rng.uniform(0.1, 0.7),
            netin=rng.randint(1_000, 400_000),
            netout=rng.randint(500, 200_000),
            diskread=rng.randint(1_000, 300_000),
            diskwrite=rng.randint(5_000, 900_000),
            phase=rng.uniform(0, math.tau),
        )

    def cpu_at(self, now: float) -> float:
        return round(self.cpu * (1 + 0.5 * _wave(now, self.phase)), 6)

    def mem_share_at(self, now: float) -> float:
        return self.mem + 0.02 * _wave(now, self.phase + 1)


@dataclass
class _Task:
    """A forked worker: runs for ``task_duration`` and then records its exit status."""

    upid: str
    kind: str
    action: str
    vmid: int
    exitstatus: str | None = None  # None while running; "OK" or the error text once stopped
    timer: asyncio.TimerHandle | None = None


class _ApiError(Exception):
    """An error as a Proxmox API handler raises it: status, Perl message, parameter errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


@functools.cache
def _guest_profile(seed: int, vmid: int) -> _Profile:
    """Each guest keeps the same appetite across restarts and across hosts built from a seed."""
    return _Profile.draw(random.Random(f"{seed}:{vmid}"))


def _wave(now: float, phase: float) -> float:
    """Smooth, deterministic noise in [-1, 1], constant within a second like pvestatd's samples."""
    t = math.floor(now)
    slow = math.sin(t / 23 + phase)
    medium = math.sin(t / 7 + 2 * phase)
    fast = math.sin(t / 3 + 3 * phase)
    return (slow + 0.5 * medium + 0.25 * fast) / 1.75


def _number(value: float) -> int | float:
    """Perl prints 2.0 as 2: keep whole numbers integral in JSON."""
    return int(value) if float(value).is_integer() else value


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _param_error(**errors: str) -> _ApiError:
    return _ApiError(400, "Parameter verification failed.\n", errors)


def _enum_error(value: str, choices: Iterable[str]) -> str:
    return f"value '{value}' does not have a value in the enumeration '{', '.join(choices)}'"


def _query(
    request: web.Request,
    enums: dict[str, Iterable[str] | re.Pattern[str] | None],
    required: Iterable[str] = (),
) -> dict[str, str]:
    """Query parameters checked like PVE::JSONSchema: enums, patterns, required ones, no extras.

    A parameter's choices are an enumeration, a pattern the whole value must match, or None
    for any string. Every method says ``additionalProperties => 0``, so an unknown parameter
    is a 400 too, and all problems are reported together in ``errors``.
    """
    errors: dict[str, str] = {}
    for name in request.query:
        if name not in enums:
            errors[name] = (
                "property is not defined in schema and the schema does not allow "
                "additional properties"
            )
    for name, choices in enums.items():
        value = request.query.get(name)
        if value is None:
            if name in required:
                errors[name] = "property is missing and it is not optional"
        elif isinstance(choices, re.Pattern):
            if not choices.fullmatch(value):
                errors[name] = "value does not match the regex pattern"
        elif choices is not None and value not in choices:
            errors[name] = _enum_error(value, choices)
    if errors:
        raise _param_error(**errors)
    return {name: request.query[name] for name in enums if name in request.query}


def _parse_vmid(raw: str) -> int:
    """Validate a path vmid the way PVE::JSONSchema does (type check first, then format)."""
    if not _INTEGER.fullmatch(raw):
        raise _param_error(vmid=f"type check ('integer') failed - got '{raw}'")
    if not _VMID.fullmatch(raw):
        raise _param_error(vmid="invalid format - value does not look like a valid VM ID\n")
    return int(raw)


def _not_implemented(request: web.Request) -> _ApiError:
    path = request.path.removeprefix(API)
    return _ApiError(501, f"Method '{request.method} {path}' not implemented")


def _config_missing(node: str, kind: str, vmid: int) -> str:
    return f"Configuration file 'nodes/{node}/{_CONFIG_DIR[kind]}/{vmid}.conf' does not exist"


def _pressure(profile: _Profile, as_text: bool) -> dict[str, Any]:
    """PSI averages; LXC reports the raw regex captures (strings), qemu numifies them."""
    values = {
        "pressurecpusome": profile.cpu,
        "pressurecpufull": 0.0,
        "pressureiosome": profile.disk / 10,
        "pressureiofull": profile.disk / 20,
        "pressurememorysome": 0.0,
        "pressurememoryfull": 0.0,
    }
    return {key: f"{value:.2f}" if as_text else round(value, 2) for key, value in values.items()}


def _split_token(value: str) -> tuple[str, str]:
    """``user@realm!tokenid=secret`` -> (token id, secret), split at the LAST '=' like PVE."""
    token_id, _, secret = value.rpartition("=")
    return token_id, secret


def _gzip_if_large(request: web.Request, response: web.Response) -> web.Response:
    """pveproxy gzips (never deflates) bodies over 1 KiB for clients that accept gzip."""
    body = response.body
    accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    if accepts_gzip and isinstance(body, bytes) and len(body) > _COMPRESS_ABOVE:
        response.enable_compression(web.ContentCoding.gzip)
    return response


class ProxmoxHost(SimulatedService):
    """One simulated standalone PVE host. Serve :meth:`app` over HTTPS to use it."""

    def __init__(
        self,
        *,
        node: str,
        token: str,
        flavor: Flavor,
        guests: list[Guest],
        cpu_count: int,
        cpu_model: str,
        memory_total: int,
        swap_total: int,
        rootfs_total: int,
        cpu_cores: int | None = None,
        string_lxc_vmid: bool = False,
        task_duration: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.node = node
        self.token = token
        self.flavor = flavor
        self.cpu_count = cpu_count
        self.cpu_cores = cpu_cores or cpu_count
        self.cpu_model = cpu_model
        self.memory_total = memory_total
        self.swap_total = swap_total
        self.rootfs_total = rootfs_total
        self.string_lxc_vmid = string_lxc_vmid
        self.task_duration = task_duration
        self.seed = seed

        self._release = _RELEASES[flavor]
        self._token_id, self._secret = _split_token(token)  # tasks belong to the token id
        self._privileges = {_split_token(token): PRIVILEGES}
        self._rng = random.Random(seed)
        self._profile = _Profile.draw(random.Random(f"{seed}:host"))
        self._mhz = f"{self._rng.uniform(800, 4400):.3f}"
        now = time.time()
        self._booted_at = now - self._rng.randint(86_400, 30 * 86_400)
        self._tasks: dict[str, _Task] = {}
        self.guests: dict[int, Guest] = {guest.vmid: replace(guest) for guest in guests}
        for guest in self.guests.values():
            if guest.running and not guest.booted_at:
                self._boot(guest, self._rng.uniform(self._booted_at + 60, now - 60))
        self._initial = {vmid: replace(guest) for vmid, guest in self.guests.items()}

    # -- lifecycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this host's API."""
        app = self.new_app(self._gatekeeper)
        guest = f"{API}/nodes/{{node}}/{{kind:qemu|lxc}}"
        app.router.add_get(f"{API}/version", self._get_version)
        app.router.add_get(f"{API}/access/permissions", self._get_permissions)
        app.router.add_get(f"{API}/nodes/{{node}}/status", self._get_node_status)
        app.router.add_get(f"{API}/nodes/{{node}}/rrddata", self._get_node_rrddata)
        app.router.add_get(f"{API}/cluster/resources", self._get_cluster_resources)
        app.router.add_get(guest, self._get_guest_list)
        app.router.add_get(f"{guest}/{{vmid}}/status/current", self._get_guest_status)
        app.router.add_post(f"{guest}/{{vmid}}/status/{{action}}", self._post_power_action)
        app.router.add_get(f"{API}/nodes/{{node}}/tasks/{{upid}}/status", self._get_task_status)
        return app

    def add_token(self, token: str, privileges: Iterable[str]) -> None:
        """Another API token, granted only `privileges` (a privilege-separated token, say)."""
        self._privileges[_split_token(token)] = frozenset(privileges)

    def reset(self) -> None:
        """Healthy again: no faults, no request history, no tasks, guests as initially given."""
        self._privileges = {_split_token(self.token): PRIVILEGES}
        super().reset()
        for task in self._tasks.values():
            if task.timer is not None:
                task.timer.cancel()
        self._tasks.clear()
        self.guests.clear()
        self.guests.update({vmid: replace(guest) for vmid, guest in self._initial.items()})

    # -- request pipeline ----------------------------------------------------------------

    @web.middleware
    async def _gatekeeper(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """After the shared fault knobs: pveproxy's token check and error shaping."""
        caller = self._caller(request)
        if isinstance(caller, str):
            await asyncio.sleep(self.faults.auth_delay)
            return self._respond(401, b"", reason=caller, close=True)
        request[_AUTH_ID], request[_PRIVILEGES] = caller
        try:
            response = await handler(request)
        except _ApiError as error:
            return self._error_response(error)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return self._error_response(_not_implemented(request))
        return _gzip_if_large(request, response)

    def _caller(self, request: web.Request) -> tuple[str, frozenset[str]] | str:
        """The token's id and privileges, or the reason of pveproxy's (delayed, empty) 401."""
        match = _TOKEN_HEADER.search(request.headers.get("Authorization", ""))
        if match is None:
            return "No ticket"
        token = _split_token(unquote(match.group(1)))
        privileges = self._privileges.get(token)
        if privileges is None:
            return self._release.auth_failure_reason
        return token[0], privileges

    @staticmethod
    def _require(request: web.Request, privilege: str, path: str) -> None:
        if privilege not in request[_PRIVILEGES]:
            raise _ApiError(403, f"Permission check failed ({path}, {privilege})")

    def _respond(
        self, status: int, body: bytes, *, reason: str | None = None, close: bool = False
    ) -> web.Response:
        """A response with pveproxy's headers; errors also close the connection like it does."""
        headers = {
            "Server": "pve-api-daemon/3.0",
            "Cache-Control": "max-age=0",
            "Pragma": "no-cache",
            "Expires": formatdate(usegmt=True),
        }
        if body:
            headers["Content-Type"] = _JSON
        response = web.Response(status=status, reason=reason, body=body, headers=headers)
        if close:
            response.force_close()
        return response

    def _ok(self, data: Any) -> web.Response:
        return self._respond(200, _json({"data": data}))

    def _error_response(self, error: _ApiError) -> web.Response:
        """Old PVE: message only in the reason phrase; new PVE: also in the JSON body."""
        payload: dict[str, Any] = {"data": None}
        if error.errors:
            payload["errors"] = error.errors
        if self._release.message_in_body:
            payload["message"] = error.message
        reason = error.message.split("\n", 1)[0]
        return self._respond(error.status, _json(payload), reason=reason, close=True)

    def _check_node(self, request: web.Request) -> None:
        """A standalone host proxies other node names to a DNS lookup, which fails."""
        node = request.match_info["node"]
        if node != self.node:
            raise _ApiError(
                500,
                f"hostname lookup '{node}' failed - failed to get address info for: "
                f"{node}: Name or service not known\n",
            )

    # -- handlers ------------------------------------------------------------------------

    async def _get_version(self, request: web.Request) -> web.Response:
        release = self._release
        return self._ok(
            {"release": release.release, "repoid": release.repoid, "version": release.version}
        )

    async def _get_permissions(self, request: web.Request) -> web.Response:
        """GET /access/permissions: `{path: {privilege: propagate}}` for the caller or `userid`.

        Each token here holds its privileges through one ACL on `/` with propagation, so every
        reported path carries all of them; a token without any (privilege separation and no
        ACL) gets `{}`. Asking about someone else needs Sys.Audit on /access, and an unknown
        id simply has no privileges. With `path`, that one path is reported, even when empty.
        """
        params = _query(request, {"userid": _USERID, "path": None})
        caller = request[_AUTH_ID]
        userid = params.get("userid", caller)
        if userid != caller:
            self._require(request, "Sys.Audit", "/access")
        privileges = next(
            (privs for (token_id, _), privs in self._privileges.items() if token_id == userid),
            frozenset(),
        )
        granted = {privilege: 1 for privilege in sorted(privileges)}
        if "path" in params:
            return self._ok({params["path"]: granted})
        return self._ok({path: granted for path in _DEFAULT_ACL_PATHS if granted})

    async def _get_node_status(self, request: web.Request) -> web.Response:
        self._check_node(request)
        self._require(request, "Sys.Audit", f"/nodes/{self.node}")
        return self._ok(self._node_status(time.time()))

    async def _get_node_rrddata(self, request: web.Request) -> web.Response:
        self._check_node(request)
        self._require(request, "Sys.Audit", f"/nodes/{self.node}")
        params = _query(
            request, {"timeframe": self._release.rrd, "cf": _RRD_CF}, required=["timeframe"]
        )
        rows = self._rrd_rows(params["timeframe"], params.get("cf", "AVERAGE"), time.time())
        return self._ok(rows)

    async def _get_cluster_resources(self, request: web.Request) -> web.Response:
        """Needs no privilege itself: entries are filtered (guests) or stripped (the node).

        Storage and SDN entries are left out: this host has none worth showing, and a client
        that forgets to filter by ``type`` is still caught by the node entry.
        """
        kind = _query(request, {"type": _RESOURCE_TYPES}).get("type")
        now = time.time()
        privileges = request[_PRIVILEGES]
        resources: list[dict[str, Any]] = []
        if kind in (None, "vm") and "VM.Audit" in privileges:
            guests = sorted(self.guests.values(), key=lambda guest: guest.vmid)
            random.Random(self.seed).shuffle(guests)  # Perl hash order again
            resources += [self._vm_resource(guest, now) for guest in guests]
        if kind in (None, "node"):
            resources.append(self._node_resource(now, audit="Sys.Audit" in privileges))
        return self._ok(resources)

    async def _get_guest_list(self, request: web.Request) -> web.Response:
        self._check_node(request)
        kind = request.match_info["kind"]
        now = time.time()
        guests = sorted(self.guests.values(), key=lambda guest: guest.vmid)
        random.Random(self.seed).shuffle(guests)  # Perl hash order: clients must sort
        if "VM.Audit" not in request[_PRIVILEGES]:
            guests = []  # filtered, not refused: a bare privilege-separated token sees nothing
        return self._ok([self._list_item(guest, now) for guest in guests if guest.type == kind])

    async def _get_guest_status(self, request: web.Request) -> web.Response:
        self._check_node(request)
        kind = request.match_info["kind"]
        vmid = _parse_vmid(request.match_info["vmid"])
        self._require(request, "VM.Audit", f"/vms/{vmid}")
        guest = self._guest(kind, vmid)
        if guest is None:  # Perl's die message keeps its newline
            raise _ApiError(500, _config_missing(self.node, kind, vmid) + "\n")
        now = time.time()
        if kind == "qemu":
            return self._ok(self._qemu_current(guest, now))
        return self._ok(self._lxc_item(guest, now) | {"ha": {"managed": 0}})

    async def _post_power_action(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        action = request.match_info["action"]
        if action not in _ACTIONS[kind]:
            raise _not_implemented(request)
        self._check_node(request)
        vmid = _parse_vmid(request.match_info["vmid"])
        self._require(request, "VM.PowerMgmt", f"/vms/{vmid}")
        self._refuse_synchronously(kind, action, vmid)
        return self._ok(self._fork_worker(kind, action, vmid))

    async def _get_task_status(self, request: web.Request) -> web.Response:
        self._check_node(request)
        upid = request.match_info["upid"]
        match = _UPID.fullmatch(upid)
        if match is None:
            raise _param_error(upid="unable to parse worker upid")
        task = self._tasks.get(upid)
        if task is None:
            raise _param_error(upid="no such task")
        node, pid, pstart, starttime, task_type, task_id, user = match.groups()
        status: dict[str, Any] = {
            "upid": upid,
            "node": node,
            "pid": int(pid, 16),
            "pstart": int(pstart, 16),
            "starttime": int(starttime, 16),
            "type": task_type,
            "id": task_id,
            "user": user,
            "status": "running" if task.exitstatus is None else "stopped",
        }
        if "!" in user:
            status["user"], status["tokenid"] = user.split("!", 1)
        if task.exitstatus is not None:
            status["exitstatus"] = task.exitstatus
        return self._ok(status)

    # -- power actions -------------------------------------------------------------------

    def _guest(self, kind: str, vmid: int) -> Guest | None:
        """The guest if its config exists under this type's directory (a wrong type = missing)."""
        guest = self.guests.get(vmid)
        return guest if guest is not None and guest.type == kind else None

    def _refuse_synchronously(self, kind: str, action: str, vmid: int) -> None:
        """The checks Proxmox makes before forking a worker (section 1.9, the 500 rows)."""
        guest = self._guest(kind, vmid)
        running = guest is not None and guest.running
        if kind == "qemu":
            if action not in ("reboot", "reset"):
                return  # start/stop/shutdown fail, if at all, inside the task
            if guest is None:
                raise _ApiError(
                    500, f"unable to find configuration file for VM {vmid} on node '{self.node}'\n"
                )
            if not running:
                raise _ApiError(500, f"VM {vmid} not running\n")
        elif action == "start" and running:
            raise _ApiError(500, f"CT {vmid} already running\n")
        elif action in ("stop", "shutdown") and not running:
            raise _ApiError(500, f"CT {vmid} not running\n")
        elif action == "reboot" and not running:
            raise _ApiError(500, f"VM {vmid} not running\n")  # sic: pve-container says "VM"

    def _fork_worker(self, kind: str, action: str, vmid: int) -> str:
        """Start a task that finishes ``task_duration`` later; returns its UPID."""
        now = time.time()
        pid = self._rng.randrange(0x1000, 0x3FFFFF)
        pstart = int((now - self._booted_at) * 100)  # clock ticks since host boot
        task_type = _TASK_PREFIX[kind] + action
        upid = (
            f"UPID:{self.node}:{pid:08X}:{pstart:08X}:{int(now):08X}:"
            f"{task_type}:{vmid}:{self._token_id}:"
        )
        task = _Task(upid=upid, kind=kind, action=action, vmid=vmid)
        task.timer = asyncio.get_running_loop().call_later(
            self.task_duration, self._finish_task, task
        )
        self._tasks[upid] = task
        return upid

    def _finish_task(self, task: _Task) -> None:
        task.timer = None
        task.exitstatus = self._run_worker(task.kind, task.action, task.vmid) or "OK"

    def _run_worker(self, kind: str, action: str, vmid: int) -> str | None:
        """What the worker does when it completes: change state, or return its error text."""
        guest = self._guest(kind, vmid)
        if guest is None:
            return _config_missing(self.node, kind, vmid)
        label = "VM" if kind == "qemu" else "CT"
        if action == "start":
            if guest.template:
                return f"you can't start a {'vm' if kind == 'qemu' else 'CT'} if it's a template"
            if guest.running:
                return f"{label} {vmid} already running"
            self._boot(guest, time.time())
        elif action in ("stop", "shutdown"):
            guest.running = False
            guest.pid = 0
        elif action == "reboot":
            if not guest.running:
                return f"VM {vmid} not running"
            self._boot(guest, time.time())
        # "reset" keeps the same QEMU process, so pid and uptime carry on.
        return None

    def _boot(self, guest: Guest, at: float) -> None:
        guest.running = True
        guest.booted_at = at
        guest.pid = self._rng.randrange(1000, 4_000_000)

    # -- payloads ------------------------------------------------------------------------

    def _node_status(self, now: float) -> dict[str, Any]:
        """GET /nodes/{node}/status (section 1.5)."""
        release = self._release
        cpu = self._profile.cpu_at(now)
        load = cpu * self.cpu_count
        return {
            "uptime": int(now - self._booted_at),
            "idle": 0,
            "cpu": cpu,
            "wait": round(cpu * 0.04, 6),
            "loadavg": [f"{load:.2f}", f"{load * 0.95:.2f}", f"{load * 0.9:.2f}"],
            "cpuinfo": self._cpuinfo(),
            "memory": self._memory(now),
            "swap": self._swap(),
            "ksm": {"shared": 0},
            "rootfs": self._rootfs(),
            "pveversion": f"pve-manager/{release.version}/{release.repoid}",
            "kversion": f"Linux {release.kernel} {release.kernel_build}",
            "current-kernel": {
                "sysname": "Linux",
                "release": release.kernel,
                "version": release.kernel_build,
                "machine": "x86_64",
            },
            "boot-info": {"mode": "efi", "secureboot": release.secureboot},
        }

    def _cpuinfo(self) -> dict[str, Any]:
        amd = "AMD" in self.cpu_model
        return {
            "cpus": self.cpu_count,
            "cores": self.cpu_cores,
            "sockets": 1,
            "model": self.cpu_model,
            "mhz": self._mhz,
            "user_hz": 100,
            "hvm": "1",
            "vendor": "AuthenticAMD" if amd else "GenuineIntel",
            "family": "25" if amd else "6",
            "flags": _CPU_FLAGS,
        }

    def _memory(self, now: float) -> dict[str, int]:
        """PVE <= 8.3: used + free == total. PVE 8.4+/9: used = total - available, free small."""
        total = self.memory_total
        used = int(total * self._profile.mem_share_at(now))
        if not self._release.mem_available:
            return {"total": total, "used": used, "free": total - used}
        available = total - used
        return {"total": total, "used": used, "free": available // 5, "available": available}

    def _swap(self) -> dict[str, int]:
        used = int(self.swap_total * self._profile.mem / 3)
        return {"total": self.swap_total, "used": used, "free": self.swap_total - used}

    def _rootfs(self) -> dict[str, int]:
        """``avail`` excludes the blocks reserved for root, so it is below ``free``."""
        total = self.rootfs_total
        used = int(total * self._profile.disk)
        free = total - used
        return {"total": total, "used": used, "free": free, "avail": max(0, free - total // 20)}

    def _net_rates(self, now: float) -> tuple[float, float]:
        """The host NIC's bytes/s: its own appetite riding a wave, so traffic graphs move."""
        profile = self._profile
        netin = profile.netin * (1 + 0.6 * _wave(now, profile.phase + 2))
        netout = profile.netout * (1 + 0.6 * _wave(now, profile.phase + 3))
        return netin, netout

    def _rrd_rows(self, timeframe: str, cf: str, now: float) -> list[dict[str, Any]]:
        """GET /nodes/{node}/rrddata (section 1.10): oldest first, one row per step.

        Old PVE ends with the step in progress, which has no consolidated data yet: a row
        with only ``time``. PVE 9 pops that row, so its last row carries data.
        """
        step, count = self._release.rrd[timeframe]
        last = int(now // step * step)
        if self._release.rrd_v9:
            return [self._rrd_row(last - age * step, step, cf) for age in reversed(range(count))]
        rows = [self._rrd_row(last - age * step, step, cf) for age in reversed(range(1, count))]
        return [*rows, {"time": last}]

    def _rrd_row(self, at: int, step: int, cf: str) -> dict[str, Any]:
        """One RRD slot, (at - step, at], consolidated from samples taken inside it."""
        samples = [self._rrd_sample(at - step * k / _RRD_SAMPLES) for k in range(_RRD_SAMPLES)]
        combine = max if cf == "MAX" else statistics.fmean
        row: dict[str, Any] = {"time": at}
        for key in samples[0]:
            value = combine(sample[key] for sample in samples)
            row[key] = _number(float(f"{value:.15g}"))  # Perl prints 15 significant digits
        return row

    def _rrd_sample(self, at: float) -> dict[str, float]:
        """What pvestatd feeds the node RRD: the same numbers /status reports at that moment."""
        cpu = self._profile.cpu_at(at)
        memory = self._memory(at)
        swap, rootfs = self._swap(), self._rootfs()
        netin, netout = self._net_rates(at)
        sample: dict[str, float] = {
            "loadavg": cpu * self.cpu_count,
            "maxcpu": self.cpu_count,
            "cpu": cpu,
            "iowait": cpu * 0.04,
            "memtotal": memory["total"],
            "memused": memory["used"],
            "swaptotal": swap["total"],
            "swapused": swap["used"],
            "roottotal": rootfs["total"],
            "rootused": rootfs["used"],
            "netin": netin,
            "netout": netout,
        }
        if self._release.rrd_v9:
            sample |= {
                "memavailable": memory["total"] - memory["used"],
                "arcsize": 0,  # no ZFS on the simulated root
                "pressurecpusome": cpu * 10,
                "pressureiosome": cpu * 0.4,
                "pressureiofull": cpu * 0.2,
                "pressurememorysome": 0,
                "pressurememoryfull": 0,
            }
        return sample

    def _vm_resource(self, guest: Guest, now: float) -> dict[str, Any]:
        """A ``type=vm`` entry of GET /cluster/resources (PVE::API2Tools::extract_vm_stats).

        Counters are the ones the lists and status/current report at the same moment, and
        qemu's diskread/diskwrite are real here (pvestatd polls in full mode). ``template``
        is always present, ``hastate`` only for HA-managed guests, which this host has none of.
        """
        usage = self._usage(guest, now)
        resource: dict[str, Any] = {
            "id": f"{guest.type}/{guest.vmid}",
            "vmid": guest.vmid,
            "node": self.node,
            "type": guest.type,
            "name": guest.name,
            "status": usage["status"],
            "template": int(guest.template),
            "uptime": usage["uptime"],
            "maxcpu": self._cpus(guest),
            "cpu": usage["cpu"],
            "maxmem": guest.maxmem,
            "mem": usage["mem"],
            "maxdisk": guest.maxdisk,
            "disk": self._disk_used(guest),
            "netin": usage["netin"],
            "netout": usage["netout"],
            **self._disk_io(guest, now),
        }
        if self._release.rrd_v9:
            resource["memhost"] = usage["mem"]
        if guest.tags:
            resource["tags"] = guest.tags
        return resource

    def _node_resource(self, now: float, *, audit: bool) -> dict[str, Any]:
        """The ``type=node`` entry; without Sys.Audit only who and whether online, no stats."""
        resource: dict[str, Any] = {
            "id": f"node/{self.node}",
            "node": self.node,
            "type": "node",
            "status": "online",
            "level": "",  # no subscription
            "cgroup-mode": 2,
        }
        if not audit:
            return resource
        memory, rootfs = self._memory(now), self._rootfs()
        return resource | {
            "uptime": int(now - self._booted_at),
            "cpu": self._profile.cpu_at(now),
            "maxcpu": self.cpu_count,
            "mem": memory["used"],
            "maxmem": memory["total"],
            "disk": rootfs["used"],
            "maxdisk": rootfs["total"],
        }

    @staticmethod
    def _cpus(guest: Guest) -> int | float:
        """qemu counts whole vCPUs; a container's limit may be fractional (1.5)."""
        return int(guest.cpus) if guest.type == "qemu" else _number(guest.cpus)

    def _disk_used(self, guest: Guest) -> int:
        """qemu has no idea what the guest uses (always 0); a running CT reports its rootfs."""
        if guest.type == "qemu" or not guest.running:
            return 0
        return int(guest.maxdisk * _guest_profile(self.seed, guest.vmid).disk)

    def _list_item(self, guest: Guest, now: float) -> dict[str, Any]:
        if guest.type == "qemu":
            return self._qemu_item(guest, now)
        return self._lxc_item(guest, now)

    def _usage(self, guest: Guest, now: float) -> dict[str, Any]:
        """The fields both guest types share; a stopped guest reports zeros and no pid."""
        if not guest.running:
            return {"status": "stopped", "uptime": 0, "cpu": 0, "mem": 0, "netin": 0, "netout": 0}
        profile = _guest_profile(self.seed, guest.vmid)
        alive = now - guest.booted_at
        return {
            "status": "running",
            "pid": guest.pid,
            "uptime": int(alive),
            "cpu": profile.cpu_at(now),
            "mem": int(guest.maxmem * profile.mem_share_at(now)),
            "netin": int(profile.netin * alive),
            "netout": int(profile.netout * alive),
        }

    def _disk_io(self, guest: Guest, now: float) -> dict[str, int]:
        if not guest.running:
            return {"diskread": 0, "diskwrite": 0}
        profile = _guest_profile(self.seed, guest.vmid)
        alive = now - guest.booted_at
        return {
            "diskread": int(profile.diskread * alive),
            "diskwrite": int(profile.diskwrite * alive),
        }

    def _optional(self, guest: Guest) -> dict[str, Any]:
        """``template`` and ``tags`` are only present when set."""
        extra: dict[str, Any] = {}
        if guest.template:
            extra["template"] = 1
        if guest.tags:
            extra["tags"] = guest.tags
        return extra

    def _qemu_item(self, guest: Guest, now: float) -> dict[str, Any]:
        """An entry of GET /nodes/{node}/qemu (section 1.6): int vmid, no type, disk 0."""
        item: dict[str, Any] = {
            "vmid": guest.vmid,
            "name": guest.name,
            **self._usage(guest, now),
            "cpus": self._cpus(guest),
            "maxmem": guest.maxmem,
            "disk": self._disk_used(guest),
            "maxdisk": guest.maxdisk,
        }
        if self._release.list_disk_io:
            item |= {"diskread": 0, "diskwrite": 0}
        if self._release.pressure and guest.running:
            item["memhost"] = item["mem"]
            item |= _pressure(_guest_profile(self.seed, guest.vmid), as_text=False)
        return item | self._optional(guest)

    def _lxc_item(self, guest: Guest, now: float) -> dict[str, Any]:
        """An entry of GET /nodes/{node}/lxc (section 1.7): type lxc, real disk usage."""
        profile = _guest_profile(self.seed, guest.vmid)
        item: dict[str, Any] = {
            "vmid": str(guest.vmid) if self.string_lxc_vmid else guest.vmid,
            "type": "lxc",
            "name": guest.name,
            **self._usage(guest, now),
            "cpus": self._cpus(guest),
            "maxmem": guest.maxmem,
            "swap": 0,
            "maxswap": _LXC_MAXSWAP,
            "disk": self._disk_used(guest),
            "maxdisk": guest.maxdisk,
            **self._disk_io(guest, now),
        }
        if self._release.pressure and guest.running:
            item |= _pressure(profile, as_text=True)
        return item | self._optional(guest)

    def _qemu_current(self, guest: Guest, now: float) -> dict[str, Any]:
        """GET .../qemu/{vmid}/status/current (section 1.8): the list entry in full mode."""
        status = self._qemu_item(guest, now) | self._disk_io(guest, now)
        status |= {"qmpstatus": status["status"], "ha": {"managed": 0}, "agent": 1}
        if not guest.running:
            return status
        read, written = status["diskread"], status["diskwrite"]
        machine = ".".join(self._release.qemu.split(".")[:2])
        return status | {
            "balloon": guest.maxmem,
            "freemem": guest.maxmem - status["mem"],
            "nics": {f"tap{guest.vmid}i0": {"netin": status["netin"], "netout": status["netout"]}},
            "blockstat": {
                "scsi0": {
                    "rd_bytes": read,
                    "wr_bytes": written,
                    "rd_operations": read // 8192,
                    "wr_operations": written // 16384,
                }
            },
            "running-machine": f"pc-i440fx-{machine}+pve0",
            "running-qemu": self._release.qemu,
            "proxmox-support": {"pbs-dirty-bitmap": True, "query-bitmap-info": True},
        }


def _demo_guests(
    specs: list[tuple[int, GuestType, str, bool, float, int, int, str | None]],
) -> list[Guest]:
    return [
        Guest(vmid, kind, name, running, cpus, mem_mib * _MIB, disk_gib * 1024 * _MIB, tags=tags)
        for vmid, kind, name, running, cpus, mem_mib, disk_gib, tags in specs
    ]


def demo_hosts(nas_token: str, smart_token: str) -> dict[str, ProxmoxHost]:
    """The spec's home lab: a PVE 8.3 NAS and a PVE 9 mini PC running the smart home.

    "nas" covers the old quirks (string LXC vmids, message only in the reason phrase),
    "smart-home" the new ones (MemAvailable semantics, PSI fields, message in the body).
    """
    nas_guests = _demo_guests(
        [
            (999, "qemu", "VPN-HUB", True, 2, 1024, 16, "infra;vpn"),
            (100, "lxc", "ubuntu", False, 2, 2048, 10, None),
            (101, "qemu", "win11", False, 4, 8192, 64, None),
            (102, "qemu", "truenas-scale", True, 4, 16384, 32, "storage"),
            (103, "lxc", "jellyfin", True, 4, 4096, 32, "media"),
            (104, "lxc", "nextcloud", True, 2, 4096, 64, "cloud"),
            (106, "lxc", "pihole", True, 1, 512, 8, "dns;infra"),
            (107, "lxc", "paperless-ngx", True, 2, 2048, 16, None),
            (108, "qemu", "docker-host", True, 6, 12288, 128, None),
            (109, "lxc", "gitea", False, 1.5, 1024, 16, "dev"),
            (110, "lxc", "pbs", False, 2, 2048, 32, "backup"),
        ]
    )
    nas_guests.append(
        Guest(9000, "qemu", "debian12-tmpl", False, 2, 2048 * _MIB, 3584 * _MIB, template=True)
    )
    smart_guests = _demo_guests(
        [
            (105, "lxc", "mqtt-api", True, 1, 512, 8, "home"),
            (200, "qemu", "homeassistant", True, 2, 4096, 32, "home;prod"),
            (201, "lxc", "mosquitto", True, 1, 256, 4, "home"),
            (202, "lxc", "zigbee2mqtt", True, 1, 512, 4, "home"),
            (203, "lxc", "node-red", True, 1.5, 1024, 8, None),
            (204, "lxc", "influxdb", True, 2, 2048, 16, "metrics"),
            (205, "lxc", "grafana", False, 1, 512, 4, "metrics"),
            (206, "qemu", "openwrt-test", False, 1, 256, 1, None),
            (207, "lxc", "esphome", True, 0.5, 1024, 8, None),
            (208, "lxc", "ai-hub", True, 2, 4096, 32, "ai"),
            (209, "qemu", "win-lab", False, 2, 4096, 64, None),
        ]
    )
    return {
        "nas": ProxmoxHost(
            node="nas",
            token=nas_token,
            flavor="pve8",
            guests=nas_guests,
            cpu_count=12,
            cpu_cores=6,
            cpu_model="12th Gen Intel(R) Core(TM) i5-12400",
            memory_total=66571993088,
            swap_total=8589930496,
            rootfs_total=100931985408,
            string_lxc_vmid=True,
            seed=1,
        ),
        "smart-home": ProxmoxHost(
            node="pve",
            token=smart_token,
            flavor="pve9",
            guests=smart_guests,
            cpu_count=4,
            cpu_model="Intel(R) N100",
            memory_total=16106127360,
            swap_total=0,
            rootfs_total=67317620736,
            seed=2,
        ),
    }
