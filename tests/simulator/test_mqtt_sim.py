"""The simulated MQTT API over real HTTP: topics, publishing, the live stream and its cuts."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import httpx2
import pytest
from aiohttp import web

from homepanel.simulator import faults, mqtt
from homepanel.simulator.mqtt import MqttApi
from tests.simulator.serving import served

USER, PASSWORD = "admin", "test"
NAIVE_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
LAST_SEEN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WARDROBE_DOOR = "zigbee2mqtt/main-eduard-big-wardrobe-left-door"
WARDROBE_SWITCH = "zigbee2mqtt/main-eduard-big-wardrobe-switch"
KITCHEN_TEMPERATURE = "zigbee2mqtt/kitchen-temperature"
KITCHEN_LIGHT = "zigbee2mqtt/kitchen-light"
QUIET = 3600.0  # an event interval long enough for no device to report during a test


class Sim(NamedTuple):
    api: MqttApi
    client: httpx2.AsyncClient
    runner: web.AppRunner


@asynccontextmanager
async def simulated(api: MqttApi) -> AsyncIterator[Sim]:
    """Serve `api` over HTTP on an ephemeral 127.0.0.1 port, with a client that signs in."""
    async with (
        served(api.app()) as (url, runner),
        httpx2.AsyncClient(base_url=url, auth=(USER, PASSWORD), timeout=5) as client,
    ):
        yield Sim(api, client, runner)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    """Devices that report fast."""
    async with simulated(
        MqttApi(username=USER, password=PASSWORD, seed=1, event_interval=0.02)
    ) as s:
        yield s


@pytest.fixture
async def quiet() -> AsyncIterator[Sim]:
    """Devices that stay silent unless told to change."""
    async with simulated(MqttApi(username=USER, password=PASSWORD, event_interval=QUIET)) as s:
        yield s


async def events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The `message` events of an SSE body, checking the framing on the way."""
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert event == "message"
            yield json.loads(line.removeprefix("data: "))
        else:
            assert line == "", line
            event = None


async def next_event(stream: AsyncIterator[dict[str, Any]], topic: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        async for event in stream:
            if event["topic"] == topic:
                return event
    raise AssertionError(f"the stream ended before a message on {topic}")


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for a condition that the server reaches asynchronously (a handler ending)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never got there")


async def topics(client: httpx2.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/topics")
    assert response.status_code == 200
    return {topic["path"]: topic for topic in response.json()["topics"]}


async def publish(client: httpx2.AsyncClient, path: str, payload: Any) -> httpx2.Response:
    return await client.post("/api/v1/topic", params={"path": path}, content=json.dumps(payload))


def without_report_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key not in ("linkquality", "last_seen")}


# -- authentication and faults ----------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("root", PASSWORD)])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/topics"), ("POST", "/api/v1/topic?path=a"), ("GET", "/api/v1/stream")],
)
async def test_every_path_requires_basic_auth(
    quiet: Sim, auth: tuple[str, str] | None, method: str, path: str
) -> None:
    base_url = str(quiet.client.base_url)
    async with httpx2.AsyncClient(base_url=base_url, auth=auth) as stranger:
        response = await stranger.request(method, path, content=b"1")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid credentials"}
    assert response.headers["www-authenticate"].startswith("Basic")
    assert quiet.api.stream_connects == 0


async def test_fault_knobs_act_before_authentication(quiet: Sim) -> None:
    quiet.api.faults.mode = "status"
    async with httpx2.AsyncClient(base_url=str(quiet.client.base_url)) as stranger:
        response = await stranger.get("/api/v1/topics")
    assert response.status_code == 502
    assert quiet.api.requests["GET /api/v1/topics"] == 1


# -- topics -----------------------------------------------------------------------------------


async def test_topics_list_zigbee2mqtt_devices_with_their_last_message(quiet: Sim) -> None:
    listed = await topics(quiet.client)
    devices = {path for path in listed if path != mqtt.BRIDGE_STATE}
    assert len(devices) == len(mqtt.DEVICES) >= 35
    assert all(re.fullmatch(r"zigbee2mqtt/[a-z]+(-[a-z]+)+", path) for path in devices)
    for path in devices:
        payload = listed[path]["payload"]
        assert 0 <= payload["linkquality"] <= 255
        assert LAST_SEEN.match(payload["last_seen"])
        assert NAIVE_ISO.match(listed[path]["timestamp"])
    assert listed[WARDROBE_DOOR]["payload"].keys() >= {"contact", "battery", "voltage"}
    assert listed[WARDROBE_SWITCH]["payload"]["state_left"] in ("ON", "OFF")
    assert listed[KITCHEN_TEMPERATURE]["payload"].keys() >= {"temperature", "humidity", "battery"}
    assert listed[KITCHEN_LIGHT]["payload"].keys() >= {"state", "brightness", "color_temp"}
    assert listed[mqtt.BRIDGE_STATE]["payload"] == {"state": "online"}
    assert {path: topic["payload"] for path, topic in listed.items()} == quiet.api.topics


