"""A simulated AI hub: Claude Code CLI runs streamed as Server-Sent Events, quirks included.

The real hub starts `claude -p ... --output-format stream-json --verbose` for every chat and
wraps each stdout line as an SSE `message` event, then sends `done` with the process id. The
panel passes those events through untouched, so this fake prints what the CLI really prints
(see shared/reference/upstream-behaviour.md, section 3): SessionStart hook lines *before*
`system/init`, an unknown `rate_limit_event`, one `assistant` frame per content block sharing a
message id and repeating its usage, a Bash call with its `tool_use_result`, and a final `result`.
A message containing the word "fail" ends in an API error, which the CLI reports as
`subtype: "success"` together with `is_error: true`.

A chat runs as a background task, not inside its request. Like the real CLI, it keeps going when
the client disconnects, until it finishes or `DELETE /chat/{process_id}` kills it. Every route,
/health included, sits behind the shared fault knobs and then Basic auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import string
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from homepanel.simulator.faults import SimulatedService, basic_auth

MODEL_ALIAS = "sonnet"  # what the hub passes to --model and lists in /processes
MODEL_ID = "claude-sonnet-4-5-20250929"  # what the CLI reports in its own lines
CLAUDE_CODE_VERSION = "2.0.14"
DEFAULT_CWD = "/home/user"
HOST = "pve-1"  # the server the simulated assistant inspects over ssh
PING_INTERVAL = 15.0  # seconds of silence before the hub sends a `: ping` comment

TOOLS = (
    "Task",
    "Bash",
    "Glob",
    "Grep",
    "Read",
    "Edit",
    "Write",
    "WebFetch",
    "TodoWrite",
    "WebSearch",
)
SLASH_COMMANDS = ("compact", "context", "cost", "review")
API_ERROR = (
    'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
)

_FAIL = re.compile(r"\bfail\b", re.IGNORECASE)
_BASE62 = string.digits + string.ascii_letters
_EXCERPT = 60  # characters of the user's message the assistant quotes back
# Sonnet 4.5 list prices in USD per million tokens, keyed like the API's usage object.
_PRICES = {
    "input_tokens": 3.0,
    "cache_creation_input_tokens": 3.75,
    "cache_read_input_tokens": 0.30,
    "output_tokens": 15.0,
}
_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_PING = b": ping\n\n"


@dataclass
class ChatProcess:
    """One running `claude -p`; `lines` carries its stdout lines and then None when it exits."""

    process_id: str
    session_id: str
    cwd: str
    model: str
    started_at: str  # naive local ISO time, as the hub prints it
    lines: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def listing(self) -> dict[str, str]:
        """The entry `GET /processes` shows for it."""
        return {
            "process_id": self.process_id,
            "cwd": self.cwd,
            "model": self.model,
            "started_at": self.started_at,
            "session_id": self.session_id,
        }


@dataclass(frozen=True)
class _Chat:
    """A validated `POST /chat` body. The system prompt is not kept: it goes to the CLI as
    --append-system-prompt and nothing of it shows in the stream."""

    message: str
    cwd: str
    session_id: str | None


@dataclass(frozen=True)
class _RootDisk:
    """The root filesystem of the inspected host, sized in GiB the way `df -h` rounds it."""

    size: int
    used: int

    @classmethod
    def draw(cls, rng: random.Random) -> _RootDisk:
        return cls(size=94, used=rng.randint(18, 80))

    @property
    def avail(self) -> int:
        return self.size - self.used - round(self.size * 0.05)  # ext4 reserves 5% for root

    @property
    def percent(self) -> int:
        return math.ceil(100 * self.used / (self.used + self.avail))  # df rounds Use% up

    def df(self) -> str:
        """`df -h` output on a Proxmox host, as the Bash tool returns it (no final newline)."""
        rows = [
            ("Filesystem", "Size", "Used", "Avail", "Use%", "Mounted on"),
            ("udev", "32G", "0", "32G", "0%", "/dev"),
            ("tmpfs", "6.3G", "1.9M", "6.3G", "1%", "/run"),
            ("/dev/mapper/pve-root", *self._columns(), "/"),
            ("/dev/nvme0n1p2", "1022M", "12M", "1011M", "2%", "/boot/efi"),
            ("/dev/fuse", "128M", "20K", "128M", "1%", "/etc/pve"),
        ]
        return "\n".join(
            f"{name:<21}{size:>5} {used:>5} {avail:>5} {percent:>4} {mount}"
            for name, size, used, avail, percent, mount in rows
        )

    def summary(self) -> str:
        """The assistant's final answer about this disk."""
        verdict = (
            "Места мало: стоит удалить старые бэкапы и ISO-образы."
            if self.percent >= 80
            else "Запас есть, чистить пока ничего не нужно."
        )
        return (
            f"На {HOST} корневой раздел заполнен на {self.percent}% "
            f"({self.used}G из {self.size}G), свободно {self.avail}G. {verdict}"
        )

    def _columns(self) -> tuple[str, str, str, str]:
        return f"{self.size}G", f"{self.used}G", f"{self.avail}G", f"{self.percent}%"


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID drawn from `rng`, so a seed replays the same ids."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _api_id(rng: random.Random, prefix: str) -> str:
    """An Anthropic id such as msg_01Hq3k...: prefix, "01" and 22 base62 characters."""
    return f"{prefix}01{''.join(rng.choices(_BASE62, k=22))}"


