"""The simulated Proxmox host speaks pveproxy's wire format over real HTTPS, quirks included."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx2
import pytest

from homepanel.simulator import proxmox
from homepanel.simulator.proxmox import Flavor, Guest, ProxmoxHost, demo_hosts
from homepanel.simulator.tls import TlsFiles, client_ssl_context, make_tls_files, server_ssl_context
from tests.simulator.serving import served

TOKEN = "root@pam!homepanel=3f6c2b1e-8d2a-4c1e-9b7a-0a1b2c3d4e5f"
AUTH = f"PVEAPIToken={TOKEN}"
GIB = 1024**3
UPID = re.compile(r"^UPID:[a-zA-Z0-9-]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:]+:[^:]*:[^:]+:$")
AUTH_DELAY = 0.05
NO_QEMU_12345 = "Configuration file 'nodes/nas/qemu-server/12345.conf' does not exist"
NO_LXC_12345 = "Configuration file 'nodes/nas/lxc/12345.conf' does not exist"
AUDITOR = "audit@pve!panel=7d3c1f00-5b1e-4a7e-9d41-0c2f7e8a9b10"
COUNTERS = ("netin", "netout", "diskread", "diskwrite")


class Sim(NamedTuple):
    host: ProxmoxHost
    client: httpx2.AsyncClient


def make_host(flavor: Flavor, *, string_lxc_vmid: bool = False) -> ProxmoxHost:
    guests = [
        Guest(999, "qemu", "VPN-HUB", True, 2, 1 * GIB, 16 * GIB, tags="infra;vpn"),
        Guest(101, "qemu", "win11", False, 4, 8 * GIB, 64 * GIB),
        Guest(9000, "qemu", "debian12-tmpl", False, 2, 2 * GIB, 3 * GIB, template=True),
        Guest(100, "lxc", "ubuntu", False, 2, 2 * GIB, 10 * GIB),
        Guest(105, "lxc", "mqtt-api", True, 1.5, GIB // 2, 8 * GIB, tags="home"),
    ]
    host = ProxmoxHost(
        node="nas",
        token=TOKEN,
        flavor=flavor,
        guests=guests,
        cpu_count=12,
        cpu_cores=6,
        cpu_model="12th Gen Intel(R) Core(TM) i5-12400",
        memory_total=66571993088,
        swap_total=8589930496,
        rootfs_total=100931985408,
        string_lxc_vmid=string_lxc_vmid,
        task_duration=0.1,
    )
    host.faults.auth_delay = AUTH_DELAY
    return host


@asynccontextmanager
async def simulated(host: ProxmoxHost, tls: TlsFiles) -> AsyncIterator[Sim]:
    """Serve the host over HTTPS, with a client that carries the API token."""
    async with (
        served(host.app(), server_ssl_context(tls)) as server,
        httpx2.AsyncClient(
            base_url=f"{server.url}/api2/json",
            headers={"Authorization": AUTH},
            verify=client_ssl_context(tls),
            timeout=5,
        ) as client,
    ):
        yield Sim(host, client)


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def pve8(tls: TlsFiles) -> AsyncIterator[Sim]:
    async with simulated(make_host("pve8", string_lxc_vmid=True), tls) as sim:
        yield sim


@pytest.fixture
async def pve9(tls: TlsFiles) -> AsyncIterator[Sim]:
    async with simulated(make_host("pve9"), tls) as sim:
        yield sim


async def data(client: httpx2.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, response.reason_phrase
    return response.json()["data"]


async def finished_task(client: httpx2.AsyncClient, upid: str) -> dict[str, Any]:
    """Poll the task like a careful client until the worker has stopped."""
    for _ in range(100):
        status = await data(client, f"/nodes/nas/tasks/{quote(upid, safe='')}/status")
        if status["status"] == "stopped":
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {upid} never finished")


async def power(client: httpx2.AsyncClient, kind: str, vmid: int, action: str) -> httpx2.Response:
    return await client.post(f"/nodes/nas/{kind}/{vmid}/status/{action}")


async def run_task(client: httpx2.AsyncClient, kind: str, vmid: int, action: str) -> dict[str, Any]:
    """A power action that is accepted (200 + UPID), followed until its task has stopped."""
    response = await power(client, kind, vmid, action)
    assert response.status_code == 200, response.reason_phrase
    return await finished_task(client, response.json()["data"])


def by_vmid(items: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(item["vmid"]): item for item in items}


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


class Clock:
    """The simulator's wall clock, stopped, so that several requests see the same moment."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    stopped = Clock(time.time())
    monkeypatch.setattr(proxmox, "time", stopped)
    return stopped


def as_auditor(host: ProxmoxHost, *privileges: str) -> dict[str, str]:
    """Headers of a second token that holds only `privileges`."""
    host.add_token(AUDITOR, privileges)
    return {"Authorization": f"PVEAPIToken={AUDITOR}"}


