"""Collectors against the simulated lab over real sockets, driven by an injected clock, and the
metrics API of a running app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from homepanel.automations.client import AutomationClient
from homepanel.automations.collector import AutomationCollector
from homepanel.automations.schemas import ControlAction
from homepanel.core.config import Settings
from homepanel.mqtt.tracker import DeviceTracker
from homepanel.proxmox.client import ProxmoxClient
from homepanel.proxmox.collector import ProxmoxCollector
from homepanel.simulator.lab import Lab
from homepanel.store.db import Database
from homepanel.store.metrics import AUTOMATION, RAW, SERVER, VM, Kind, MetricsStore, Retention
from homepanel.streams.hub import StreamHub
from tests.harness import AppServer, RunningLab, assert_error, authed, lab_settings

T0 = 1_800_000_000  # a tick, aligned to every interval
NAME = "main/kitchen/motion_light"


@dataclass
class FakeClock:
    """Time that moves only when a test says so; sleeping just records the wish."""

    now: float = T0
    slept: list[float] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[MetricsStore]:
    db = await Database.open(tmp_path / "metrics.db")
    yield MetricsStore(db, Retention(tiers={0: 3600}, device_states=86400))
    await db.close()


@pytest.fixture
def settings(running_lab: RunningLab, tmp_path: Path) -> Settings:
    return lab_settings(running_lab.lab, tmp_path / "app")


async def history(store: MetricsStore, kind: Kind, name: str, now: float) -> list[dict]:
    """The series' raw points of the hour before `now`, as dicts."""
    series = await store.known(kind.name, name)
    assert series is not None, name
    rows = await store.points(kind, series, RAW, now - 3600)
    return [dict(zip(("ts", *kind.columns), row, strict=True)) for row in rows]


async def test_server_metrics(settings: Settings, store: MetricsStore, lab: Lab) -> None:
    clients = [ProxmoxClient(server) for server in settings.proxmox_servers]
    collector = ProxmoxCollector(clients, store, FakeClock())
    before = {sid: host.requests.total() for sid, host in lab.proxmox.items()}
    for tick in (T0, T0 + 10, T0 + 20):
        await collector.collect_servers(tick)
    for sid, host in lab.proxmox.items():
        assert host.requests.total() - before[sid] == 3 * 2  # status + RRD, per cycle
    points = await history(store, SERVER, "nas", T0 + 30)
    assert [p["ts"] for p in points] == [T0, T0 + 10, T0 + 20]
    for point in points:
        assert 0 <= point["cpu_percent"] <= 100 and point["cpu_min"] == point["cpu_percent"]
        assert point["ram_total"] == 66571993088 and 0 < point["ram_percent"] < 100
        assert point["net_rx"] > 0 and point["net_tx"] > 0
        assert point["disk_read"] is None and point["disk_write"] is None
    for client in clients:
        await client.aclose()


async def test_one_server_down_is_retried_then_skipped(
    settings: Settings, store: MetricsStore, lab: Lab
) -> None:
    clients = [ProxmoxClient(server) for server in settings.proxmox_servers]
    clock = FakeClock()
    lab.proxmox["nas"].faults.mode = "drop"
    await ProxmoxCollector(clients, store, clock).collect_servers(T0)
    assert sorted(clock.slept) == [1, 1, 2, 2, 4, 4]  # two calls, each tried 4 times
    assert await store.known("server", "nas") is None
    assert len(await history(store, SERVER, "smart-home", T0 + 10)) == 1
    for client in clients:
        await client.aclose()