async def test_the_same_seed_builds_the_same_devices() -> None:
    first, second, other = (
        MqttApi(username=USER, password=PASSWORD, seed=seed) for seed in (7, 7, 8)
    )
    assert first.topics.keys() == second.topics.keys() == other.topics.keys()
    same = [without_report_fields(first.topics[topic]) for topic in first.topics]
    assert same == [without_report_fields(second.topics[topic]) for topic in second.topics]
    assert same != [without_report_fields(other.topics[topic]) for topic in other.topics]


# -- publishing -------------------------------------------------------------------------------


async def test_set_changes_the_device_and_publishes_its_full_state(quiet: Sim) -> None:
    before = quiet.api.topics[WARDROBE_SWITCH]
    wanted = "OFF" if before["state_left"] == "ON" else "ON"
    async with quiet.client.stream("GET", "/api/v1/stream") as stream:
        response = await publish(quiet.client, f"{WARDROBE_SWITCH}/set", {"state_left": wanted})
        assert response.status_code == 200
        assert response.json() == {"success": True, "topic": f"{WARDROBE_SWITCH}/set"}
        event = await next_event(events(stream.aiter_lines()), WARDROBE_SWITCH)
    assert event["payload"]["state_left"] == wanted
    assert event["payload"]["state_right"] == before["state_right"]
    assert event["payload"]["linkquality"] != before["linkquality"]
    assert NAIVE_ISO.match(event["timestamp"])
    listed = await topics(quiet.client)
    assert listed[WARDROBE_SWITCH]["payload"] == event["payload"]
    assert listed[WARDROBE_SWITCH]["timestamp"] == event["timestamp"]
    assert f"{WARDROBE_SWITCH}/set" not in listed


async def test_set_takes_what_zigbee2mqtt_takes_and_ignores_the_rest(quiet: Sim) -> None:
    before = quiet.api.topics[KITCHEN_LIGHT]
    command = {"state": "toggle", "brightness": 999, "temperature": 3, "color_temp": "warm"}
    await publish(quiet.client, f"{KITCHEN_LIGHT}/set", command)
    after = quiet.api.topics[KITCHEN_LIGHT]
    assert after["state"] == ("OFF" if before["state"] == "ON" else "ON")
    assert after["brightness"] == 254
    assert after["color_temp"] == before["color_temp"]
    assert "temperature" not in after
    await publish(quiet.client, f"{KITCHEN_LIGHT}/set", "ON")  # not an object: ignored
    await publish(quiet.client, f"{KITCHEN_LIGHT}/set", {"state": "MAYBE"})
    assert quiet.api.topics[KITCHEN_LIGHT]["state"] == after["state"]


@pytest.mark.parametrize("payload", [{"a": [1, 2]}, "text", 42, 2.5, None, True, [1, "x"]])
async def test_any_other_topic_stores_any_json_value(quiet: Sim, payload: Any) -> None:
    async with quiet.client.stream("GET", "/api/v1/stream") as stream:
        response = await publish(quiet.client, "home/notes/today", payload)
        event = await next_event(events(stream.aiter_lines()), "home/notes/today")
    assert response.json() == {"success": True, "topic": "home/notes/today"}
    assert event["payload"] == payload
    assert (await topics(quiet.client))["home/notes/today"]["payload"] == payload


async def test_a_message_on_a_device_topic_lasts_until_the_device_reports(quiet: Sim) -> None:
    door = quiet.api.topics[WARDROBE_DOOR]
    await publish(quiet.client, WARDROBE_DOOR, "spoofed")
    assert quiet.api.topics[WARDROBE_DOOR] == "spoofed"
    await publish(quiet.client, f"{WARDROBE_DOOR}/set", {"contact": not door["contact"]})
    reported = quiet.api.topics[WARDROBE_DOOR]  # a contact sensor cannot be set, only report
    assert without_report_fields(reported) == without_report_fields(door)


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ({}, b"{}"),
        ({"path": ""}, b"{}"),
        ({"path": "zigbee2mqtt/+/set"}, b"{}"),
        ({"path": "zigbee2mqtt/#"}, b"{}"),
        ({"path": "a/b"}, b""),
        ({"path": "a/b"}, b"{not json"),
        ({"path": "a/b"}, b"NaN"),
        ({"path": "a/b"}, b"\xff"),
    ],
)
async def test_bad_publishes_are_refused(quiet: Sim, query: dict[str, str], body: bytes) -> None:
    before = dict(quiet.api.topics)
    response = await quiet.client.post("/api/v1/topic", params=query, content=body)
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert quiet.api.topics == before