# -- transport and authentication -----------------------------------------------------------


async def test_version_and_pveproxy_headers(pve8: Sim, pve9: Sim) -> None:
    response = await pve8.client.get("/version")
    assert response.json() == {
        "data": {"release": "8.3", "repoid": "3e76eec21c4a14a7", "version": "8.3.2"}
    }
    assert response.headers["server"] == "pve-api-daemon/3.0"
    assert response.headers["content-type"] == "application/json;charset=UTF-8"
    assert response.headers["cache-control"] == "max-age=0"
    assert response.headers["pragma"] == "no-cache"
    assert (await data(pve9.client, "/version"))["version"] == "9.0.6"


async def test_large_bodies_are_gzipped(pve8: Sim) -> None:
    small = await pve8.client.get("/version")
    large = await pve8.client.get("/nodes/nas/status")
    assert "content-encoding" not in small.headers
    assert large.headers["content-encoding"] == "gzip"
    assert large.json()["data"]["cpuinfo"]["cpus"] == 12


def test_tls_files_are_written_where_promised(tls: TlsFiles) -> None:
    assert [tls.ca.name, tls.cert.name, tls.key.name] == ["ca.pem", "server.pem", "server-key.pem"]
    assert tls.cert.read_text().count("BEGIN CERTIFICATE") >= 1


async def test_missing_token_is_a_slow_empty_401_no_ticket(pve8: Sim) -> None:
    del pve8.client.headers["Authorization"]
    started = time.monotonic()
    response = await pve8.client.get("/version")
    assert time.monotonic() - started >= AUTH_DELAY
    assert (response.status_code, response.reason_phrase) == (401, "No ticket")
    assert response.content == b""
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("flavor", "reason"), [("pve8", "invalid token value!"), ("pve9", "Authentication failed!")]
)
async def test_wrong_token_reason_depends_on_version(
    tls: TlsFiles, flavor: Flavor, reason: str
) -> None:
    async with simulated(make_host(flavor), tls) as sim:
        wrong = {"Authorization": "PVEAPIToken=root@pam!homepanel=not-the-secret"}
        response = await sim.client.get("/version", headers=wrong)
    assert (response.status_code, response.reason_phrase, response.content) == (401, reason, b"")


async def test_token_may_follow_a_space(pve8: Sim) -> None:
    response = await pve8.client.get("/version", headers={"Authorization": f"PVEAPIToken {TOKEN}"})
    assert response.status_code == 200


# -- node status ----------------------------------------------------------------------------


async def test_pve8_node_status_strings_and_memory_semantics(pve8: Sim) -> None:
    status = await data(pve8.client, "/nodes/nas/status")
    assert all(isinstance(value, str) for value in status["loadavg"])
    assert len([float(value) for value in status["loadavg"]]) == 3
    assert isinstance(status["cpuinfo"]["mhz"], str)
    assert status["cpuinfo"]["hvm"] == "1"
    assert (status["cpuinfo"]["cpus"], status["cpuinfo"]["cores"]) == (12, 6)
    assert 0 <= status["cpu"] <= 1
    memory = status["memory"]
    assert "available" not in memory
    assert memory["used"] + memory["free"] == memory["total"] == 66571993088
    assert status["rootfs"]["avail"] < status["rootfs"]["free"]
    assert status["pveversion"] == "pve-manager/8.3.2/3e76eec21c4a14a7"
    assert status["current-kernel"]["release"] in status["kversion"]


async def test_pve9_memory_used_comes_from_mem_available(pve9: Sim) -> None:
    memory = (await data(pve9.client, "/nodes/nas/status"))["memory"]
    assert memory["used"] == memory["total"] - memory["available"]
    assert memory["used"] + memory["free"] != memory["total"]


async def test_other_node_name_fails_the_hostname_lookup(pve9: Sim) -> None:
    response = await pve9.client.get("/nodes/pve/status")
    message = (
        "hostname lookup 'pve' failed - failed to get address info for: pve: "
        "Name or service not known"
    )
    assert (response.status_code, response.reason_phrase) == (500, message)
    assert response.json() == {"data": None, "message": message + "\n"}


# -- guest lists and status -----------------------------------------------------------------


async def test_qemu_list_shape(pve8: Sim, pve9: Sim) -> None:
    old = by_vmid(await data(pve8.client, "/nodes/nas/qemu"))
    assert set(old) == {999, 101, 9000}
    vpn, stopped, template = old[999], old[101], old[9000]
    assert isinstance(vpn["vmid"], int) and "type" not in vpn
    assert (vpn["status"], vpn["tags"]) == ("running", "infra;vpn")
    assert vpn["disk"] == vpn["diskread"] == vpn["diskwrite"] == 0
    assert vpn["pid"] > 0 and vpn["netin"] > 0 and vpn["uptime"] > 0
    assert (stopped["uptime"], stopped["cpu"], stopped["mem"]) == (0, 0, 0)
    assert "pid" not in stopped and "tags" not in stopped and "template" not in stopped
    assert template["template"] == 1
    new = by_vmid(await data(pve9.client, "/nodes/nas/qemu"))[999]
    assert "diskread" not in new
    assert isinstance(new["pressurecpusome"], float)


