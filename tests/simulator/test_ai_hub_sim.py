"""The simulated AI hub streams Claude Code's stream-json over real HTTP, quirks included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import httpx2
import pytest

from homepanel.simulator.ai_hub import AiHub
from tests.simulator.serving import served

USER, PASSWORD = "admin", "hub-secret"
STEP = 0.01  # seconds between two lines: a whole run takes about a tenth of a second
SLOW = 0.05  # for tests that act while a run is still going


class Frame(NamedTuple):
    event: str  # ":" for a comment line
    data: str


@asynccontextmanager
async def serving(hub: AiHub) -> AsyncIterator[httpx2.AsyncClient]:
    """Serve the hub on an ephemeral 127.0.0.1 port; yield a client with the right credentials."""
    async with (
        served(hub.app()) as (url, _),
        httpx2.AsyncClient(base_url=url, auth=(USER, PASSWORD), trust_env=False) as client,
    ):
        yield client


@pytest.fixture
def hub() -> AiHub:
    return AiHub(username=USER, password=PASSWORD, step_delay=STEP)


@pytest.fixture
async def client(hub: AiHub) -> AsyncIterator[httpx2.AsyncClient]:
    async with serving(hub) as client:
        yield client


async def frames(response: httpx2.Response) -> AsyncIterator[Frame]:
    """SSE frames as they arrive; each comment line comes as its own Frame(":", text)."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Frame(":", line[1:].strip())
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and data:
            yield Frame(event, "\n".join(data))
            event, data = "message", []