# -- living devices and the stream ------------------------------------------------------------


async def test_devices_keep_reporting(sim: Sim) -> None:
    initial = dict(sim.api.topics)
    seen: dict[str, dict[str, Any]] = {}
    changes = 0
    async with sim.client.stream("GET", "/api/v1/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        async with asyncio.timeout(5):
            async for event in events(stream.aiter_lines()):
                topic, payload = event["topic"], event["payload"]
                previous = seen.get(topic, initial[topic])
                assert payload["linkquality"] != previous["linkquality"]
                assert payload["last_seen"] != previous["last_seen"]
                changes += without_report_fields(payload) != without_report_fields(previous)
                seen[topic] = payload
                if len(seen) >= 10 and changes >= 2:
                    break
    assert all(sim.api.topics[topic] is not initial[topic] for topic in seen)


async def test_an_idle_stream_sends_keepalive_comments(
    quiet: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faults, "KEEPALIVE", 0.05)
    async with quiet.client.stream("GET", "/api/v1/stream") as stream:
        lines = stream.aiter_lines()
        assert await anext(lines) == ": keepalive"
        assert await anext(lines) == ""


async def test_streams_are_counted_while_open_and_in_total(quiet: Sim) -> None:
    api = quiet.api
    assert (api.stream_connections, api.stream_connects) == (0, 0)
    async with (
        quiet.client.stream("GET", "/api/v1/stream"),
        quiet.client.stream("GET", "/api/v1/stream"),
    ):
        assert (api.stream_connections, api.stream_connects) == (2, 2)
    await eventually(lambda: api.stream_connections == 0)
    async with quiet.client.stream("GET", "/api/v1/stream"):
        assert (api.stream_connections, api.stream_connects) == (1, 3)
        api.reset()
        assert (api.stream_connections, api.stream_connects) == (1, 0)


async def test_cut_streams_drops_every_open_stream_mid_body(quiet: Sim) -> None:
    async def read_until_cut(stream: httpx2.Response) -> None:
        with pytest.raises(httpx2.RemoteProtocolError):
            async for _ in stream.aiter_lines():
                pass

    async with (
        quiet.client.stream("GET", "/api/v1/stream") as first,
        quiet.client.stream("GET", "/api/v1/stream") as second,
    ):
        await publish(quiet.client, "a/b", 1)  # both are really streaming
        quiet.api.cut_streams()
        async with asyncio.timeout(5):
            await asyncio.gather(read_until_cut(first), read_until_cut(second))
    await eventually(lambda: quiet.api.stream_connections == 0)
    async with quiet.client.stream("GET", "/api/v1/stream") as again:
        await publish(quiet.client, "a/b", 2)
        assert (await next_event(events(again.aiter_lines()), "a/b"))["payload"] == 2
        assert quiet.api.stream_connects == 3


async def test_stopping_the_server_ends_open_streams_at_once(quiet: Sim) -> None:
    async with quiet.client.stream("GET", "/api/v1/stream") as stream:
        started = time.monotonic()
        await quiet.runner.cleanup()
        assert [line async for line in stream.aiter_lines()] == []  # a clean end of body
    assert time.monotonic() - started < 1


async def test_reset_brings_every_device_back(quiet: Sim) -> None:
    initial = dict(quiet.api.topics)
    await publish(quiet.client, f"{KITCHEN_LIGHT}/set", {"state": "TOGGLE"})
    await publish(quiet.client, "a/b", 1)
    quiet.api.faults.latency = 1
    quiet.api.reset()
    assert quiet.api.topics == initial
    assert quiet.api.faults.latency == 0
    assert quiet.api.requests == {}


async def test_cut_streams_over_http(sim: Sim) -> None:
    async with sim.client.stream("GET", "/api/v1/stream") as response:
        assert sim.api.stream_connections == 1
        cut = await sim.client.post("/_sim/cut-streams")
        assert cut.json() == {"cut": 1}
        with pytest.raises(httpx2.HTTPError):
            async for _ in response.aiter_lines():
                pass