async def test_counters_grow_while_running(pve8: Sim) -> None:
    before = by_vmid(await data(pve8.client, "/nodes/nas/qemu"))[999]["netin"]
    await asyncio.sleep(0.05)
    assert by_vmid(await data(pve8.client, "/nodes/nas/qemu"))[999]["netin"] > before


async def test_lxc_list_shape(pve8: Sim, pve9: Sim) -> None:
    old = by_vmid(await data(pve8.client, "/nodes/nas/lxc"))
    assert set(old) == {100, 105}
    mqtt = old[105]
    assert mqtt["vmid"] == "105"  # PVE <= 8.1 quirk
    assert (mqtt["type"], mqtt["cpus"]) == ("lxc", 1.5)
    assert 0 < mqtt["disk"] < mqtt["maxdisk"]
    assert mqtt["diskwrite"] > 0 and "maxswap" in mqtt
    assert old[100]["disk"] == 0
    new = by_vmid(await data(pve9.client, "/nodes/nas/lxc"))[105]
    assert new["vmid"] == 105
    assert isinstance(new["pressureiosome"], str)


async def test_qemu_status_current(pve8: Sim) -> None:
    status = await data(pve8.client, "/nodes/nas/qemu/999/status/current")
    assert (status["qmpstatus"], status["ha"], status["agent"]) == ("running", {"managed": 0}, 1)
    assert status["diskread"] > 0 and status["nics"]["tap999i0"]["netin"] > 0
    assert status["blockstat"]["scsi0"]["wr_bytes"] == status["diskwrite"]
    stopped = await data(pve8.client, "/nodes/nas/qemu/101/status/current")
    assert (stopped["qmpstatus"], stopped["ha"]) == ("stopped", {"managed": 0})
    assert "pid" not in stopped


async def test_lxc_status_current(pve8: Sim) -> None:
    status = await data(pve8.client, "/nodes/nas/lxc/105/status/current")
    assert (status["type"], status["status"], status["ha"]) == ("lxc", "running", {"managed": 0})


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/nodes/nas/qemu/12345/status/current", NO_QEMU_12345),
        (  # an LXC id under /qemu/ is just as missing
            "/nodes/nas/qemu/105/status/current",
            "Configuration file 'nodes/nas/qemu-server/105.conf' does not exist",
        ),
        (
            "/nodes/nas/lxc/999/status/current",
            "Configuration file 'nodes/nas/lxc/999.conf' does not exist",
        ),
    ],
)
async def test_missing_guest_is_500_with_the_reason_only(pve8: Sim, path: str, reason: str) -> None:
    response = await pve8.client.get(path)
    assert (response.status_code, response.reason_phrase) == (500, reason)
    assert response.json() == {"data": None}
    assert response.headers["connection"] == "close"


async def test_pve9_repeats_the_message_in_the_body(pve9: Sim) -> None:
    response = await pve9.client.get("/nodes/nas/lxc/12345/status/current")
    assert response.reason_phrase == NO_LXC_12345
    assert response.json() == {"data": None, "message": NO_LXC_12345 + "\n"}


@pytest.mark.parametrize(
    ("vmid", "error"),
    [
        ("99", "invalid format - value does not look like a valid VM ID\n"),
        ("abc", "type check ('integer') failed - got 'abc'"),
    ],
)
async def test_bad_vmid_fails_parameter_verification(pve9: Sim, vmid: str, error: str) -> None:
    response = await pve9.client.get(f"/nodes/nas/qemu/{vmid}/status/current")
    assert (response.status_code, response.reason_phrase) == (400, "Parameter verification failed.")
    assert response.json()["errors"] == {"vmid": error}


# -- power actions and tasks ----------------------------------------------------------------


async def test_start_runs_a_task_then_the_guest_is_running(pve8: Sim) -> None:
    response = await power(pve8.client, "qemu", 101, "start")
    upid = response.json()["data"]
    assert UPID.match(upid)
    assert upid.startswith("UPID:nas:") and upid.endswith(":qmstart:101:root@pam!homepanel:")
    first = await data(pve8.client, f"/nodes/nas/tasks/{quote(upid, safe='')}/status")
    assert first["status"] == "running" and "exitstatus" not in first
    assert pve8.host.guests[101].running is False
    done = await finished_task(pve8.client, upid)
    assert (done["exitstatus"], done["user"], done["tokenid"]) == ("OK", "root@pam", "homepanel")
    assert (done["type"], done["id"], done["node"]) == ("qmstart", "101", "nas")
    vm = by_vmid(await data(pve8.client, "/nodes/nas/qemu"))[101]
    assert vm["status"] == "running" and vm["uptime"] < 5