async def chat(client: httpx2.AsyncClient, **body: Any) -> list[Frame]:
    """One whole /chat stream."""
    async with client.stream("POST", "/chat", json={"message": "проверь диски", **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return [frame async for frame in frames(r)]


def lines(stream: list[Frame]) -> list[dict[str, Any]]:
    """The stream-json objects carried by the `message` events."""
    return [json.loads(frame.data) for frame in stream if frame.event == "message"]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [f"{event['type']}/{event.get('subtype', '')}".rstrip("/") for event in events]


async def eventually(condition: Callable[[], bool]) -> bool:
    """Whether `condition` turns true within about two seconds."""
    for _ in range(200):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return False


# -- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/chat"), ("GET", "/processes"), ("DELETE", "/chat/x"), ("GET", "/health")],
)
async def test_every_route_needs_basic_auth(
    hub: AiHub, client: httpx2.AsyncClient, method: str, path: str
) -> None:
    body = {"message": "hi"} if method == "POST" else None
    wrong = await client.request(method, path, json=body, auth=(USER, "nope"))
    async with httpx2.AsyncClient(base_url=client.base_url, trust_env=False) as anonymous:
        missing = await anonymous.request(method, path, json=body)
    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid credentials"}
        assert response.headers["www-authenticate"] == 'Basic realm="api"'
    assert (hub.chats_started, hub.processes) == (0, {})


async def test_health(client: httpx2.AsyncClient) -> None:
    response = await client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# -- the stream ----------------------------------------------------------------------------


async def test_stream_is_a_realistic_claude_code_run(
    hub: AiHub, client: httpx2.AsyncClient
) -> None:
    stream = await chat(client, system_prompt="Ты управляешь Proxmox серверами")
    events = lines(stream)
    assert kinds(events) == [
        "system/hook_started",
        "system/hook_response",
        "system/init",
        "rate_limit_event",
        "assistant",
        "assistant",
        "user",
        "assistant",
        "result/success",
    ]
    # Each line is the object exactly as the CLI prints it: compact JSON, UTF-8 as is.
    for frame in stream[:-1]:
        assert frame.data == json.dumps(
            json.loads(frame.data), ensure_ascii=False, separators=(",", ":")
        )

    hook_started, hook_response, init = events[:3]
    assert hook_started["hook_name"] == "SessionStart:startup"
    assert hook_response["hook_id"] == hook_started["hook_id"]
    assert hook_response["exit_code"] == 0
    session_id = init["session_id"]
    assert {event["session_id"] for event in events} == {session_id}
    assert init["cwd"] == "/home/user"
    assert init["model"].startswith("claude-sonnet-")
    assert "Bash" in init["tools"]
    assert {"permissionMode", "apiKeySource", "mcp_servers", "slash_commands"} <= init.keys()

    text, tool_use, tool_result, answer, result = events[4:]
    assert text["message"]["id"] == tool_use["message"]["id"] != answer["message"]["id"]
    assert text["message"]["usage"] == tool_use["message"]["usage"]  # repeated per block
    assert text["message"]["content"][0]["text"].count("проверь диски") == 1
    call = tool_use["message"]["content"][0]
    assert (call["type"], call["name"]) == ("tool_use", "Bash")
    assert call["id"].startswith("toolu_")
    assert call["input"]["command"] == "ssh root@pve-1 'df -h'"
    returned = tool_result["message"]["content"][0]
    assert (returned["type"], returned["tool_use_id"]) == ("tool_result", call["id"])
    assert returned["content"].startswith("Filesystem")
    assert tool_result["tool_use_result"]["stdout"] == returned["content"]

    assert result["is_error"] is False
    assert result["result"] == answer["message"]["content"][0]["text"]
    assert result["session_id"] == session_id
    assert result["total_cost_usd"] > 0 and result["duration_ms"] > 0 and result["num_turns"] > 0
    turns = (text["message"]["usage"], answer["message"]["usage"])  # deduplicated by message id
    assert result["usage"]["output_tokens"] == sum(turn["output_tokens"] for turn in turns)
    assert result["modelUsage"][init["model"]]["costUSD"] == result["total_cost_usd"]

    done = stream[-1]
    assert done.event == "done"
    assert json.loads(done.data).keys() == {"process_id"}
    assert (hub.processes, hub.chats_started, hub.open_chats) == ({}, 1, 0)


async def test_session_and_cwd_are_passed_through(client: httpx2.AsyncClient) -> None:
    session_id = "ee9196ed-af8a-47a9-9f92-797762bc45a2"
    events = lines(await chat(client, session_id=session_id, cwd="/home/user/servers"))
    assert {event["session_id"] for event in events} == {session_id}
    assert events[0]["hook_name"] == "SessionStart:resume"
    assert events[2]["cwd"] == "/home/user/servers"


async def test_a_failing_run_is_success_with_is_error(client: httpx2.AsyncClient) -> None:
    events = lines(await chat(client, message="this will FAIL"))
    error, result = events[-2:]
    assert error["message"]["model"] == "<synthetic>"
    assert error["message"]["content"][0]["text"].startswith("API Error: 529")
    assert (result["subtype"], result["is_error"]) == ("success", True)
    assert result["result"] == error["message"]["content"][0]["text"]
    assert result["api_error_status"] == 529


async def test_quiet_stream_gets_ping_comments() -> None:
    hub = AiHub(username=USER, password=PASSWORD, step_delay=SLOW, ping_interval=0.01)
    async with serving(hub) as client:
        stream = await chat(client)
    assert Frame(":", "ping") in stream
    assert kinds(lines(stream))[-1] == "result/success"


async def test_same_seed_same_run() -> None:
    runs = []
    for _ in range(2):
        async with serving(AiHub(username=USER, password=PASSWORD, seed=7, step_delay=STEP)) as c:
            stream = await chat(c)
        runs.append((lines(stream)[-1]["result"], lines(stream)[2]["session_id"], stream[-1]))
    assert runs[0] == runs[1]


# -- processes and cancellation ------------------------------------------------------------


async def test_processes_lists_the_running_chat(hub: AiHub, client: httpx2.AsyncClient) -> None:
    hub.step_delay = SLOW
    session_id = "0b6f3a52-3c7e-4d8e-9a51-6f2d0c1e9b77"
    body = {"message": "проверь диски", "cwd": "/srv", "session_id": session_id}
    async with client.stream("POST", "/chat", json=body) as response:
        stream = frames(response)
        await anext(stream)
        listing = (await client.get("/processes")).json()
        assert (hub.open_chats, hub.chats_started) == (1, 1)
        rest = [frame async for frame in stream]
    assert listing["count"] == 1
    process = listing["processes"][0]
    assert process.keys() == {"process_id", "cwd", "model", "started_at", "session_id"}
    assert (process["cwd"], process["model"], process["session_id"]) == (
        "/srv",
        "sonnet",
        session_id,
    )
    assert "T" in process["started_at"] and "+" not in process["started_at"]  # naive ISO
    assert json.loads(rest[-1].data) == {"process_id": process["process_id"]}
    assert (await client.get("/processes")).json() == {"processes": [], "count": 0}


async def test_cancel_mid_stream_ends_it_without_a_result(
    hub: AiHub, client: httpx2.AsyncClient
) -> None:
    hub.step_delay = SLOW
    async with client.stream("POST", "/chat", json={"message": "проверь диски"}) as response:
        stream = frames(response)
        first = await anext(stream)
        process_id = (await client.get("/processes")).json()["processes"][0]["process_id"]
        cancelled = await client.delete(f"/chat/{process_id}")
        rest = [frame async for frame in stream]
    assert cancelled.status_code == 200
    assert cancelled.json() == {"status": "cancelled", "process_id": process_id}
    assert rest[-1].event == "done"
    assert json.loads(rest[-1].data) == {"process_id": process_id}
    assert "result/success" not in kinds(lines([first, *rest]))
    assert (hub.cancelled, hub.processes) == ([process_id], {})
    again = await client.delete(f"/chat/{process_id}")
    assert (again.status_code, again.json()) == (404, {"detail": "Process not found"})


async def test_cancel_unknown_process_is_404(hub: AiHub, client: httpx2.AsyncClient) -> None:
    response = await client.delete("/chat/5f1c7a0e-0000-4000-8000-000000000000")
    assert (response.status_code, response.json()) == (404, {"detail": "Process not found"})
    assert hub.cancelled == []


async def test_disconnected_client_leaves_the_run_going(
    hub: AiHub, client: httpx2.AsyncClient
) -> None:
    hub.step_delay = SLOW
    async with client.stream("POST", "/chat", json={"message": "проверь диски"}) as response:
        await anext(frames(response))
    assert (await client.get("/processes")).json()["count"] == 1
    assert await eventually(lambda: not hub.processes and hub.open_chats == 0)
    assert hub.cancelled == []


async def test_reset_kills_runs_and_zeroes_counters(hub: AiHub, client: httpx2.AsyncClient) -> None:
    hub.step_delay = SLOW
    async with client.stream("POST", "/chat", json={"message": "проверь диски"}) as response:
        stream = frames(response)
        await anext(stream)
        hub.reset()
        rest = [frame async for frame in stream]
    assert rest[-1].event == "done"
    assert (hub.processes, hub.cancelled, hub.chats_started, hub.open_chats) == ({}, [], 0, 0)
    assert not hub.requests


# -- bad requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'["a list"]',
        b"{}",
        b'{"message": ""}',
        b'{"message": "   "}',
        b'{"message": 42}',
        b'{"message": "hi", "cwd": 1}',
        b'{"message": "hi", "session_id": ["x"]}',
        b'{"message": "hi", "system_prompt": {}}',
    ],
)
async def test_bad_body_is_400(hub: AiHub, client: httpx2.AsyncClient, content: bytes) -> None:
    response = await client.post(
        "/chat", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert (hub.chats_started, hub.processes) == (0, {})
