"""The Proxmox slice end to end: app under uvicorn -> httpx2 -> simulated PVE 8 and 9 over HTTPS."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import httpx2
import pytest

from homepanel.core.http import tls_verify
from homepanel.proxmox import client as proxmox_client
from homepanel.proxmox.schemas import UPID_PATTERN
from homepanel.simulator.lab import Lab
from tests.harness import AppServer, RunningLab, assert_error, authed, lab_settings

SERVER_KEYS = {
    "id",
    "name",
    "ip",
    "node",
    "online",
    "version",
    "uptime",
    "cpu_count",
    "cpu_usage",
    "memory_total",
    "memory_used",
    "memory_percent",
}
GUEST_KEYS = {
    "vmid",
    "type",
    "name",
    "status",
    "uptime",
    "cpu",
    "maxcpu",
    "mem",
    "maxmem",
    "disk",
    "maxdisk",
    "template",
}
DETAIL_KEYS = {
    "vmid",
    "type",
    "name",
    "node",
    "status",
    "uptime",
    "cpu",
    "cpus",
    "mem",
    "maxmem",
    "disk",
    "maxdisk",
    "netin",
    "netout",
    "diskread",
    "diskwrite",
}


def upstream(lab: Lab, server_id: str, path: str) -> dict:
    """Ask the simulator directly, as the app would, to compare figures."""
    host = lab.proxmox[server_id]
    assert lab.tls is not None
    with httpx2.Client(verify=tls_verify(lab.tls.ca)) as client:
        response = client.get(
            f"{lab.proxmox_urls[server_id]}/api2/json{path}",
            headers={"Authorization": f"PVEAPIToken={host.token}"},
        )
    response.raise_for_status()
    return response.json()["data"]


def requests_to(lab: Lab, server_id: str, suffix: str) -> int:
    return sum(n for key, n in lab.proxmox[server_id].requests.items() if key.endswith(suffix))


def wait_for_task(api: httpx2.Client, server_id: str, upid: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = api.get(f"/api/proxmox/{server_id}/tasks/{upid}").json()
        if task["status"] == "stopped":
            return task
        time.sleep(0.1)
    raise AssertionError("task did not finish")


# --- reads ---------------------------------------------------------------------------------


def test_server_list(api: httpx2.Client) -> None:
    response = api.get("/api/proxmox/servers")
    assert response.status_code == 200
    servers = response.json()["servers"]
    assert [s["id"] for s in servers] == ["nas", "smart-home"]
    nas, smart = servers
    for server in servers:
        assert set(server) == SERVER_KEYS
        assert server["online"] is True and server["ip"] == "127.0.0.1"
        assert 0 <= server["cpu_usage"] <= 1
        assert server["memory_percent"] == round(
            server["memory_used"] / server["memory_total"] * 100, 1
        )
    assert (nas["name"], nas["node"], nas["version"], nas["cpu_count"]) == (
        "NAS Server",
        "nas",
        "8.3.2",
        12,
    )
    assert (smart["name"], smart["node"], smart["version"], smart["cpu_count"]) == (
        "Smart Home Server",
        "pve",
        "9.0.6",
        4,
    )


@pytest.mark.parametrize(("server_id", "node"), [("nas", "nas"), ("smart-home", "pve")])
def test_server_status(api: httpx2.Client, lab: Lab, server_id: str, node: str) -> None:
    body = api.get(f"/api/proxmox/{server_id}/status").json()
    raw = upstream(lab, server_id, f"/nodes/{node}/status")
    assert set(body) == {
        "server_id",
        "node",
        "status",
        "uptime",
        "loadavg",
        "cpu",
        "memory",
        "swap",
        "rootfs",
    }
    assert (body["server_id"], body["node"], body["status"]) == (server_id, node, "online")
    assert all(isinstance(x, str) for x in raw["loadavg"])  # the quirk is really there...
    assert len(body["loadavg"]) == 3 and all(
        isinstance(x, float) for x in body["loadavg"]
    )  # ...and gone
    assert (
        body["cpu"]["count"] == raw["cpuinfo"]["cpus"]
        and body["cpu"]["model"] == raw["cpuinfo"]["model"]
    )
    memory = body["memory"]
    assert memory["total"] == raw["memory"]["total"]
    assert memory["free"] == memory["total"] - memory["used"]
    assert memory["percent"] == round(memory["used"] / memory["total"] * 100, 1)
    rootfs = body["rootfs"]
    assert rootfs["total"] == raw["rootfs"]["total"] and rootfs["free"] == raw["rootfs"]["avail"]
    assert body["swap"]["total"] == raw["swap"]["total"]
    if raw["swap"]["total"] == 0:
        assert body["swap"]["percent"] == 0.0


def test_pve9_memory_semantics(lab: Lab) -> None:
    """The simulator really sends both meanings of memory.free, so the test above covers both."""
    old, new = (
        upstream(lab, "nas", "/nodes/nas/status")["memory"],
        upstream(lab, "smart-home", "/nodes/pve/status")["memory"],
    )
    assert old["used"] + old["free"] == old["total"] and "available" not in old
    assert (
        new["used"] + new["free"] != new["total"] and new["used"] == new["total"] - new["available"]
    )


@pytest.mark.parametrize("server_id", ["nas", "smart-home"])
def test_guest_list(api: httpx2.Client, lab: Lab, server_id: str) -> None:
    body = api.get(f"/api/proxmox/{server_id}/vms").json()
    guests = body["instances"]
    assert [g["vmid"] for g in guests] == sorted(g["vmid"] for g in guests)
    assert all(set(g) == GUEST_KEYS and isinstance(g["vmid"], int) for g in guests)
    assert body["server_id"] == server_id
    assert body["total"] == len(guests) == len(lab.proxmox[server_id].guests)
    assert body["vms"] == sum(g["type"] == "qemu" for g in guests)
    assert body["containers"] == sum(g["type"] == "lxc" for g in guests)
    assert body["running"] + body["stopped"] == body["total"]
    assert body["running"] == sum(g["status"] == "running" for g in guests)


def test_guest_list_quirks(api: httpx2.Client, lab: Lab) -> None:
    raw_lxc = upstream(lab, "nas", "/nodes/nas/lxc")
    assert all(isinstance(item["vmid"], str) for item in raw_lxc)  # PVE <= 8.1 quirk present
    guests = {g["vmid"]: g for g in api.get("/api/proxmox/nas/vms").json()["instances"]}
    assert guests[999] | {"cpu": 0, "mem": 0, "uptime": 0, "disk": 0} == {
        "vmid": 999,
        "type": "qemu",
        "name": "VPN-HUB",
        "status": "running",
        "uptime": 0,
        "cpu": 0,
        "maxcpu": 2,
        "mem": 0,
        "maxmem": 1073741824,
        "disk": 0,
        "maxdisk": 17179869184,
        "template": False,
    }
    assert guests[100]["type"] == "lxc" and guests[100]["status"] == "stopped"
    assert guests[9000]["template"] is True
    assert guests[109]["maxcpu"] == 1.5  # fractional LXC cores survive
    assert list(guests) == sorted(guests)  # "100" < "99" as strings; sorted numerically here


@pytest.mark.parametrize(
    ("server_id", "vmid", "kind"),
    [("nas", 999, "qemu"), ("smart-home", 105, "lxc"), ("nas", 100, "lxc")],
)
def test_guest_detail(api: httpx2.Client, server_id: str, vmid: int, kind: str) -> None:
    body = api.get(f"/api/proxmox/{server_id}/vm/{vmid}").json()
    assert set(body) == DETAIL_KEYS
    assert (body["vmid"], body["type"]) == (vmid, kind)
    assert body["node"] == ("nas" if server_id == "nas" else "pve")
    if body["status"] == "running":
        assert body["netin"] > 0 and body["uptime"] > 0


def test_guest_type_is_resolved_before_status(api: httpx2.Client, lab: Lab) -> None:
    api.get("/api/proxmox/smart-home/vm/105")
    assert requests_to(lab, "smart-home", "/lxc/105/status/current") == 1
    assert requests_to(lab, "smart-home", "/qemu/105/status/current") == 0


# --- actions -------------------------------------------------------------------------------


def test_start_a_stopped_container(api: httpx2.Client, lab: Lab) -> None:
    response = api.post("/api/proxmox/nas/vm/100/start")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["message"] == "Запуск VM 100"
    assert re.match(UPID_PATTERN, body["task"]) and ":vzstart:100:" in body["task"]
    task = wait_for_task(api, "nas", body["task"])
    assert task["exitstatus"] == "OK" and task["success"] is True and task["server_id"] == "nas"
    guest = api.get("/api/proxmox/nas/vm/100").json()
    assert guest["status"] == "running"


@pytest.mark.parametrize(
    ("action", "command", "message"),
    [
        ("stop", "stop", "Остановка VM 999"),
        ("shutdown", "shutdown", "Выключение VM 999"),
        ("restart", "reboot", "Перезагрузка VM 999"),
    ],
)
def test_power_actions_map_to_proxmox(
    api: httpx2.Client, lab: Lab, action: str, command: str, message: str
) -> None:
    body = api.post(f"/api/proxmox/nas/vm/999/{action}").json()
    assert body["message"] == message and f":qm{command}:999:" in body["task"]
    assert requests_to(lab, "nas", f"/qemu/999/status/{command}") == 1
    assert requests_to(lab, "nas", "/status/restart") == 0
    assert wait_for_task(api, "nas", body["task"])["success"] is True


def test_refused_actions_are_409_with_proxmox_words(api: httpx2.Client) -> None:
    # nas is PVE 8.3: the reason exists only in the HTTP reason phrase.
    body = assert_error(api.post("/api/proxmox/nas/vm/101/restart"), 409, "ACTION_REFUSED")
    assert "VM 101 not running" in body["detail"]
    # smart-home is PVE 9: the reason is in the JSON body.
    body = assert_error(api.post("/api/proxmox/smart-home/vm/105/start"), 409, "ACTION_REFUSED")
    assert "CT 105 already running" in body["detail"]


def test_a_task_can_fail_after_the_start_was_accepted(api: httpx2.Client) -> None:
    body = api.post("/api/proxmox/nas/vm/999/start").json()
    assert body["success"] is True  # Proxmox accepted it...
    task = wait_for_task(api, "nas", body["task"])
    assert (
        task["success"] is False and "already running" in task["exitstatus"]
    )  # ...and the task failed


@pytest.mark.parametrize(("server_id", "node"), [("nas", "nas"), ("smart-home", "pve")])
def test_task_status_validation(api: httpx2.Client, server_id: str, node: str) -> None:
    assert_error(api.get(f"/api/proxmox/{server_id}/tasks/not-a-upid"), 422)
    assert_error(api.get(f"/api/proxmox/{server_id}/tasks/UPID:{node}:..:"), 422)
    unknown = f"UPID:{node}:0012AAF4:00CCFB90:674E4B38:qmstart:999:root@pam!homepanel:"
    body = assert_error(api.get(f"/api/proxmox/{server_id}/tasks/{unknown}"), 404, "NOT_FOUND")
    assert "no such task" in body["detail"]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/proxmox/nope/status",
        "/api/proxmox/NAS/status",
        "/api/proxmox/nas%2F..%2Fsmart-home/status",
        "/api/proxmox/..%2Fnas/vms",
        "/api/proxmox/nas%3Fx=1/vms",
        "/api/proxmox/nas%23/vms",
        "/api/proxmox/" + "a" * 5000 + "/vms",
        "/api/proxmox/n%C3%A4s/vms",
        "/api/proxmox/nas/vm/999/reset",
    ],
)
def test_unknown_servers_and_paths_are_404(api: httpx2.Client, lab: Lab, path: str) -> None:
    before = sum(h.requests.total() for h in lab.proxmox.values())
    assert_error(
        api.get(path) if "reset" not in path else api.post(path),
        404 if "reset" not in path else 422,
    )
    assert (
        sum(h.requests.total() for h in lab.proxmox.values()) == before
    )  # nothing reached Proxmox


@pytest.mark.parametrize("vmid", ["99", "0", "-1", "1000000000", "abc", "1e3", "100.5"])
def test_vmid_out_of_range_is_422(api: httpx2.Client, vmid: str) -> None:
    assert_error(api.get(f"/api/proxmox/nas/vm/{vmid}"), 422, "VALIDATION_ERROR")
    assert_error(api.post(f"/api/proxmox/nas/vm/{vmid}/start"), 422, "VALIDATION_ERROR")


def test_unknown_guest_is_404(api: httpx2.Client) -> None:
    assert_error(api.get("/api/proxmox/nas/vm/12345"), 404, "GUEST_NOT_FOUND")
    assert_error(api.post("/api/proxmox/nas/vm/12345/start"), 404, "GUEST_NOT_FOUND")


# --- upstream failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("drop", 502, "UPSTREAM_UNREACHABLE"),
        ("html", 502, "UPSTREAM_BAD_RESPONSE"),
        ("garbage", 502, "UPSTREAM_BAD_RESPONSE"),
        ("status", 502, "UPSTREAM_ERROR"),
    ],
)
def test_broken_upstream_answers(
    api: httpx2.Client, lab: Lab, mode: str, status: int, code: str
) -> None:
    lab.proxmox["nas"].faults.mode = mode
    for path in ("/status", "/vms", "/vm/999"):
        body = assert_error(api.get(f"/api/proxmox/nas{path}"), status, code)
        assert "<html" not in body["detail"]
    servers = api.get("/api/proxmox/servers").json()["servers"]
    assert servers[0] == {key: None for key in SERVER_KEYS} | {
        "id": "nas",
        "name": "NAS Server",
        "ip": "127.0.0.1",
        "node": "nas",
        "online": False,
    }
    assert servers[1]["online"] is True


def test_slow_server_does_not_hold_up_the_list(api: httpx2.Client, lab: Lab) -> None:
    lab.proxmox["nas"].faults.mode = "hang"
    started = time.monotonic()
    servers = api.get("/api/proxmox/servers").json()["servers"]
    elapsed = time.monotonic() - started
    assert [s["online"] for s in servers] == [False, True]
    assert 4.5 <= elapsed < 7
    # The abandoned request was cancelled with its last waiter: a fresh one is asked for at once.
    lab.proxmox["nas"].faults.mode = None
    started = time.monotonic()
    assert api.get("/api/proxmox/nas/status").status_code == 200
    assert time.monotonic() - started < 2


def test_missing_upstream_error_detail_in_old_and_new_proxmox(api: httpx2.Client, lab: Lab) -> None:
    lab.proxmox["smart-home"].guests.pop(105)  # gone between the list and status/current
    assert_error(api.get("/api/proxmox/smart-home/vm/105"), 404)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server(custom_app) -> None:
    server = custom_app(
        PROXMOX_DEAD_URL=f"https://127.0.0.1:{free_port()}", PROXMOX_DEAD_NAME="Gone"
    )
    with authed(server) as api:
        servers = {s["id"]: s for s in api.get("/api/proxmox/servers").json()["servers"]}
        assert servers["dead"]["online"] is False and servers["dead"]["name"] == "Gone"
        assert servers["nas"]["online"] is True
        assert_error(api.get("/api/proxmox/dead/status"), 502, "UPSTREAM_UNREACHABLE")


def test_wrong_token_tells_the_owner_what_to_fix(custom_app, lab: Lab) -> None:
    lab.proxmox["nas"].faults.auth_delay = 0.2
    wrong = "root@pam!homepanel=00000000-0000-0000-0000-000000000000"
    server = custom_app(PROXMOX_NAS_TOKEN=wrong)
    with authed(server) as api:
        body = assert_error(api.get("/api/proxmox/nas/status"), 502, "UPSTREAM_AUTH_FAILED")
        assert "PROXMOX_NAS_TOKEN" in body["detail"] and "invalid token value" in body["detail"]
        assert wrong not in body["detail"] and "00000000" not in body["detail"]
        assert api.get("/api/proxmox/servers").json()["servers"][0]["online"] is False


def test_missing_privileges_are_named(custom_app, lab: Lab) -> None:
    auditor = "monitor@pve!panel=11111111-2222-3333-4444-555555555555"
    lab.proxmox["nas"].add_token(auditor, {"Sys.Audit", "VM.Audit"})
    with authed(custom_app(PROXMOX_NAS_TOKEN=auditor)) as api:
        assert api.get("/api/proxmox/nas/vm/999").status_code == 200  # reads are fine...
        body = assert_error(api.post("/api/proxmox/nas/vm/999/start"), 502, "UPSTREAM_FORBIDDEN")
        assert "VM.PowerMgmt" in body["detail"] and "/vms/999" in body["detail"]  # ...actions not
        assert auditor not in body["detail"]


def test_privilege_separated_token_without_acl(custom_app, lab: Lab) -> None:
    """The most common Proxmox dashboard problem: empty guest lists, 403 on the node."""
    bare = "root@pam!privsep=66666666-7777-8888-9999-000000000000"
    lab.proxmox["nas"].add_token(bare, set())
    with authed(custom_app(PROXMOX_NAS_TOKEN=bare)) as api:
        body = assert_error(api.get("/api/proxmox/nas/status"), 502, "UPSTREAM_FORBIDDEN")
        assert "Sys.Audit" in body["detail"] and "privilege separation" in body["detail"]
        assert api.get("/api/proxmox/nas/vms").json()["total"] == 0  # Proxmox filters, not refuses
        assert api.get("/api/proxmox/servers").json()["servers"][0]["online"] is False


def test_untrusted_certificate_is_refused(custom_app) -> None:
    server = custom_app(PROXMOX_NAS_VERIFY_SSL="true")
    with authed(server) as api:
        assert_error(api.get("/api/proxmox/nas/status"), 502, "UPSTREAM_TLS_ERROR")
        assert api.get("/api/proxmox/smart-home/status").status_code == 200  # pinned CA still works


def test_verify_ssl_false_accepts_self_signed(custom_app) -> None:
    server = custom_app(PROXMOX_NAS_VERIFY_SSL="false")
    with authed(server) as api:
        assert api.get("/api/proxmox/nas/status").status_code == 200


def test_upstream_timeout_is_504(custom_app, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxmox_client, "TIMEOUT", 1.0)  # the real 10 s would only slow the suite
    server = custom_app()
    lab.proxmox["nas"].faults.latency = 3
    with authed(server) as api:
        started = time.monotonic()
        body = assert_error(api.get("/api/proxmox/nas/vms"), 504, "UPSTREAM_TIMEOUT")
        assert time.monotonic() - started < 2.5
        assert "did not answer within 1 s" in body["detail"]


def test_no_proxmox_configured_is_503(running_lab: RunningLab, tmp_path: Path) -> None:
    settings = lab_settings(running_lab.lab, tmp_path)
    settings = settings.model_copy(update={"proxmox_servers": []})
    with AppServer(settings) as server, authed(server) as api:
        assert_error(api.get("/api/proxmox/servers"), 503, "NOT_CONFIGURED")
        assert_error(api.get("/api/proxmox/nas/status"), 503, "NOT_CONFIGURED")


# --- load ----------------------------------------------------------------------------------


async def test_identical_concurrent_gets_cost_one_upstream_request(
    app_server: AppServer, jwt: str, lab: Lab
) -> None:
    lab.proxmox[
        "nas"
    ].faults.latency = 0.5  # keep the first request in flight while the rest arrive
    before = requests_to(lab, "nas", "/nodes/nas/status")
    async with httpx2.AsyncClient(
        base_url=app_server.url, headers={"Authorization": f"Bearer {jwt}"}, timeout=30
    ) as client:
        responses = await asyncio.gather(
            *(client.get("/api/proxmox/nas/status") for _ in range(50))
        )
    assert [r.status_code for r in responses] == [200] * 50, responses[0].text
    assert len({r.json()["uptime"] for r in responses}) == 1  # one answer, shared
    assert requests_to(lab, "nas", "/nodes/nas/status") - before == 1
    # Once it is answered, the next request asks again: coalescing is not caching.
    lab.proxmox["nas"].faults.latency = 0
    async with httpx2.AsyncClient(
        base_url=app_server.url, headers={"Authorization": f"Bearer {jwt}"}
    ) as client:
        await client.get("/api/proxmox/nas/status")
    assert requests_to(lab, "nas", "/nodes/nas/status") - before == 2


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"data": null}',
        b'{"data": "ok"}',
        b'{"data": {"uptime": "soon"}}',
        b'{"data": {"cpu": Infinity}}',
        b'{"data": {"loadavg": [NaN, 1, 1]}}',
        b'{"data": {"memory": {"total": "lots"}}}',
        b'{"data": [{"vmid": "abc"}]}',
        b'{"data": [{"vmid": 1e400}]}',
    ],
)
def test_odd_upstream_shapes_are_502(api: httpx2.Client, lab: Lab, body: bytes) -> None:
    """Whatever a broken or future Proxmox sends, the answer is a 502, never a crash."""
    lab.proxmox["nas"].faults.mode = "json"
    lab.proxmox["nas"].faults.body = body
    for path in ("/status", "/vms", "/vm/999"):
        response = api.get(f"/api/proxmox/nas{path}")
        if response.status_code == 404:  # a list that parsed as empty: the guest is not there
            continue
        assert_error(response, 502, "UPSTREAM_BAD_RESPONSE")