@pytest.mark.parametrize(
    ("kind", "vmid", "action", "exitstatus"),
    [
        ("qemu", 999, "start", "VM 999 already running"),
        ("qemu", 12345, "start", NO_QEMU_12345),
        ("qemu", 9000, "start", "you can't start a vm if it's a template"),
        ("qemu", 101, "stop", "OK"),
        ("qemu", 101, "shutdown", "OK"),
        ("lxc", 12345, "start", NO_LXC_12345),
    ],
)
async def test_failures_reported_inside_the_task(
    pve8: Sim, kind: str, vmid: int, action: str, exitstatus: str
) -> None:
    assert (await run_task(pve8.client, kind, vmid, action))["exitstatus"] == exitstatus


@pytest.mark.parametrize(
    ("kind", "vmid", "action", "reason"),
    [
        ("qemu", 101, "reboot", "VM 101 not running"),
        ("qemu", 101, "reset", "VM 101 not running"),
        ("qemu", 12345, "reboot", "unable to find configuration file for VM 12345 on node 'nas'"),
        ("lxc", 105, "start", "CT 105 already running"),
        ("lxc", 100, "stop", "CT 100 not running"),
        ("lxc", 100, "shutdown", "CT 100 not running"),
        ("lxc", 100, "reboot", "VM 100 not running"),
    ],
)
async def test_failures_reported_synchronously(
    pve9: Sim, kind: str, vmid: int, action: str, reason: str
) -> None:
    response = await power(pve9.client, kind, vmid, action)
    assert (response.status_code, response.reason_phrase) == (500, reason)
    assert response.json() == {"data": None, "message": reason + "\n"}


async def test_stop_and_reboot_change_state_when_the_task_ends(pve9: Sim) -> None:
    uptime = by_vmid(await data(pve9.client, "/nodes/nas/lxc"))[105]["uptime"]
    assert uptime >= 60
    assert (await run_task(pve9.client, "lxc", 105, "reboot"))["exitstatus"] == "OK"
    assert by_vmid(await data(pve9.client, "/nodes/nas/lxc"))[105]["uptime"] < 5
    assert (await run_task(pve9.client, "qemu", 999, "stop"))["exitstatus"] == "OK"
    assert pve9.host.guests[999].running is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/nodes/nas/qemu/999/status/restart"),
        ("POST", "/nodes/nas/lxc/105/status/reset"),
        ("GET", "/nodes/nas/qemu/999/status/start"),
        ("GET", "/cluster/status"),
    ],
)
async def test_unknown_methods_are_501(pve9: Sim, method: str, path: str) -> None:
    response = await pve9.client.request(method, path)
    reason = f"Method '{method} {path}' not implemented"
    assert (response.status_code, response.reason_phrase) == (501, reason)
    assert response.json() == {"data": None, "message": reason}


async def test_task_status_errors(pve8: Sim) -> None:
    garbled = await pve8.client.get("/nodes/nas/tasks/not-a-upid/status")
    assert (garbled.status_code, garbled.json()) == (
        400,
        {"data": None, "errors": {"upid": "unable to parse worker upid"}},
    )
    unknown = "UPID:nas:0012AAF4:00CCFB90:674E4B38:qmstart:999:root@pam!homepanel:"
    response = await pve8.client.get(f"/nodes/nas/tasks/{quote(unknown, safe='')}/status")
    assert response.status_code == 400
    assert response.json()["errors"] == {"upid": "no such task"}


# -- node rrddata ---------------------------------------------------------------------------

RRD_NODE_FIELDS = {
    "time",
    "loadavg",
    "maxcpu",
    "cpu",
    "iowait",
    "memtotal",
    "memused",
    "swaptotal",
    "swapused",
    "roottotal",
    "rootused",
    "netin",
    "netout",
}
RRD_PVE9_FIELDS = {
    "memavailable",
    "arcsize",
    "pressurecpusome",
    "pressureiosome",
    "pressureiofull",
    "pressurememorysome",
    "pressurememoryfull",
}


