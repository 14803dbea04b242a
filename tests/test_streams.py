"""Live streams over real sockets: the MQTT hub's fan-out, the log and chat relays, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx2
import pytest
from aiohttp import web

from homepanel.core.auth import COOKIE_NAME
from homepanel.simulator.lab import Lab
from homepanel.streams import hub as hub_module
from tests.harness import AppServer, BackgroundLoop, RunningLab, assert_error, authed, lab_settings

SWITCH = "zigbee2mqtt/main-eduard-big-wardrobe-switch"
AppFactory = Callable[..., AppServer]


def eventually(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never became true"
        time.sleep(0.02)


@asynccontextmanager
async def sse(server: AppServer, path: str, *, jwt: str, **kwargs: Any) -> AsyncIterator[Any]:
    """An EventSource-like reader: yields an async iterator of parsed events."""
    headers = {"Authorization": f"Bearer {jwt}", **kwargs.pop("headers", {})}
    async with (
        httpx2.AsyncClient(base_url=server.url, timeout=30) as client,
        client.sse(path, headers=headers, **kwargs) as source,
    ):
        assert source.response.status_code == 200
        yield source.__aiter__()


async def take(events: Any, count: int, event: str = "mqtt") -> list[Any]:
    """The next `count` events named `event` (skipping the `retry:` preamble)."""
    found = []
    async with asyncio.timeout(15):
        while len(found) < count:
            item = await anext(events)
            if item.event == event:
                found.append(item)
    return found


def mqtt_hub(server: AppServer) -> Any:
    return server.app.state.upstreams["mqtt"].hub


# --- the MQTT hub --------------------------------------------------------------------------


async def publish(server: AppServer, jwt: str, topic: str, payload: Any) -> None:
    async with httpx2.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {jwt}"}
    ) as api:
        response = await api.post("/api/mqtt/publish", json={"topic": topic, "payload": payload})
        assert response.status_code == 200


async def after_marker(events: Any, marker: str, count: int) -> list[Any]:
    """The marker event and the `count` events after it."""
    while json.loads((event := (await take(events, 1))[0]).data)["topic"] != marker:
        pass
    return [event, *await take(events, count)]


async def test_clients_share_one_upstream_connection(
    app_server: AppServer, jwt: str, lab: Lab
) -> None:
    async with (
        sse(app_server, "/api/mqtt/stream", jwt=jwt) as a,
        sse(app_server, "/api/mqtt/stream", jwt=jwt) as b,
        sse(app_server, "/api/mqtt/stream", jwt=jwt) as c,
        sse(app_server, "/api/mqtt/stream", jwt=jwt) as d,
    ):
        assert mqtt_hub(app_server).subscribers == 4
        assert lab.mqtt.stream_connections == 1
        await publish(app_server, jwt, "homepanel/marker", "all tabs listening")
        received = await asyncio.gather(
            *(after_marker(events, "homepanel/marker", 3) for events in (a, b, c, d))
        )
        assert lab.mqtt.stream_connections == 1
        first = [e.id for e in received[0]]
        # From the marker on, every tab saw the same events in the same order.
        assert all([e.id for e in events] == first for events in received), received
        seqs = [int(i.split("-")[1]) for i in first]
        assert seqs == sorted(seqs) and len(set(seqs)) == 4
        message = json.loads(received[0][0].data)
        assert message == {
            "topic": "homepanel/marker",
            "payload": "all tabs listening",
            "timestamp": message["timestamp"],
        }
    await asyncio.to_thread(
        eventually, lambda: lab.mqtt.stream_connections == 0, 5, "upstream closed"
    )
    assert mqtt_hub(app_server).subscribers == 0


async def test_a_publish_reaches_every_tab(app_server: AppServer, jwt: str, lab: Lab) -> None:
    async with (
        sse(app_server, "/api/mqtt/stream", jwt=jwt) as a,
        sse(app_server, "/api/mqtt/stream", jwt=jwt) as b,
    ):
        await asyncio.gather(take(a, 1), take(b, 1))
        async with httpx2.AsyncClient(
            base_url=app_server.url, headers={"Authorization": f"Bearer {jwt}"}
        ) as api:
            response = await api.post(
                "/api/mqtt/publish",
                json={"topic": f"{SWITCH}/set", "payload": {"state_right": "ON"}},
            )
            assert response.status_code == 200

        async def switch_event(events: Any) -> dict:
            while True:
                event = (await take(events, 1))[0]
                message = json.loads(event.data)
                if message["topic"] == SWITCH and message["payload"].get("state_right") == "ON":
                    return message

        messages = await asyncio.gather(switch_event(a), switch_event(b))
        assert messages[0] == messages[1]


async def test_upstream_cut_is_reconnected_while_tabs_stay(
    app_server: AppServer,
    jwt: str,
    lab: Lab,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "BACKOFF_FIRST", 0.2)
    async with sse(app_server, "/api/mqtt/stream", jwt=jwt) as events:
        before = await take(events, 2)
        connects = lab.mqtt.stream_connects
        lab.mqtt.cut_streams()
        after = await take(events, 3)
        assert lab.mqtt.stream_connects == connects + 1 and lab.mqtt.stream_connections == 1
        assert int(after[0].id.split("-")[1]) > int(before[-1].id.split("-")[1])
    assert "MQTT API stream lost" in caplog.text and "reconnect attempt 1" in caplog.text


async def test_refused_upstream_is_retried_with_growing_backoff(
    app_server: AppServer,
    jwt: str,
    lab: Lab,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "BACKOFF_FIRST", 0.1)
    lab.mqtt.faults.mode = "status"  # the reverse proxy answers 502: the API is down
    async with sse(app_server, "/api/mqtt/stream", jwt=jwt) as events:
        await asyncio.to_thread(
            eventually, lambda: "reconnect attempt 3" in caplog.text, 10, "3 attempts"
        )
        lab.mqtt.faults.mode = None
        assert await take(events, 1)  # the tab stayed and receives once the API is back
    delays = [
        float(r.getMessage().rsplit(" in ", 1)[1][:-2])
        for r in caplog.records
        if "reconnect attempt" in r.getMessage()
    ]
    assert 0.05 <= delays[0] <= 0.1 and 0.1 <= delays[1] <= 0.2 and 0.2 <= delays[2] <= 0.4


async def test_last_event_id_replays_what_was_missed(
    app_server: AppServer, jwt: str, lab: Lab
) -> None:
    async with sse(app_server, "/api/mqtt/stream", jwt=jwt) as events:
        seen = await take(events, 4)
        async with sse(
            app_server, "/api/mqtt/stream", jwt=jwt, headers={"Last-Event-ID": seen[0].id}
        ) as again:
            replayed = await take(again, 3)
    assert [e.id for e in replayed] == [e.id for e in seen[1:]]
    assert [e.data for e in replayed] == [e.data for e in seen[1:]]


@pytest.mark.parametrize("last_event_id", ["0badc0de-5", "not-an-id", "x"])
async def test_unknown_last_event_id_gets_resync(
    app_server: AppServer, jwt: str, lab: Lab, last_event_id: str
) -> None:
    async with sse(
        app_server, "/api/mqtt/stream", jwt=jwt, headers={"Last-Event-ID": last_event_id}
    ) as events:
        first = await anext(events)
        while first.event is None or first.event == "message":  # the retry: preamble
            first = await anext(events)
        assert first.event == "resync"
        assert await take(events, 1)  # and then live events


async def test_stalled_client_is_dropped_and_others_keep_receiving(
    app_server: AppServer, jwt: str, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "QUEUE_SIZE", 16)
    host, port = app_server.url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall(
        f"GET /api/mqtt/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\n\r\n".encode()
    )
    hub = mqtt_hub(app_server)
    try:
        async with sse(app_server, "/api/mqtt/stream", jwt=jwt) as good:
            await asyncio.to_thread(eventually, lambda: hub.subscribers == 2, 5, "two subscribers")
            topics: set[str] = set()

            async def read_all() -> None:
                while len(topics) < 60:
                    message = json.loads((await take(good, 1))[0].data)
                    if message["topic"].startswith("homepanel/big/"):
                        topics.add(message["topic"])

            reader = asyncio.create_task(read_all())  # the good tab reads while events pour in
            # 15 MB in all: more than the stalled socket's buffers and its queue can hold.
            big = {"blob": "x" * 250_000}
            async with httpx2.AsyncClient(
                base_url=app_server.url, headers={"Authorization": f"Bearer {jwt}"}
            ) as api:
                for i in range(60):
                    await api.post(
                        "/api/mqtt/publish", json={"topic": f"homepanel/big/{i}", "payload": big}
                    )
            async with asyncio.timeout(30):
                await reader
            assert hub.subscribers == 1  # the stalled one was dropped; the good one got all 60
    finally:
        stalled.close()


async def test_stream_headers_ping_and_cookie_auth(
    custom_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "PING_INTERVAL", 0.2)
    server = custom_app()
    jwt = server.login()
    origin = "http://localhost:3000"
    # Exactly what a browser's EventSource sends: a cookie, no Authorization header.
    async with (
        httpx2.AsyncClient(base_url=server.url, cookies={COOKIE_NAME: jwt}, timeout=10) as browser,
        browser.stream(
            "GET", "/api/mqtt/stream", headers={"Origin": origin, "Accept": "text/event-stream"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["access-control-allow-credentials"] == "true"
        lines = []
        async with asyncio.timeout(10):
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": ping":
                    break
        assert lines[0] == "retry: 3000"


def test_stream_requires_login(app_server: AppServer) -> None:
    with app_server.client() as client:
        assert_error(client.get("/api/mqtt/stream"), 401)


# --- pass-through relays -------------------------------------------------------------------


class ScriptedUpstream:
    """A stand-in Automation API and AI hub sending exact byte chunks, to check relays byte
    for byte: CRLF lines, comments, multi-line data, UTF-8 split across chunks, a cut."""

    CHUNKS: ClassVar[list[bytes]] = [
        b": welcome\r\n\r\nevent: log\r\ndata: first line\r\n\r\n",
        b"event: log\ndata: multi\ndata: line\n",
        b"\nevent: log\ndata: caf\xc3",
        b'\xa9 \xe2\x9c\x93\n\nid: 7\nevent: log\ndata: {"k": [1, 2]}\n\n',
    ]

    def __init__(self) -> None:
        self.cut_after: int | None = None
        self.open = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/logs/{name:.+}", self._stream)
        app.router.add_post("/chat", self._stream)
        app.router.add_get("/api/v1/stream", self._mqtt)
        return app

    MQTT: ClassVar[bytes] = (
        b": hello\n\n"
        b'event: update\ndata: {"topic": "a/1",\ndata:  "payload": {"x": 1}}\n\n'  # multi-line
        b"data: not json at all\n\n"  # no topic to file it under: skipped
        b'data: {"topic": "a/2", "payload": "plain words"}\n\n'  # a non-JSON payload string
        b'data: {"topic": "a/3", "payload": "{\\"on\\": true}"}\n\n'  # JSON sent as text
        b'event: message\r\ndata: {"topic": "a/4", "payload": null, "timestamp": "T"}\r\n\r\n'
    )

    async def _mqtt(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(0, len(self.MQTT), 7):  # events split across many small chunks
            await response.write(self.MQTT[index : index + 7])
        await _until_client_leaves(request)
        return response

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.open += 1
        try:
            for index, chunk in enumerate(self.CHUNKS):
                await response.write(chunk)
                await asyncio.sleep(0.05)
                if self.cut_after == index:
                    await response.write(b"event: log\ndata: half an ev")
                    request.transport.close()  # type: ignore[union-attr]
                    return response
            await _until_client_leaves(request)  # then silence
            return response
        finally:
            self.open -= 1


async def _until_client_leaves(request: web.Request) -> None:
    while True:
        await asyncio.sleep(0.05)
        if request.transport is None or request.transport.is_closing():
            return


@pytest.fixture(scope="module")
def scripted(running_lab: RunningLab) -> Any:
    upstream = ScriptedUpstream()
    loop = BackgroundLoop()

    async def start() -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(upstream.app(), shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    runner, url = loop.run(start())
    yield upstream, url
    loop.run(runner.cleanup())
    loop.close()


async def test_mqtt_stream_parsing_is_robust(custom_app: AppFactory, scripted: Any) -> None:
    _, url = scripted
    server = custom_app(MQTT_API_URL=url)
    async with sse(server, "/api/mqtt/stream", jwt=server.login()) as events:
        messages = [json.loads(event.data) for event in await take(events, 4)]
    assert [(m["topic"], m["payload"]) for m in messages] == [
        ("a/1", {"x": 1}),
        ("a/2", "plain words"),
        ("a/3", {"on": True}),
        ("a/4", None),
    ]
    assert messages[3]["timestamp"] == "T" and messages[0]["timestamp"]  # ours when missing


def relay_app(custom_app: AppFactory, url: str) -> AppServer:
    return custom_app(AUTOMATION_API_URL=url, AI_HUB_URL=url)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/automations/main/x/logs"), ("POST", "/api/ai/chat")]
)
def test_relays_pass_bytes_unmodified(
    custom_app: AppFactory, scripted: Any, method: str, path: str
) -> None:
    upstream, url = scripted
    expected = b"".join(ScriptedUpstream.CHUNKS)
    with (
        authed(relay_app(custom_app, url)) as api,
        api.stream(method, path, json={"message": "hi"} if method == "POST" else None) as response,
    ):
        assert response.status_code == 200
        received = b""
        for chunk in response.iter_raw():
            received += chunk
            if len(received) >= len(expected):
                break
    assert received == expected
    eventually(lambda: upstream.open == 0, 5, "the upstream request closed")


def test_relay_cut_mid_stream_ends_with_a_clean_error_event(
    custom_app: AppFactory, scripted: Any
) -> None:
    upstream, url = scripted
    upstream.cut_after = 1
    try:
        with (
            authed(relay_app(custom_app, url)) as api,
            api.stream("GET", "/api/automations/main/x/logs") as response,
        ):
            body = response.read()
    finally:
        upstream.cut_after = None
    complete = ScriptedUpstream.CHUNKS[0]  # "multi/line" never got its closing blank line
    assert body.startswith(complete)
    tail = body[len(complete) :].decode()
    assert "multi" not in tail and "half an ev" not in tail  # no event is half-delivered
    assert tail.startswith("event: error\ndata: ") and tail.endswith("\n\n")
    error = json.loads(tail.split("data: ", 1)[1])
    assert (
        set(error) == {"detail", "error_code", "timestamp"}
        and error["error_code"] == "UPSTREAM_STREAM_BROKEN"
    )


def test_log_stream_of_the_lab(api: httpx2.Client, lab: Lab) -> None:
    with api.stream(
        "GET", "/api/automations/main/kitchen/motion_light/logs", params={"lines": 5}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 6:  # five lines of history, then a live one
                break
        assert lab.automations.open_log_streams == 1
    eventually(lambda: lab.automations.open_log_streams == 0, 5, "the upstream log stream closed")


def test_log_stream_errors_come_before_the_stream(api: httpx2.Client, lab: Lab) -> None:
    assert_error(api.get("/api/automations/main/no/such/logs"), 404, "NOT_FOUND")
    for lines in ("0", "10001", "many"):
        assert_error(
            api.get("/api/automations/main/kitchen/motion_light/logs", params={"lines": lines}), 422
        )
    lab.automations.faults.mode = "status"
    assert_error(api.get("/api/automations/main/kitchen/motion_light/logs"), 502)
    lab.automations.faults.mode = "drop"
    assert_error(
        api.get("/api/automations/main/kitchen/motion_light/logs"), 502, "UPSTREAM_UNREACHABLE"
    )


def test_ai_chat_through_the_panel(api: httpx2.Client, lab: Lab) -> None:
    session = "5b0e8c1a-0000-4000-8000-00000000abcd"
    with api.stream(
        "POST",
        "/api/ai/chat",
        json={"message": "проверь диски", "session_id": session, "cwd": "/home/user/servers"},
    ) as response:
        assert response.status_code == 200
        events = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    kinds = [e.get("type", "done") if "process_id" not in e else "done" for e in events]
    init = next(e for e in events if e.get("subtype") == "init")
    assert init["session_id"] == session and init["cwd"] == "/home/user/servers"
    assert (
        kinds.index("system")
        < kinds.index("assistant")
        < kinds.index("user")
        < kinds.index("result")
    )
    assert kinds[-1] == "done" and events[-1]["process_id"]


def test_ai_chat_disconnect_closes_the_upstream(api: httpx2.Client, lab: Lab) -> None:
    with api.stream("POST", "/api/ai/chat", json={"message": "long story"}) as response:
        for line in response.iter_lines():
            if '"subtype":"init"' in line:
                break
        assert lab.ai.open_chats == 1
    eventually(lambda: lab.ai.open_chats == 0, 5, "the upstream chat closed")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message": ""},
        {"message": 5},
        {"message": "hi", "session_id": "../x"},
        {"message": "hi", "cwd": "a\u0000b"},
        [],
    ],
)
def test_ai_chat_validation(api: httpx2.Client, lab: Lab, body: object) -> None:
    before = lab.ai.requests.total()
    assert_error(api.post("/api/ai/chat", json=body), 422, "VALIDATION_ERROR")
    assert lab.ai.requests.total() == before


def test_ai_chat_errors_and_rate_limit(custom_app: AppFactory, lab: Lab) -> None:
    with authed(custom_app(RATE_LIMIT_AI="2/minute")) as api:
        lab.ai.faults.mode = "status"
        assert_error(api.post("/api/ai/chat", json={"message": "hi"}), 502)
        lab.ai.faults.mode = None
        with api.stream("POST", "/api/ai/chat", json={"message": "hi"}) as response:
            assert response.status_code == 200
        limited = api.post("/api/ai/chat", json={"message": "hi"})
        assert_error(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) >= 1


def test_ai_chat_with_the_cookie_needs_csrf_proof(app_server: AppServer) -> None:
    with httpx2.Client(
        base_url=app_server.url, cookies={COOKIE_NAME: app_server.login()}
    ) as browser:
        assert_error(browser.post("/api/ai/chat", json={"message": "hi"}), 403, "CSRF_CHECK_FAILED")


# --- shutdown ------------------------------------------------------------------------------


def test_shutdown_with_open_streams(running_lab: RunningLab, tmp_path: Path) -> None:
    """SIGTERM with every kind of stream open: the server exits within seconds and the lab
    sees each upstream connection closed."""
    lab = running_lab.lab
    settings = lab_settings(lab, tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "ACCESS_TOKEN", "ENV"))
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "homepanel",
            "serve",
            "--env-file",
            str(tmp_path / ".env"),
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = AppServer.__new__(AppServer)
    server.url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _healthy(server.url), 20, "the server started")
        with authed(server) as api:
            import threading

            def hold(method: str, path: str, **kwargs: Any) -> None:
                try:
                    with api.stream(method, path, **kwargs) as response:
                        for _ in response.iter_raw():
                            pass
                except httpx2.HTTPError:
                    pass

            threads = [
                threading.Thread(target=hold, args=("GET", "/api/mqtt/stream"), daemon=True),
                threading.Thread(
                    target=hold, args=("GET", "/api/automations/monitor/logs"), daemon=True
                ),
                threading.Thread(
                    target=hold,
                    args=("POST", "/api/ai/chat"),
                    kwargs={"json": {"message": "a long one"}},
                    daemon=True,
                ),
            ]
            for thread in threads:
                thread.start()
            eventually(
                lambda: (
                    lab.mqtt.stream_connections == 1
                    and lab.automations.open_log_streams == 1
                    and lab.ai.open_chats == 1
                ),
                10,
                "streams open",
            )
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
            assert time.monotonic() - started < 4  # no stream holds the shutdown up
        eventually(
            lambda: (
                lab.mqtt.stream_connections == 0
                and lab.automations.open_log_streams == 0
                and lab.ai.open_chats == 0
            ),
            5,
            "upstreams closed",
        )
        assert settings.database_path.exists()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        running_lab.reset()


def _healthy(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/health", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False