async def test_guest_metrics_rates_and_restarts(
    settings: Settings, store: MetricsStore, lab: Lab
) -> None:
    clients = [ProxmoxClient(server) for server in settings.proxmox_servers]
    collector = ProxmoxCollector(clients, store, FakeClock())
    before = lab.proxmox["nas"].requests.total()
    await collector.collect_guests(T0)
    await collector.collect_guests(T0 + 30)
    assert lab.proxmox["nas"].requests.total() - before == 2  # one call per cycle
    running = {vmid for vmid, g in lab.proxmox["nas"].guests.items() if g.running}
    for vmid in running:
        points = await history(store, VM, f"nas/{vmid}", T0 + 60)
        assert [p["ts"] for p in points] == [T0, T0 + 30]
        assert points[0]["net_rx"] is None  # a rate needs two readings
        assert points[1]["net_rx"] >= 0 and points[1]["disk_write"] >= 0
        assert points[1]["ram_total"] > 0
    stopped = next(v for v, g in lab.proxmox["nas"].guests.items() if not g.running)
    assert await store.known("vm", f"nas/{stopped}") is None  # stopped guests are skipped
    for client in clients:
        await client.aclose()


async def test_automation_deltas_survive_a_restart(
    settings: Settings, store: MetricsStore, lab: Lab
) -> None:
    client = AutomationClient(settings)
    collector = AutomationCollector(client, store, FakeClock())
    await collector.collect(T0)  # the first reading only sets the baseline
    assert await store.known("automation", NAME) is None
    await asyncio.sleep(1.2)  # let the simulated automations trigger
    await collector.collect(T0 + 5)
    before = (await client.automation(NAME)).mqtt.status
    assert before is not None and before.triggers_count  # a count to lose
    await client.control(NAME, ControlAction.restart)  # counters back to zero
    await asyncio.sleep(1.2)
    await collector.collect(T0 + 10)
    points = await history(store, AUTOMATION, NAME, T0 + 20)
    assert [p["ts"] for p in points] == [T0 + 5, T0 + 10]
    # The reset is counted as what happened since the restart, not as a negative spike.
    assert all(p["triggers_count"] >= 0 and p["errors_count"] >= 0 for p in points)
    await client.aclose()


async def test_device_tracker_keeps_changes_only(store: MetricsStore) -> None:
    async def nothing():  # the hub is not connected in this test: messages are fed directly
        yield {}

    clock = FakeClock()
    tracker = DeviceTracker(StreamHub("test", nothing, event="mqtt"), store, ["linkquality"], clock)
    door = "zigbee2mqtt/door"
    for payload in (
        {"contact": True, "linkquality": 100},
        {"contact": True, "linkquality": 80},  # only the ignored key moved: not a change
        {"contact": False, "linkquality": 80},
        {"contact": True, "linkquality": 80},  # the same millisecond: both are kept
    ):
        tracker.observe({"topic": door, "payload": payload, "timestamp": "t"})
    tracker.observe({"topic": "plain/text", "payload": "on", "timestamp": "t"})
    tracker.observe({"topic": "plain/text", "payload": "on", "timestamp": "t"})
    await tracker.flush()
    series = await store.known("device", door)
    assert series is not None
    states = (await store.device_points(series, 0)).rows()
    assert [json.loads(p)["state"]["contact"] for _, p in states] == [True, False, True]
    stamps = [ts for ts, _ in states]
    assert stamps == sorted(set(stamps)) and stamps[0] == T0 * 1000
    text = await store.known("device", "plain/text")
    assert text is not None and len((await store.device_points(text, 0)).stamps) == 1