@pytest.mark.parametrize(
    ("flavor", "timeframe", "step", "count"),
    [
        ("pve8", "hour", 60, 70),
        ("pve8", "day", 1800, 70),
        ("pve8", "week", 3 * 3600, 70),
        ("pve8", "month", 12 * 3600, 70),
        ("pve8", "year", 7 * 86400, 70),
        ("pve9", "hour", 60, 60),
        ("pve9", "day", 60, 1440),
        ("pve9", "week", 1800, 336),
        ("pve9", "month", 1800, 1440),
        ("pve9", "year", 6 * 3600, 1440),
        ("pve9", "decade", 7 * 86400, 570),
    ],
)
async def test_rrddata_rows_per_timeframe(
    tls: TlsFiles, clock: Clock, flavor: Flavor, timeframe: str, step: int, count: int
) -> None:
    async with simulated(make_host(flavor), tls) as sim:
        rows = await data(sim.client, f"/nodes/nas/rrddata?timeframe={timeframe}")
    times = [row["time"] for row in rows]
    assert len(rows) == count
    assert times[-1] == int(clock.now) // step * step  # ends at the current step
    assert times == list(range(times[0], times[-1] + 1, step))  # aligned, ascending, no holes
    with_data = [row for row in rows if "netin" in row]
    if flavor == "pve8":  # the step in progress is a gap: only "time"
        assert rows[-1] == {"time": times[-1]}
        assert with_data == rows[:-1]
    else:  # PVE 9 pops that row
        assert with_data == rows


async def test_rrddata_fields_follow_the_node_status(pve8: Sim, pve9: Sim, clock: Clock) -> None:
    status = await data(pve8.client, "/nodes/nas/status")
    rows = (await data(pve8.client, "/nodes/nas/rrddata?timeframe=hour&cf=AVERAGE"))[:-1]
    assert all(set(row) == RRD_NODE_FIELDS for row in rows)
    newest = rows[-1]
    assert (newest["maxcpu"], newest["memtotal"]) == (12, status["memory"]["total"])
    assert (newest["swaptotal"], newest["swapused"]) == (
        status["swap"]["total"],
        status["swap"]["used"],
    )
    assert (newest["roottotal"], newest["rootused"]) == (
        status["rootfs"]["total"],
        status["rootfs"]["used"],
    )
    for row in rows:
        assert 0 <= row["cpu"] <= 1 and 0 < row["memused"] < row["memtotal"]
        assert row["loadavg"] == pytest.approx(row["cpu"] * 12)
        assert row["iowait"] == pytest.approx(row["cpu"] * 0.04)
    # Same appetite as /status: CPU within the wave's swing, memory within a few percent.
    mean_cpu = sum(row["cpu"] for row in rows) / len(rows)
    assert 1 / 3 < status["cpu"] / mean_cpu < 3
    mean_used = sum(row["memused"] for row in rows) / len(rows)
    assert abs(mean_used - status["memory"]["used"]) < 0.05 * status["memory"]["total"]

    new = (await data(pve9.client, "/nodes/nas/rrddata?timeframe=hour"))[-1]
    assert set(new) == RRD_NODE_FIELDS | RRD_PVE9_FIELDS
    assert new["memavailable"] == pytest.approx(new["memtotal"] - new["memused"])


async def test_rrddata_net_rates_are_moving_bytes_per_second(pve8: Sim, clock: Clock) -> None:
    path = "/nodes/nas/rrddata?timeframe=hour"
    before = await data(pve8.client, path)
    rates = [row["netin"] for row in before if "netin" in row]
    assert all(isinstance(rate, float) and 0 < rate < 10**9 for rate in rates)
    assert len(set(rates)) > len(rates) // 2  # a graph, not a flat line
    assert len({row["netout"] for row in before[:-1]}) > len(rates) // 2
    clock.now += 60
    after = await data(pve8.client, path)
    assert after[:-2] == before[1:-1]  # history is stable: a minute later it shifts by one row
    assert after[-2]["time"] == before[-1]["time"] and "netin" in after[-2]
    assert after[-2]["netin"] != before[-2]["netin"]


async def test_rrddata_max_is_at_least_the_average(pve9: Sim, clock: Clock) -> None:
    average = await data(pve9.client, "/nodes/nas/rrddata?timeframe=week")
    peak = await data(pve9.client, "/nodes/nas/rrddata?timeframe=week&cf=MAX")
    assert [row["time"] for row in peak] == [row["time"] for row in average]
    assert all(high["cpu"] >= low["cpu"] for high, low in zip(peak, average, strict=True))
    assert any(high["netin"] > low["netin"] for high, low in zip(peak, average, strict=True))


@pytest.mark.parametrize(
    ("flavor", "query", "errors"),
    [
        ("pve8", "", {"timeframe": "property is missing and it is not optional"}),
        (
            "pve8",
            "?timeframe=decade",
            {
                "timeframe": "value 'decade' does not have a value in the enumeration "
                "'hour, day, week, month, year'"
            },
        ),
        (
            "pve9",
            "?timeframe=minute",
            {
                "timeframe": "value 'minute' does not have a value in the enumeration "
                "'hour, day, week, month, year, decade'"
            },
        ),
        (
            "pve9",
            "?cf=MIN",
            {
                "timeframe": "property is missing and it is not optional",
                "cf": "value 'MIN' does not have a value in the enumeration 'AVERAGE, MAX'",
            },
        ),
        (
            "pve9",
            "?timeframe=hour&ds=cpu",
            {
                "ds": "property is not defined in schema and the schema does not allow "
                "additional properties"
            },
        ),
    ],
)
async def test_rrddata_parameter_errors(
    tls: TlsFiles, flavor: Flavor, query: str, errors: dict[str, str]
) -> None:
    async with simulated(make_host(flavor), tls) as sim:
        response = await sim.client.get(f"/nodes/nas/rrddata{query}")
    assert (response.status_code, response.reason_phrase) == (400, "Parameter verification failed.")
    assert response.json()["errors"] == errors


