"""The MQTT API end to end: topics and publishing, over Basic auth."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest

from homepanel.simulator.lab import Lab
from tests.harness import AppServer, assert_error, authed

SWITCH = "zigbee2mqtt/main-eduard-big-wardrobe-switch"


def test_topics(api: httpx2.Client, lab: Lab) -> None:
    topics = api.get("/api/mqtt/topics").json()["topics"]
    assert len(topics) >= 30
    assert {t["path"] for t in topics} == set(lab.mqtt.topics)
    assert all({"path", "payload", "timestamp"} <= set(t) for t in topics)
    switch = next(t for t in topics if t["path"] == SWITCH)
    assert "state_left" in switch["payload"]


def test_publish_changes_the_device(api: httpx2.Client) -> None:
    for state in ("ON", "OFF"):
        response = api.post(
            "/api/mqtt/publish", json={"topic": f"{SWITCH}/set", "payload": {"state_left": state}}
        )
        assert response.json() == {"success": True, "message": "Сообщение опубликовано"}
        topics = {t["path"]: t["payload"] for t in api.get("/api/mqtt/topics").json()["topics"]}
        assert topics[SWITCH]["state_left"] == state


@pytest.mark.parametrize(
    "payload", [None, "plain text", 42, 1.5, True, [1, 2], {"nested": {"a": [None]}}]
)
def test_any_json_payload_is_sent_as_it_is(api: httpx2.Client, lab: Lab, payload: object) -> None:
    topic = "homepanel/test/payload"
    assert (
        api.post("/api/mqtt/publish", json={"topic": topic, "payload": payload}).status_code == 200
    )
    assert lab.mqtt.topics[topic] == payload


def test_topic_travels_as_one_query_value(api: httpx2.Client, lab: Lab) -> None:
    """`?`, `&`, `=`, `/` and non-ASCII in a topic cannot become another parameter or path."""
    topic = "home/odd?path=evil&x=1/../ключ"
    assert api.post("/api/mqtt/publish", json={"topic": topic, "payload": 1}).status_code == 200
    assert lab.mqtt.topics[topic] == 1
    assert "evil" not in lab.mqtt.topics


@pytest.mark.parametrize(
    "body",
    [
        {"topic": "", "payload": 1},
        {"topic": "home/+/light", "payload": 1},
        {"topic": "home/#", "payload": 1},
        {"topic": "home/\u0000", "payload": 1},
        {"topic": "t" * 65536, "payload": 1},
        {"topic": "home/x"},
        {"payload": 1},
        {"topic": 5, "payload": 1},
        [],
    ],
)
def test_bad_publish_requests_are_422(api: httpx2.Client, lab: Lab, body: object) -> None:
    before = lab.mqtt.requests.total()
    assert_error(api.post("/api/mqtt/publish", json=body), 422, "VALIDATION_ERROR")
    assert lab.mqtt.requests.total() == before


def test_wrong_credentials_name_the_variables(custom_app: Callable[..., AppServer]) -> None:
    with authed(custom_app(MQTT_API_PASSWORD="wrong")) as api:
        body = assert_error(api.get("/api/mqtt/topics"), 502, "UPSTREAM_AUTH_FAILED")
        assert_error(api.post("/api/mqtt/publish", json={"topic": "a", "payload": 1}), 502)
    assert (
        "MQTT_API_USERNAME / MQTT_API_PASSWORD" in body["detail"] and "wrong" not in body["detail"]
    )


@pytest.mark.parametrize(
    ("mode", "status"), [("drop", 502), ("html", 502), ("status", 502), ("garbage", 502)]
)
def test_broken_mqtt_api(api: httpx2.Client, lab: Lab, mode: str, status: int) -> None:
    lab.mqtt.faults.mode = mode
    assert_error(api.get("/api/mqtt/topics"), status)
    if mode in ("drop", "status"):  # a publish answered with garbage still reached the broker
        assert_error(api.post("/api/mqtt/publish", json={"topic": "a", "payload": 1}), status)