def test_metrics_api_of_a_running_app(custom_app: Callable[..., AppServer], lab: Lab) -> None:
    """The real wiring: collectors on 1 s intervals, the tracker on the MQTT hub, the API."""
    server = custom_app(
        METRICS_ENABLED="true",
        METRICS_INTERVAL_SERVERS="1",
        METRICS_INTERVAL_VMS="1",
        METRICS_INTERVAL_AUTOMATIONS="1",
    )
    with authed(server) as api:
        deadline = time.monotonic() + 15
        while len(api.get("/api/metrics/server/nas").json().get("data", [])) < 3:
            assert time.monotonic() < deadline, "no server points"
            time.sleep(0.3)
        body = api.get("/api/metrics/server/nas", params={"period": "1h"}).json()
        assert (body["server_id"], body["period"], body["interval"]) == ("nas", "1h", 1)
        stamps = [p["timestamp"] for p in body["data"]]
        assert stamps == sorted(stamps)
        point = body["data"][-1]
        assert set(point) >= {
            "timestamp",
            "cpu_percent",
            "ram_used",
            "ram_total",
            "ram_percent",
            "disk_read",
            "disk_write",
            "net_rx",
            "net_tx",
        }
        assert isinstance(point["ram_used"], int) and point["disk_read"] is None
        for period in ("6h", "24h", "7d", "30d", "1y"):
            answer = api.get("/api/metrics/server/nas", params={"period": period}).json()
            assert (
                answer["interval"]
                == {"6h": 60, "24h": 60, "7d": 300, "30d": 1800, "1y": 3600}[period]
            )
        vm = api.get("/api/metrics/vm/nas/999").json()
        assert (vm["server_id"], vm["vmid"]) == ("nas", 999) and vm["data"]
        while not api.get("/api/metrics/automation/main/kitchen/motion_light").json().get("data"):
            assert time.monotonic() < deadline, "no automation points"
            time.sleep(0.3)
        api.post(
            "/api/mqtt/publish",
            json={
                "topic": "zigbee2mqtt/main-eduard-big-wardrobe-switch/set",
                "payload": {"state_left": "ON"},
            },
        )
        while (
            not api.get("/api/metrics/device/zigbee2mqtt/main-eduard-big-wardrobe-switch")
            .json()
            .get("data")
        ):
            assert time.monotonic() < deadline, "no device states"
            time.sleep(0.3)
        device = api.get("/api/metrics/device/zigbee2mqtt/main-eduard-big-wardrobe-switch").json()
        assert device["topic"] == "zigbee2mqtt/main-eduard-big-wardrobe-switch"
        assert device["data"][-1]["state"]["state_left"] == "ON"
        assert lab.mqtt.stream_connections == 1  # the tracker shares the hub's one connection

        assert_error(api.get("/api/metrics/server/nowhere"), 404, "NO_METRICS")
        assert_error(api.get("/api/metrics/server/nas", params={"period": "2h"}), 422)
        assert_error(api.get("/api/metrics/vm/nas/12"), 422)
        assert_error(api.get("/api/metrics/automation/..%2F..%2Fetc"), 422)
        assert_error(api.get("/api/metrics/device/no/such/topic"), 404, "NO_METRICS")


def stored_raw_sample(path: Path, ts: int) -> bool:
    """Whether the database file holds a server sample stamped `ts` (committed)."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        sql = "SELECT 1 FROM server_raw_0 WHERE ts = :ts UNION ALL SELECT 1 FROM server_raw_1 WHERE ts = :ts"
        return bool(connection.execute(sql, {"ts": ts}).fetchall())


def test_shutdown_commits_what_waits(custom_app: Callable[..., AppServer], lab: Lab) -> None:
    """Samples wait in memory for the next flush (every 10 minutes); the API shows them, and
    a graceful shutdown commits them."""
    server = custom_app(METRICS_ENABLED="true", METRICS_INTERVAL_SERVERS="1")
    path = server.settings.database_path
    with authed(server) as api:
        deadline = time.monotonic() + 15
        while True:  # a sample the API shows that the file does not hold yet
            data = api.get("/api/metrics/server/nas").json().get("data", [])
            if data and not stored_raw_sample(path, data[-1]["timestamp"]):
                break
            assert time.monotonic() < deadline, "no waiting sample"
            time.sleep(0.3)
    server.__exit__(None, None, None)
    assert stored_raw_sample(path, data[-1]["timestamp"])


def test_metrics_off(api: httpx2.Client) -> None:
    assert_error(api.get("/api/metrics/server/nas"), 503, "NOT_CONFIGURED")


def test_metrics_routes_answer_503_when_history_is_off(api: httpx2.Client) -> None:
    """The shared app runs with METRICS_ENABLED=false: every history route says so."""
    for path in (
        "/api/metrics/server/nas",
        "/api/metrics/vm/nas/101",
        "/api/metrics/automation/monitor",
        "/api/metrics/device/home/door",
    ):
        body = assert_error(api.get(path), 503, "NOT_CONFIGURED")
        assert "METRICS_ENABLED" in body["detail"]