async def test_rrddata_needs_sys_audit(pve9: Sim) -> None:
    headers = as_auditor(pve9.host, "VM.Audit")
    response = await pve9.client.get("/nodes/nas/rrddata?timeframe=hour", headers=headers)
    reason = "Permission check failed (/nodes/nas, Sys.Audit)"
    assert (response.status_code, response.reason_phrase) == (403, reason)


# -- cluster resources ----------------------------------------------------------------------


async def test_cluster_resources_vm_entries(pve8: Sim, pve9: Sim) -> None:
    items = by_id(await data(pve8.client, "/cluster/resources?type=vm"))
    assert set(items) == {"qemu/999", "qemu/101", "qemu/9000", "lxc/100", "lxc/105"}
    vpn = items["qemu/999"]
    assert set(vpn) == {
        "id",
        "vmid",
        "node",
        "type",
        "name",
        "status",
        "template",
        "uptime",
        "maxcpu",
        "cpu",
        "maxmem",
        "mem",
        "maxdisk",
        "disk",
        *COUNTERS,
        "tags",
    }
    assert (vpn["vmid"], vpn["type"], vpn["node"], vpn["name"]) == (999, "qemu", "nas", "VPN-HUB")
    assert (vpn["status"], vpn["template"], vpn["tags"], vpn["maxcpu"]) == (
        "running",
        0,
        "infra;vpn",
        2,
    )
    assert 0 < vpn["cpu"] <= 1 and 0 < vpn["mem"] < vpn["maxmem"] and vpn["disk"] == 0
    assert all(vpn[key] > 0 for key in COUNTERS)  # qemu disk I/O is real here, unlike the list
    mqtt = items["lxc/105"]
    assert (mqtt["vmid"], mqtt["type"], mqtt["maxcpu"]) == (105, "lxc", 1.5)  # never a string
    assert 0 < mqtt["disk"] < mqtt["maxdisk"]
    for stopped in (items["qemu/101"], items["lxc/100"], items["qemu/9000"]):
        assert stopped["status"] == "stopped" and "tags" not in stopped
        assert all(stopped[key] == 0 for key in ("uptime", "cpu", "mem", "disk", *COUNTERS))
    assert items["qemu/9000"]["template"] == 1
    assert not any("hastate" in item for item in items.values())
    new = by_id(await data(pve9.client, "/cluster/resources?type=vm"))["qemu/999"]
    assert new["memhost"] == new["mem"]


async def test_cluster_resources_match_the_lists_at_the_same_moment(
    pve8: Sim, clock: Clock
) -> None:
    resources = by_id(await data(pve8.client, "/cluster/resources?type=vm"))
    qemu = by_vmid(await data(pve8.client, "/nodes/nas/qemu"))
    lxc = by_vmid(await data(pve8.client, "/nodes/nas/lxc"))
    shared = ("status", "uptime", "cpu", "mem", "maxmem", "disk", "maxdisk", "netin", "netout")
    for vmid, item in qemu.items():
        resource = resources[f"qemu/{vmid}"]
        assert {key: resource[key] for key in shared} == {key: item[key] for key in shared}
        assert resource["maxcpu"] == item["cpus"]
        current = await data(pve8.client, f"/nodes/nas/qemu/{vmid}/status/current")
        assert {key: resource[key] for key in COUNTERS} == {key: current[key] for key in COUNTERS}
    for vmid, item in lxc.items():
        resource = resources[f"lxc/{vmid}"]
        keys = (*shared, "diskread", "diskwrite")
        assert {key: resource[key] for key in keys} == {key: item[key] for key in keys}


async def test_cluster_resources_counters_grow_and_restart_from_zero(
    pve8: Sim, clock: Clock
) -> None:
    async def vpn() -> dict[str, Any]:
        return by_id(await data(pve8.client, "/cluster/resources?type=vm"))["qemu/999"]

    first = await vpn()
    clock.now += 10
    second = await vpn()
    assert all(second[key] > first[key] > 0 for key in COUNTERS)
    await run_task(pve8.client, "qemu", 999, "reset")  # same QEMU process: counters carry on
    clock.now += 10
    after_reset = await vpn()
    assert all(after_reset[key] > second[key] for key in COUNTERS)
    await run_task(pve8.client, "qemu", 999, "stop")
    stopped = await vpn()
    assert stopped["status"] == "stopped"
    assert all(stopped[key] == 0 for key in ("uptime", *COUNTERS))
    await run_task(pve8.client, "qemu", 999, "start")
    clock.now += 5
    restarted = await vpn()
    assert (restarted["status"], restarted["uptime"]) == ("running", 5)
    assert all(0 < restarted[key] < first[key] for key in COUNTERS)  # a reset, not a dip
    await run_task(pve8.client, "qemu", 999, "reboot")
    rebooted = await vpn()
    assert rebooted["uptime"] == 0 and all(rebooted[key] == 0 for key in COUNTERS)


