"""The simulated Automation API over real HTTP: list, detail, control and the log stream."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

import httpx2
import pytest
from aiohttp import web

from homepanel.simulator import automations, faults
from homepanel.simulator.automations import AutomationApi
from tests.simulator.serving import served

USER, PASSWORD = "admin", "test"
KITCHEN = "main/kitchen/motion_light"
KITCHEN_CONTAINER = "automation-main-kitchen-motion_light"
IRRIGATION = "outdoor/garden/irrigation"  # stopped
HEATING = "climate/bedroom/heating"  # running, but its MQTT client hangs
NAIVE_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
LOG_LINE = re.compile(
    r"^(?P<docker>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) "
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - \w+ - (?:DEBUG|INFO|WARNING|ERROR) - .+$"
)
QUIET = 3600.0  # a log interval long enough for no automation to step during a test


class Sim(NamedTuple):
    api: AutomationApi
    client: httpx2.AsyncClient
    runner: web.AppRunner


@asynccontextmanager
async def simulated(api: AutomationApi) -> AsyncIterator[Sim]:
    """Serve `api` over HTTP on an ephemeral 127.0.0.1 port, with a client that signs in."""
    async with (
        served(api.app()) as (url, runner),
        httpx2.AsyncClient(base_url=url, auth=(USER, PASSWORD), timeout=5) as client,
    ):
        yield Sim(api, client, runner)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    """Automations that step fast."""
    api = AutomationApi(username=USER, password=PASSWORD, seed=1, log_interval=0.02)
    async with simulated(api) as s:
        yield s


@pytest.fixture
async def quiet() -> AsyncIterator[Sim]:
    """Automations that write nothing unless controlled."""
    async with simulated(AutomationApi(username=USER, password=PASSWORD, log_interval=QUIET)) as s:
        yield s


async def detail(client: httpx2.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get(f"/api/automations/{name}")
    assert response.status_code == 200
    return response.json()


async def control(client: httpx2.AsyncClient, name: str, action: str) -> httpx2.Response:
    return await client.post(f"/api/control/{name}/{action}")


async def log_lines(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `log` events of an SSE body, checking the framing on the way."""
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert event == "log"
            data = line.removeprefix("data: ")
            assert LOG_LINE.match(data), data
            yield data
        else:
            assert line == "", line
            event = None


async def whole_log(client: httpx2.AsyncClient, name: str, **params: Any) -> list[str]:
    """A log stream that ends by itself: the automation is stopped or stops."""
    async with asyncio.timeout(5), client.stream("GET", f"/api/logs/{name}", params=params) as s:
        assert s.status_code == 200
        return [line async for line in log_lines(s.aiter_lines())]


def logged_at(line: str) -> datetime:
    """The Docker timestamp of a log line, to the microsecond."""
    match = LOG_LINE.match(line)
    assert match is not None
    seconds, _, fraction = match["docker"].removesuffix("Z").partition(".")
    moment = datetime.fromisoformat(seconds).replace(tzinfo=UTC)
    return moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for something the automations do on their own."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the automations never got there")


def counters(api: AutomationApi, name: str) -> tuple[int, int]:
    found = api.automation(name)
    assert found is not None
    status = found["mqtt"]["status"]
    return status["triggers_count"], status["errors_count"]


# -- authentication and faults ----------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, (USER, "wrong")])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/automations"),
        ("GET", f"/api/automations/{KITCHEN}"),
        ("POST", f"/api/control/{KITCHEN}/stop"),
        ("GET", f"/api/logs/{KITCHEN}"),
        ("GET", "/api/nowhere"),
    ],
)
async def test_every_path_requires_basic_auth(
    quiet: Sim, auth: tuple[str, str] | None, method: str, path: str
) -> None:
    async with httpx2.AsyncClient(base_url=str(quiet.client.base_url), auth=auth) as stranger:
        response = await stranger.request(method, path)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid credentials"}
    assert response.headers["www-authenticate"].startswith("Basic")
    assert (await detail(quiet.client, KITCHEN))["container"]["status"] == "running"


