"""The Automation API end to end: list, detail (names with `/`), control."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest

from homepanel.simulator.lab import Lab
from tests.harness import AppServer, assert_error, authed

NAME = "main/kitchen/motion_light"
CONTAINER = "automation-main-kitchen-motion_light"
KEYS = {"container_name", "automation_name", "container", "mqtt", "health"}


def test_list(api: httpx2.Client) -> None:
    body = api.get("/api/automations").json()
    assert body["total"] == len(body["automations"]) >= 10
    assert body["running"] + body["stopped"] == body["total"] and body["stopped"] >= 1
    assert all(set(a) >= KEYS for a in body["automations"])
    assert any("/" in a["automation_name"] for a in body["automations"])


@pytest.mark.parametrize("name", [NAME, CONTAINER])
def test_detail_by_automation_or_container_name(api: httpx2.Client, name: str) -> None:
    body = api.get(f"/api/automations/{name}").json()
    assert (body["automation_name"], body["container_name"]) == (NAME, CONTAINER)
    assert body["container"]["status"] == "running"
    assert body["mqtt"]["status"]["triggers_count"] >= 0
    assert set(body["health"]) >= {"overall", "docker_running", "mqtt_responding"}


def test_restart_resets_uptime(api: httpx2.Client) -> None:
    before = api.get(f"/api/automations/{NAME}").json()
    result = api.post(f"/api/automations/{NAME}/restart").json()
    assert result == {
        "success": True,
        "action": "restart",
        "container_name": CONTAINER,
        "message": "Контейнер перезапущен",
        "new_status": "running",
    }
    after = api.get(f"/api/automations/{NAME}").json()
    assert after["container"]["uptime_seconds"] < before["container"]["uptime_seconds"]


def test_stop_and_start(api: httpx2.Client) -> None:
    assert api.post(f"/api/automations/{CONTAINER}/stop").json()["new_status"] == "exited"
    assert api.get(f"/api/automations/{NAME}").json()["container"]["status"] == "exited"
    assert api.post(f"/api/automations/{NAME}/start").json()["new_status"] == "running"


def test_unknown_automation_and_action(api: httpx2.Client, lab: Lab) -> None:
    assert_error(api.get("/api/automations/main/no/such"), 404, "NOT_FOUND")
    assert_error(api.post("/api/automations/no-such/restart"), 404, "NOT_FOUND")
    assert_error(api.post(f"/api/automations/{NAME}/explode"), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "main/../../etc",
        "main/..%2F..%2Fcontrol",
        "main%5Ckitchen",
        "main/kitchen%3Fx=1",
        "main/kitchen%23frag",
        "main//kitchen",
        "main/kitchen/",
        "%2Fmain",
        "main/k%00itchen",
        "main/k%0Aitchen",
        "n" * 300,
        "küche/licht",
        "main/kitchen motion",
    ],
)
def test_name_injection_never_reaches_the_upstream(api: httpx2.Client, lab: Lab, name: str) -> None:
    before = lab.automations.requests.total()
    for response in (
        api.get(f"/api/automations/{name}"),
        api.post(f"/api/automations/{name}/restart"),
    ):
        assert response.status_code in (404, 405, 422), (name, response.text)
        assert_error(response, response.status_code)
    assert lab.automations.requests.total() == before


def test_wrong_credentials(custom_app: Callable[..., AppServer]) -> None:
    with authed(custom_app(AUTOMATION_API_USERNAME="nobody")) as api:
        body = assert_error(api.get("/api/automations"), 502, "UPSTREAM_AUTH_FAILED")
    assert "AUTOMATION_API_USERNAME / AUTOMATION_API_PASSWORD" in body["detail"]


@pytest.mark.parametrize("mode", ["drop", "html", "status", "garbage", "hang"])
def test_broken_automation_api(
    custom_app: Callable[..., AppServer], lab: Lab, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from homepanel.automations import client

    monkeypatch.setattr(client, "TIMEOUT", 0.5)
    with authed(custom_app()) as api:
        lab.automations.faults.mode = mode
        assert_error(api.get("/api/automations"), 504 if mode == "hang" else 502)
        assert_error(api.post(f"/api/automations/{NAME}/restart"), 504 if mode == "hang" else 502)