async def test_cluster_resources_types(pve8: Sim, clock: Clock) -> None:
    everything = await data(pve8.client, "/cluster/resources")
    assert {item["type"] for item in everything} == {"qemu", "lxc", "node"}
    vms = [item for item in everything if item["type"] != "node"]
    assert vms == await data(pve8.client, "/cluster/resources?type=vm")
    [node] = await data(pve8.client, "/cluster/resources?type=node")
    assert node in everything
    status = await data(pve8.client, "/nodes/nas/status")
    assert (node["id"], node["node"], node["status"]) == ("node/nas", "nas", "online")
    assert (node["cpu"], node["maxcpu"], node["uptime"]) == (status["cpu"], 12, status["uptime"])
    assert (node["mem"], node["maxmem"]) == (status["memory"]["used"], status["memory"]["total"])
    assert (node["disk"], node["maxdisk"]) == (status["rootfs"]["used"], status["rootfs"]["total"])
    assert await data(pve8.client, "/cluster/resources?type=storage") == []


async def test_cluster_resources_bad_type(pve9: Sim) -> None:
    response = await pve9.client.get("/cluster/resources?type=qemu")
    assert (response.status_code, response.reason_phrase) == (400, "Parameter verification failed.")
    assert response.json()["errors"] == {
        "type": "value 'qemu' does not have a value in the enumeration 'vm, storage, node, sdn'"
    }


async def test_cluster_resources_are_filtered_by_privilege(pve8: Sim) -> None:
    sys_audit = as_auditor(pve8.host, "Sys.Audit")
    response = await pve8.client.get("/cluster/resources", headers=sys_audit)
    [node] = response.json()["data"]  # guests need VM.Audit; they vanish, no 403
    assert node["type"] == "node" and node["maxcpu"] == 12
    bare = as_auditor(pve8.host)
    assert (await pve8.client.get("/cluster/resources?type=vm", headers=bare)).json() == {
        "data": []
    }
    [stripped] = (await pve8.client.get("/cluster/resources", headers=bare)).json()["data"]
    assert stripped == {
        "id": "node/nas",
        "node": "nas",
        "type": "node",
        "status": "online",
        "level": "",
        "cgroup-mode": 2,
    }


# -- access permissions ---------------------------------------------------------------------

DEFAULT_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


async def test_permissions_list_the_tokens_privileges_per_path(pve8: Sim, pve9: Sim) -> None:
    everything = {"Sys.Audit": 1, "VM.Audit": 1, "VM.PowerMgmt": 1}
    for sim in (pve8, pve9):
        assert await data(sim.client, "/access/permissions") == dict.fromkeys(
            DEFAULT_PATHS, everything
        )
    headers = as_auditor(pve8.host, "Sys.Audit", "VM.Audit")
    response = await pve8.client.get("/access/permissions", headers=headers)
    assert response.json()["data"]["/vms"] == {"Sys.Audit": 1, "VM.Audit": 1}


async def test_permissions_of_a_privilege_separated_token_without_acls_are_empty(
    pve8: Sim,
) -> None:
    """The classic support case: the token works (200), but holds nothing at all."""
    bare = as_auditor(pve8.host)
    response = await pve8.client.get("/access/permissions", headers=bare)
    assert (response.status_code, response.json()) == (200, {"data": {}})
    guests = await pve8.client.get("/nodes/nas/qemu", headers=bare)
    assert guests.json() == {"data": []}


async def test_permissions_of_one_path(pve9: Sim) -> None:
    assert await data(pve9.client, "/access/permissions?path=/vms/100") == {
        "/vms/100": {"Sys.Audit": 1, "VM.Audit": 1, "VM.PowerMgmt": 1}
    }
    bare = as_auditor(pve9.host)
    response = await pve9.client.get("/access/permissions?path=/nodes/nas", headers=bare)
    assert response.json() == {"data": {"/nodes/nas": {}}}  # the path is reported, even empty