def _excerpt(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def _turn_usage(rng: random.Random, cached: int) -> dict[str, Any]:
    """Token usage of one API call; `cached` is the prompt prefix already in the cache."""
    return {
        "input_tokens": rng.randint(4, 8),
        "cache_creation_input_tokens": rng.randint(300, 2600),
        "cache_read_input_tokens": cached,
        "output_tokens": rng.randint(80, 260),
        "service_tier": "standard",
    }


def _total_usage(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """The `result` usage: every API call counted once (not once per frame)."""
    totals = {key: sum(turn[key] for turn in turns) for key in _PRICES}
    return {**totals, "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"}


def _cost(usage: dict[str, Any]) -> float:
    return round(sum(usage[key] * price for key, price in _PRICES.items()) / 1_000_000, 6)


def _model_usage(usage: dict[str, Any], cost: float) -> dict[str, Any]:
    """`modelUsage` is keyed by model and, unlike `usage`, camelCase."""
    return {
        MODEL_ID: {
            "inputTokens": usage["input_tokens"],
            "outputTokens": usage["output_tokens"],
            "cacheReadInputTokens": usage["cache_read_input_tokens"],
            "cacheCreationInputTokens": usage["cache_creation_input_tokens"],
            "webSearchRequests": 0,
            "costUSD": cost,
            "contextWindow": 200_000,
            "maxOutputTokens": 32_000,
        }
    }


def _ndjson(event: dict[str, Any]) -> str:
    """One stdout line as the CLI (Node's JSON.stringify) writes it: compact, UTF-8 as is."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


class _Transcript:
    """Everything one `claude -p` run prints, drawn from the hub's seeded generator."""

    def __init__(
        self, rng: random.Random, process: ChatProcess, *, resumed: bool, step_delay: float
    ) -> None:
        self._rng = rng
        self._process = process
        self._resumed = resumed
        self._step_delay = step_delay

    def lines(self, message: str) -> list[str]:
        """Hooks, init, a Bash call on the host, then the answer or an API error, then result."""
        disk = _RootDisk.draw(self._rng)
        tool_id = _api_id(self._rng, "toolu_")
        first = _turn_usage(self._rng, cached=self._rng.randint(12_000, 16_000))
        opening = f"Проверю диски на {HOST}, чтобы ответить на «{_excerpt(message)}»."
        events = [
            *self._session_start_hook(),
            self._init(),
            self._rate_limit(),
            *self._assistant(first, {"type": "text", "text": opening}, self._bash(tool_id)),
            self._tool_result(tool_id, disk.df()),
        ]
        if _FAIL.search(message):
            events.append(self._api_error())
            events.append(self._result(len(events) + 1, [first], API_ERROR, failed=True))
        else:
            cached = first["cache_read_input_tokens"] + first["cache_creation_input_tokens"]
            second = _turn_usage(self._rng, cached=cached)
            answer = disk.summary()
            events.extend(self._assistant(second, {"type": "text", "text": answer}))
            events.append(self._result(len(events) + 1, [first, second], answer, failed=False))
        return [_ndjson(event) for event in events]

    def _uuid(self) -> str:
        return _uuid4(self._rng)

    def _session_start_hook(self) -> list[dict[str, Any]]:
        """A SessionStart hook's two lines; they come before init, so line 1 is not init."""
        hook = {
            "hook_id": self._uuid(),
            "hook_name": f"SessionStart:{'resume' if self._resumed else 'startup'}",
            "hook_event": "SessionStart",
        }
        session_id = self._process.session_id
        outcome = {"output": "", "stdout": "", "stderr": "", "exit_code": 0, "outcome": "success"}
        return [
            {
                "type": "system",
                "subtype": "hook_started",
                **hook,
                "uuid": self._uuid(),
                "session_id": session_id,
            },
            {
                "type": "system",
                "subtype": "hook_response",
                **hook,
                **outcome,
                "uuid": self._uuid(),
                "session_id": session_id,
            },
        ]

    def _init(self) -> dict[str, Any]:
        return {
            "type": "system",
            "subtype": "init",
            "cwd": self._process.cwd,
            "session_id": self._process.session_id,
            "tools": list(TOOLS),
            "mcp_servers": [],
            "model": MODEL_ID,
            "permissionMode": "bypassPermissions",
            "slash_commands": list(SLASH_COMMANDS),
            "apiKeySource": "none",
            "claude_code_version": CLAUDE_CODE_VERSION,
            "output_style": "default",
            "agents": ["general-purpose"],
            "skills": [],
            "plugins": [],
            "uuid": self._uuid(),
        }

    def _rate_limit(self) -> dict[str, Any]:
        """A line type the SDK does not know: clients must skip what they do not understand."""
        resets_at = (int(time.time()) // 3600 + self._rng.randint(1, 5)) * 3600
        info = {
            "status": "allowed",
            "resetsAt": resets_at,
            "rateLimitType": "five_hour",
            "isUsingOverage": False,
        }
        return {
            "type": "rate_limit_event",
            "rate_limit_info": info,
            "uuid": self._uuid(),
            "session_id": self._process.session_id,
        }

    def _bash(self, tool_id: str) -> dict[str, Any]:
        return {
            "type": "tool_use",
            "id": tool_id,
            "name": "Bash",
            "input": {
                "command": f"ssh root@{HOST} 'df -h'",
                "description": f"Check disk usage on {HOST}",
            },
        }

    def _frame(self, kind: str, message: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "message": message,
            "parent_tool_use_id": None,
            "session_id": self._process.session_id,
            "uuid": self._uuid(),
            **extra,
        }

    def _assistant(self, usage: dict[str, Any], *blocks: dict[str, Any]) -> list[dict[str, Any]]:
        """One frame per content block, all with the same message id and the same usage."""
        message_id = _api_id(self._rng, "msg_")
        return [
            self._frame(
                "assistant",
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL_ID,
                    "content": [block],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            for block in blocks
        ]

    def _tool_result(self, tool_id: str, stdout: str) -> dict[str, Any]:
        """The tool's answer comes back twice: as the API sees it and raw in tool_use_result."""
        block = {
            "tool_use_id": tool_id,
            "type": "tool_result",
            "content": stdout,
            "is_error": False,
        }
        raw = {"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False}
        return self._frame("user", {"role": "user", "content": [block]}, tool_use_result=raw)

    def _api_error(self) -> dict[str, Any]:
        """The CLI's own stand-in for the reply the API failed to give."""
        message = {
            "id": self._uuid(),
            "type": "message",
            "role": "assistant",
            "model": "<synthetic>",
            "content": [{"type": "text", "text": API_ERROR}],
            "stop_reason": "stop_sequence",
            "stop_sequence": "",
            "usage": dict.fromkeys(_PRICES, 0),
        }
        return self._frame("assistant", message, error="server_error")

    def _result(
        self, steps: int, turns: list[dict[str, Any]], text: str, *, failed: bool
    ) -> dict[str, Any]:
        """The closing line; an API failure still says subtype "success", only is_error tells."""
        usage = _total_usage(turns)
        cost = _cost(usage)
        duration = round(steps * self._step_delay * 1000) + self._rng.randint(300, 900)
        ending = (
            {"api_error_status": 529, "terminal_reason": "api_error"}
            if failed
            else {"terminal_reason": "completed"}
        )
        return {
            "type": "result",
            "subtype": "success",
            "is_error": failed,
            "duration_ms": duration,
            "duration_api_ms": round(duration * 0.8),
            "num_turns": 2,  # the tool call and the answer, or the request that failed
            "result": text,
            "session_id": self._process.session_id,
            "total_cost_usd": cost,
            "usage": usage,
            "modelUsage": _model_usage(usage, cost),
            "permission_denials": [],
            **ending,
            "uuid": self._uuid(),
        }


async def _read_chat(request: web.Request) -> _Chat:
    """The `POST /chat` body, or ValueError saying what is wrong with it."""
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("Request body must be JSON") from None
    if not isinstance(body, dict):
        raise ValueError("Request body must be a JSON object")
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise ValueError("message must be a non-empty string")
    for name in ("system_prompt", "cwd", "session_id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ValueError(f"{name} must be a string or null")
    return _Chat(
        message=message, cwd=body.get("cwd") or DEFAULT_CWD, session_id=body.get("session_id")
    )


class AiHub(SimulatedService):
    """The Claude Code API hub. Serve :meth:`app` over plain HTTP to use it."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        seed: int = 0,
        step_delay: float = 0.3,
        ping_interval: float = PING_INTERVAL,
    ) -> None:
        super().__init__()
        self.username = username
        self.password = password
        self.seed = seed
        self.step_delay = step_delay  # seconds between two lines of a run
        self.ping_interval = ping_interval
        self._rng = random.Random(seed)
        self.processes: dict[str, ChatProcess] = {}
        self.cancelled: list[str] = []
        self.chats_started = 0
        self._streaming: set[str] = set()  # processes whose /chat response is still open

    @property
    def open_chats(self) -> int:
        """How many /chat streams are open right now."""
        return len(self._streaming)

    def app(self) -> web.Application:
        """A fresh aiohttp application serving the hub's API."""
        app = self.new_app(basic_auth(self.username, self.password))
        app.router.add_post("/chat", self._post_chat)
        app.router.add_delete("/chat/{process_id}", self._delete_chat)
        app.router.add_get("/processes", self._get_processes)
        app.router.add_get("/health", self._get_health)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def reset(self) -> None:
        """Healthy again: no faults, no history, every run killed, counters back to zero."""
        super().reset()
        self._kill_all()
        self.cancelled.clear()
        self.chats_started = 0
        self._streaming.clear()

    # -- routes --------------------------------------------------------------------------

    async def _post_chat(self, request: web.Request) -> web.StreamResponse:
        try:
            chat = await _read_chat(request)
        except ValueError as error:
            return web.json_response({"detail": str(error)}, status=400)
        process = self._spawn(chat)
        response = web.StreamResponse(headers=_SSE_HEADERS)
        self._streaming.add(process.process_id)
        try:
            await response.prepare(request)
            self.chats_started += 1
            await self._relay(process, response)
        except ConnectionResetError:
            pass  # the client left; the run goes on, as the real CLI does
        finally:
            self._streaming.discard(process.process_id)
        return response

    async def _delete_chat(self, request: web.Request) -> web.Response:
        process = self.processes.get(request.match_info["process_id"])
        if process is None:
            return web.json_response({"detail": "Process not found"}, status=404)
        self._kill(process)
        self.cancelled.append(process.process_id)
        return web.json_response({"status": "cancelled", "process_id": process.process_id})

    async def _get_processes(self, request: web.Request) -> web.Response:
        listing = [process.listing() for process in self.processes.values()]
        return web.json_response({"processes": listing, "count": len(listing)})

    async def _get_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _on_shutdown(self, app: web.Application) -> None:
        """Open streams end (with `done`) so that shutdown does not wait for running chats."""
        self._kill_all()

    # -- processes -----------------------------------------------------------------------

    def _spawn(self, chat: _Chat) -> ChatProcess:
        process = ChatProcess(
            process_id=_uuid4(self._rng),
            session_id=chat.session_id or _uuid4(self._rng),
            cwd=chat.cwd,
            model=MODEL_ALIAS,
            started_at=datetime.now().isoformat(),
        )
        transcript = _Transcript(
            self._rng, process, resumed=chat.session_id is not None, step_delay=self.step_delay
        )
        self.processes[process.process_id] = process
        process.task = asyncio.create_task(self._run(process, transcript.lines(chat.message)))
        return process

    async def _run(self, process: ChatProcess, lines: list[str]) -> None:
        """Print the transcript one line per step, then exit; cancelled when killed."""
        try:
            for line in lines:
                await asyncio.sleep(self.step_delay)
                process.lines.put_nowait(line)
        finally:
            self._exited(process)

    def _exited(self, process: ChatProcess) -> None:
        """Stdout closes exactly once, whether the run finished or was killed."""
        if self.processes.pop(process.process_id, None) is process:
            process.lines.put_nowait(None)

    def _kill(self, process: ChatProcess) -> None:
        """Like SIGTERM to the CLI: no further lines, no `result`, just the end of stdout."""
        self._exited(process)
        if process.task is not None:
            process.task.cancel()

    def _kill_all(self) -> None:
        for process in list(self.processes.values()):
            self._kill(process)

    async def _relay(self, process: ChatProcess, response: web.StreamResponse) -> None:
        """Each stdout line as a `message` event, then `done` once the process has exited."""
        while (line := await self._next_line(process, response)) is not None:
            await response.write(_sse("message", line))
        await response.write(_sse("done", json.dumps({"process_id": process.process_id})))

    async def _next_line(self, process: ChatProcess, response: web.StreamResponse) -> str | None:
        """Wait for the CLI's next line, keeping the connection alive with `: ping` comments."""
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(process.lines.get(), self.ping_interval)
            await response.write(_PING)