async def test_fault_knobs_act_before_authentication(quiet: Sim) -> None:
    quiet.api.faults.mode = "html"
    async with httpx2.AsyncClient(base_url=str(quiet.client.base_url)) as stranger:
        response = await stranger.get("/api/automations")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


# -- list and detail --------------------------------------------------------------------------


async def test_list_counts_and_shapes(quiet: Sim) -> None:
    response = await quiet.client.get("/api/automations")
    assert response.status_code == 200
    listing = response.json()
    items = listing["automations"]
    assert (listing["total"], listing["running"], listing["stopped"]) == (11, 9, 2)
    assert len(items) == 11
    for item in items:
        assert item["container_name"] == "automation-" + item["automation_name"].replace("/", "-")
        assert re.fullmatch(r"[0-9a-f]{12}", item["container"]["id"])
        assert item["container"]["status"] in ("running", "exited")
        status = item["mqtt"]["status"]
        assert status.keys() == {
            "status",
            "uptime",
            "triggers_count",
            "errors_count",
            "last_trigger",
        }
        assert NAIVE_ISO.match(status["last_trigger"])
        assert item["health"].keys() == {"overall", "docker_running", "mqtt_responding"}
        assert item == quiet.api.automation(item["automation_name"])
    by_health = {item["automation_name"]: item["health"]["overall"] for item in items}
    assert by_health[IRRIGATION] == "stopped"
    assert by_health[HEATING] == "unhealthy"
    assert list(by_health.values()).count("healthy") == 8
    assert {"monitor", KITCHEN, "main/hallway/night_light", "main/eduard/wardrobe_light"} <= set(
        by_health
    )


async def test_states_are_consistent(quiet: Sim) -> None:
    stopped = await detail(quiet.client, IRRIGATION)
    assert stopped["container"]["status"] == "exited"
    assert stopped["container"]["uptime_seconds"] == 0
    assert stopped["mqtt"]["status"]["status"] == "stopped"
    assert stopped["health"] == {
        "overall": "stopped",
        "docker_running": False,
        "mqtt_responding": False,
    }
    hung = await detail(quiet.client, HEATING)
    assert hung["container"]["status"] == "running"
    assert hung["health"] == {
        "overall": "unhealthy",
        "docker_running": True,
        "mqtt_responding": False,
    }
    running = await detail(quiet.client, KITCHEN)
    assert running["container"]["uptime_seconds"] >= running["mqtt"]["status"]["uptime"] > 0


@pytest.mark.parametrize("name", [KITCHEN, "main%2Fkitchen%2Fmotion_light", KITCHEN_CONTAINER])
async def test_detail_by_automation_name_or_container_name(quiet: Sim, name: str) -> None:
    found = await detail(quiet.client, name)
    assert found["automation_name"] == KITCHEN
    assert found["container_name"] == KITCHEN_CONTAINER
    assert quiet.api.automation(KITCHEN_CONTAINER) == found