async def test_permissions_of_another_user_need_sys_audit_on_access(pve8: Sim) -> None:
    token_id, auditor_id = TOKEN.rpartition("=")[0], AUDITOR.rpartition("=")[0]
    own = await data(pve8.client, f"/access/permissions?userid={quote(token_id)}")
    assert own["/"] == {"Sys.Audit": 1, "VM.Audit": 1, "VM.PowerMgmt": 1}
    headers = as_auditor(pve8.host, "VM.Audit")
    itself = await pve8.client.get(
        "/access/permissions", params={"userid": auditor_id}, headers=headers
    )
    assert itself.json()["data"]["/vms"] == {"VM.Audit": 1}
    other = await pve8.client.get(
        "/access/permissions", params={"userid": token_id}, headers=headers
    )
    reason = "Permission check failed (/access, Sys.Audit)"
    assert (other.status_code, other.reason_phrase) == (403, reason)
    # The configured token holds Sys.Audit: it may look at others, unknown ones hold nothing.
    audited = await data(pve8.client, f"/access/permissions?userid={quote(auditor_id)}")
    assert audited["/"] == {"VM.Audit": 1}
    assert await data(pve8.client, "/access/permissions?userid=nobody@pve") == {}


async def test_permissions_parameter_errors(pve9: Sim) -> None:
    response = await pve9.client.get("/access/permissions?userid=nobody&privs=Sys.Audit")
    assert (response.status_code, response.reason_phrase) == (400, "Parameter verification failed.")
    assert response.json()["errors"] == {
        "privs": "property is not defined in schema and the schema does not allow additional "
        "properties",
        "userid": "value does not match the regex pattern",
    }


async def test_permissions_need_a_valid_token(pve8: Sim) -> None:
    del pve8.client.headers["Authorization"]
    response = await pve8.client.get("/access/permissions")
    assert (response.status_code, response.reason_phrase) == (401, "No ticket")


# -- faults, bookkeeping, demo lab ----------------------------------------------------------


async def test_drop_closes_the_connection_without_an_answer(pve8: Sim) -> None:
    pve8.host.faults.mode = "drop"
    with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
        await pve8.client.get("/version")


async def test_hang_never_answers_but_lets_the_server_stop(tls: TlsFiles) -> None:
    host = make_host("pve8")
    host.faults.mode = "hang"
    async with served(host.app(), server_ssl_context(tls)) as (url, runner):
        base_url = f"{url}/api2/json"
        client = httpx2.AsyncClient(verify=client_ssl_context(tls), timeout=0.2)
        async with client:
            with pytest.raises(httpx2.ReadTimeout):
                await client.get(f"{base_url}/version", headers={"Authorization": AUTH})
            pending = asyncio.create_task(client.get(f"{base_url}/version", timeout=5))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await runner.cleanup()
            assert time.monotonic() - started < 2
            with pytest.raises(httpx2.TransportError):
                await pending


async def test_html_garbage_and_status_faults(pve8: Sim) -> None:
    faults = pve8.host.faults
    faults.mode = "html"
    page = await pve8.client.get("/version")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    faults.mode = "garbage"
    garbage = await pve8.client.get("/version")
    assert garbage.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        garbage.json()
    faults.mode, faults.status = "status", 504
    gateway = await pve8.client.get("/version")
    assert (gateway.status_code, gateway.reason_phrase) == (504, "Gateway Timeout")
    assert "<title>504 Gateway Timeout</title>" in gateway.text


async def test_latency_delays_every_answer(pve8: Sim) -> None:
    pve8.host.faults.latency = 0.1
    started = time.monotonic()
    await data(pve8.client, "/version")
    assert time.monotonic() - started >= 0.1


async def test_requests_are_counted_and_reset_restores_everything(pve8: Sim) -> None:
    host = pve8.host
    host.faults.mode = "status"
    await pve8.client.get("/nodes/nas/qemu")
    host.faults.mode = None
    await pve8.client.get("/nodes/nas/qemu")
    await run_task(pve8.client, "qemu", 999, "stop")
    assert host.requests["GET /api2/json/nodes/nas/qemu"] == 2
    assert host.requests["POST /api2/json/nodes/nas/qemu/999/status/stop"] == 1
    host.reset()
    assert not host.requests and host.faults.mode is None and host.faults.auth_delay == 3.0
    assert host.guests[999].running is True


def test_demo_lab() -> None:
    hosts = demo_hosts("root@pam!homepanel=a", "root@pam!homepanel=b")
    nas, smart = hosts["nas"], hosts["smart-home"]
    assert (nas.node, nas.flavor, smart.node, smart.flavor) == ("nas", "pve8", "pve", "pve9")
    guests = [*nas.guests.values(), *smart.guests.values()]
    assert 20 <= len(guests) <= 28
    assert [guest.vmid for guest in guests if guest.template] == [9000]
    assert {guest.type for guest in guests} == {"qemu", "lxc"}
    assert any(not guest.running for guest in guests)
    assert (nas.guests[999].name, nas.guests[999].type, nas.guests[999].running) == (
        "VPN-HUB",
        "qemu",
        True,
    )
    assert (nas.guests[100].type, nas.guests[100].running) == ("lxc", False)
    assert (smart.guests[105].name, smart.guests[105].running) == ("mqtt-api", True)
