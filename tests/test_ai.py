"""The AI hub's REST part end to end: processes and cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx2
import pytest

from homepanel.simulator.lab import Lab
from tests.harness import AppServer, assert_error, authed


def test_no_processes(api: httpx2.Client) -> None:
    assert api.get("/api/ai/processes").json() == {"processes": [], "count": 0}


def open_chat_on_the_hub(lab: Lab) -> threading.Thread:
    """A chat started straight on the hub (the panel's own chat stream is the next issue)."""

    def chat() -> None:
        with (
            httpx2.Client(auth=lab.users["ai"], timeout=30) as client,
            client.stream(
                "POST", f"{lab.urls['ai']}/chat", json={"message": "check the disks"}
            ) as response,
        ):
            for _ in response.iter_lines():
                pass

    thread = threading.Thread(target=chat, daemon=True)
    thread.start()
    return thread


def test_list_and_cancel_a_running_chat(api: httpx2.Client, lab: Lab) -> None:
    thread = open_chat_on_the_hub(lab)
    deadline = time.monotonic() + 5
    while not (processes := api.get("/api/ai/processes").json())["count"]:
        assert time.monotonic() < deadline, "the chat never showed up"
        time.sleep(0.05)
    process = processes["processes"][0]
    assert {"process_id", "cwd", "model", "started_at", "session_id"} <= set(process)
    result = api.delete(f"/api/ai/chat/{process['process_id']}").json()
    assert result == {"status": "cancelled", "process_id": process["process_id"]}
    thread.join(10)
    assert not thread.is_alive()  # the cancelled stream ended
    assert lab.ai.cancelled == [process["process_id"]]


def test_cancel_unknown_process_is_404(api: httpx2.Client) -> None:
    assert_error(api.delete("/api/ai/chat/00000000-0000-0000-0000-000000000000"), 404, "NOT_FOUND")


@pytest.mark.parametrize("process_id", ["..", "a%2Fb", "x%3Fy", "x%23y", "p" * 65, "%C3%A9", "a.b"])
def test_process_id_injection(api: httpx2.Client, lab: Lab, process_id: str) -> None:
    before = lab.ai.requests.total()
    response = api.delete(f"/api/ai/chat/{process_id}")
    assert response.status_code in (404, 405, 422), response.text
    assert lab.ai.requests.total() == before


def test_wrong_credentials(custom_app: Callable[..., AppServer]) -> None:
    with authed(custom_app(AI_HUB_PASSWORD="nope")) as api:
        body = assert_error(api.get("/api/ai/processes"), 502, "UPSTREAM_AUTH_FAILED")
    assert "AI_HUB_USERNAME / AI_HUB_PASSWORD" in body["detail"]


def test_cancel_with_the_cookie_needs_csrf_proof(app_server: AppServer) -> None:
    from homepanel.core.auth import COOKIE_NAME

    with httpx2.Client(
        base_url=app_server.url, cookies={COOKIE_NAME: app_server.login()}
    ) as browser:
        assert_error(browser.delete("/api/ai/chat/abc"), 403, "CSRF_CHECK_FAILED")
        assert_error(browser.delete("/api/ai/chat/abc", headers={"X-Requested-With": "fetch"}), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/api/frigate/cameras",
        "/api/frigate/camera/cam/snapshot",
        "/api/mqtt/topics",
        "/api/automations",
        "/api/automations/a/b",
        "/api/ai/processes",
    ],
)
def test_unconfigured_upstreams_are_503(custom_app: Callable[..., AppServer], path: str) -> None:
    server = custom_app(FRIGATE_URL="", MQTT_API_URL="", AUTOMATION_API_URL="", AI_HUB_URL="")
    with authed(server) as api:
        body = assert_error(api.get(path), 503, "NOT_CONFIGURED")
    assert "_URL" in body["detail"]


@pytest.mark.parametrize(
    ("module", "path"), [("mqtt", "/api/mqtt/topics"), ("ai", "/api/ai/processes")]
)
def test_slow_upstream_is_504(
    custom_app: Callable[..., AppServer],
    lab: Lab,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    path: str,
) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module(f"homepanel.{module}.client"), "TIMEOUT", 0.5)
    with authed(custom_app()) as api:
        getattr(lab, module).faults.mode = "hang"
        assert_error(api.get(path), 504, "UPSTREAM_TIMEOUT")