@pytest.mark.parametrize("name", ["nope", "main/kitchen", "main/kitchen/motion_light/extra"])
async def test_unknown_automations_are_404(quiet: Sim, name: str) -> None:
    for response in (
        await quiet.client.get(f"/api/automations/{name}"),
        await control(quiet.client, name, "restart"),
        await quiet.client.get(f"/api/logs/{name}"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Automation not found"}
    assert quiet.api.automation(name) is None


# -- living automations -----------------------------------------------------------------------


async def test_running_automations_trigger_and_stopped_or_hung_ones_do_not(sim: Sim) -> None:
    api = sim.api
    start = {name: counters(api, name) for name in (KITCHEN, "monitor", IRRIGATION, HEATING)}
    await eventually(
        lambda: all(counters(api, name)[0] > start[name][0] for name in (KITCHEN, "monitor"))
    )
    assert counters(api, IRRIGATION) == start[IRRIGATION]
    assert counters(api, HEATING) == start[HEATING]
    kitchen = api.automation(KITCHEN)
    assert kitchen is not None
    last_trigger = datetime.fromisoformat(kitchen["mqtt"]["status"]["last_trigger"])
    assert abs(last_trigger.timestamp() - time.time()) < 5


async def test_uptime_grows_in_real_time(quiet: Sim) -> None:
    await control(quiet.client, KITCHEN, "restart")
    await asyncio.sleep(1.05)
    restarted = await detail(quiet.client, KITCHEN)
    assert 1 <= restarted["container"]["uptime_seconds"] <= 2


# -- control ----------------------------------------------------------------------------------


async def test_restart_starts_a_new_process_with_zero_counters(sim: Sim) -> None:
    before = await detail(sim.client, KITCHEN)
    assert before["mqtt"]["status"]["triggers_count"] > 0
    response = await control(sim.client, KITCHEN, "restart")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "action": "restart",
        "container_name": KITCHEN_CONTAINER,
        "message": "Контейнер перезапущен",
        "new_status": "running",
    }
    after = sim.api.automation(KITCHEN)
    assert after is not None
    assert after["container"]["id"] == before["container"]["id"]
    assert after["container"]["uptime_seconds"] == after["mqtt"]["status"]["uptime"] == 0
    assert after["mqtt"]["status"]["triggers_count"] < before["mqtt"]["status"]["triggers_count"]
    await eventually(lambda: counters(sim.api, KITCHEN)[0] > 0)  # and it counts again


async def test_stop_and_start(quiet: Sim) -> None:
    before = await detail(quiet.client, KITCHEN)
    stopped = await control(quiet.client, "main%2Fkitchen%2Fmotion_light", "stop")
    assert stopped.json() == {
        "success": True,
        "action": "stop",
        "container_name": KITCHEN_CONTAINER,
        "message": "Контейнер остановлен",
        "new_status": "exited",
    }
    listing = (await quiet.client.get("/api/automations")).json()
    assert (listing["running"], listing["stopped"]) == (8, 3)
    after_stop = await detail(quiet.client, KITCHEN)
    assert after_stop["health"]["overall"] == "stopped"
    assert (
        after_stop["mqtt"]["status"]["triggers_count"]
        == (before["mqtt"]["status"]["triggers_count"])
    )
    assert (await control(quiet.client, KITCHEN, "stop")).json()["new_status"] == "exited"

    started = await control(quiet.client, KITCHEN_CONTAINER, "start")
    assert started.json()["message"] == "Контейнер запущен"
    assert started.json()["new_status"] == "running"
    status = (await detail(quiet.client, KITCHEN))["mqtt"]["status"]
    assert (status["triggers_count"], status["errors_count"], status["last_trigger"]) == (
        0,
        0,
        None,
    )


async def test_start_leaves_a_running_automation_alone(quiet: Sim) -> None:
    before = await detail(quiet.client, KITCHEN)
    response = await control(quiet.client, KITCHEN, "start")
    assert response.json()["new_status"] == "running"
    after = await detail(quiet.client, KITCHEN)
    assert after["mqtt"]["status"] == before["mqtt"]["status"]


async def test_restart_cures_the_hung_automation_and_starts_a_stopped_one(quiet: Sim) -> None:
    await control(quiet.client, HEATING, "restart")
    assert (await detail(quiet.client, HEATING))["health"]["overall"] == "healthy"
    response = await control(quiet.client, IRRIGATION, "restart")
    assert response.json()["new_status"] == "running"
    assert (await detail(quiet.client, IRRIGATION))["health"]["overall"] == "healthy"


@pytest.mark.parametrize("action", ["explode", "Restart", "kill"])
async def test_unknown_actions_are_refused(quiet: Sim, action: str) -> None:
    response = await control(quiet.client, KITCHEN, action)
    assert response.status_code == 400
    assert "detail" in response.json()
    assert (await detail(quiet.client, KITCHEN))["container"]["status"] == "running"


async def test_reset_brings_every_automation_back(quiet: Sim) -> None:
    initial = (await quiet.client.get("/api/automations")).json()
    await control(quiet.client, KITCHEN, "stop")
    await control(quiet.client, IRRIGATION, "start")
    quiet.api.faults.mode = "drop"
    quiet.api.reset()
    assert quiet.api.faults.mode is None
    again = (await quiet.client.get("/api/automations")).json()
    for item in (*initial["automations"], *again["automations"]):
        del item["container"]["uptime_seconds"], item["mqtt"]["status"]["uptime"]
    assert again == initial


# -- logs -------------------------------------------------------------------------------------


async def test_a_stopped_automation_logs_its_tail_and_ends(quiet: Sim) -> None:
    five = await whole_log(quiet.client, IRRIGATION, lines=5)
    six = await whole_log(quiet.client, IRRIGATION, lines=6)
    assert len(five) == 5
    assert six[1:] == five
    assert five[-1].endswith("Disconnected from MQTT broker")
    assert len(await whole_log(quiet.client, IRRIGATION)) == automations.DEFAULT_LINES
    assert await whole_log(quiet.client, IRRIGATION, lines=0) == []
    everything = await whole_log(quiet.client, IRRIGATION, lines=100_000)
    assert automations.DEFAULT_LINES < len(everything) < 100_000
    assert everything[-5:] == five
    assert [logged_at(line) for line in everything] == sorted(map(logged_at, everything))


async def test_a_running_automation_logs_its_tail_then_live_lines(sim: Sim) -> None:
    async with (
        asyncio.timeout(5),
        sim.client.stream("GET", f"/api/logs/{KITCHEN}", params={"lines": 3}) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        connected = datetime.now(UTC)
        received = []
        async for line in log_lines(stream.aiter_lines()):
            received.append(line)
            if len(received) == 8:
                break
    moments = [logged_at(line) for line in received]
    assert moments == sorted(moments)
    assert all(moment <= connected for moment in moments[:3])
    assert moments[-1] > connected


async def test_stopping_an_automation_ends_its_log_streams(quiet: Sim) -> None:
    async with (
        asyncio.timeout(5),
        quiet.client.stream("GET", f"/api/logs/{KITCHEN}", params={"lines": 1}) as stream,
    ):
        lines = log_lines(stream.aiter_lines())
        first = await anext(lines)
        await control(quiet.client, KITCHEN_CONTAINER, "restart")
        rest = [line async for line in lines]  # ends with the container, as docker logs -f
    assert [line.rsplit(" - ", 1)[1] for line in rest] == [
        "Received SIGTERM, shutting down",
        "Disconnected from MQTT broker",
    ]
    assert logged_at(first) < logged_at(rest[0])
    await control(quiet.client, KITCHEN, "stop")  # so that the next stream ends by itself
    after = await whole_log(quiet.client, KITCHEN, lines=6)
    assert [line.rsplit(" - ", 1)[1] for line in after] == [
        "Received SIGTERM, shutting down",
        "Disconnected from MQTT broker",
        f"Starting automation {KITCHEN}",
        "Connected to MQTT broker at mosquitto:1883",
        "Received SIGTERM, shutting down",
        "Disconnected from MQTT broker",
    ]


@pytest.mark.parametrize("lines", ["abc", "-1", "1.5", ""])
async def test_bad_lines_are_refused(quiet: Sim, lines: str) -> None:
    response = await quiet.client.get(f"/api/logs/{KITCHEN}", params={"lines": lines})
    assert response.status_code == 400
    assert "detail" in response.json()


async def test_an_idle_log_stream_sends_keepalive_comments(
    quiet: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faults, "KEEPALIVE", 0.05)
    async with quiet.client.stream("GET", f"/api/logs/{KITCHEN}", params={"lines": 0}) as stream:
        lines = stream.aiter_lines()
        assert await anext(lines) == ": keepalive"
        assert await anext(lines) == ""


async def test_stopping_the_server_ends_open_log_streams_at_once(quiet: Sim) -> None:
    async with quiet.client.stream("GET", f"/api/logs/{KITCHEN}", params={"lines": 0}) as stream:
        started = time.monotonic()
        await quiet.runner.cleanup()
        assert [line async for line in stream.aiter_lines()] == []
    assert time.monotonic() - started < 1
