"""Real servers for the tests: the simulated lab on its own event loop, the app under uvicorn.

Both run in background threads so that a test (plain, synchronous code with a real HTTP client)
talks to them over loopback sockets exactly as a browser and a home lab would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from fastapi import FastAPI

from homepanel.app import create_app
from homepanel.core.config import Settings, load_settings
from homepanel.core.server import Server, config
from homepanel.simulator.lab import Lab

T = TypeVar("T")
ACCESS_TOKEN = "mK9$nP2@vL4#zR8*wQ6!xT3"  # the spec's example: '$', '#', '!' survive .env parsing


class BackgroundLoop:
    """An asyncio loop in a daemon thread; `run()` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class RunningLab:
    """The simulated lab, started on its own loop for the whole test session."""

    def __init__(self) -> None:
        self.background = BackgroundLoop()
        self.lab = Lab()
        self.background.run(self.lab.__aenter__())

    def reset(self) -> None:
        async def reset() -> None:
            self.lab.reset()

        self.background.run(reset())

    def close(self) -> None:
        self.background.run(self.lab.__aexit__(None, None, None))
        self.background.close()


def write_env(path: Path, variables: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    return path


def lab_settings(lab: Lab, directory: Path, **variables: str) -> Settings:
    """Settings read from a real `.env` file that points the app at `lab`."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {
        "ENV": "development",
        "ACCESS_TOKEN": ACCESS_TOKEN,
        "DATABASE_PATH": str(directory / "data" / "metrics.db"),
        "LOG_DIR": str(directory / "logs"),
        "LOG_LEVEL": "DEBUG",
        "RATE_LIMIT_LOGIN": "1000/minute",
        "RATE_LIMIT_API": "100000/minute",
        "METRICS_ENABLED": "false",  # collectors would poll the lab behind the tests' backs
        **lab.env(),
        **variables,
    }
    return load_settings(write_env(directory / ".env", env))


def assert_error(response: httpx2.Response, status: int, error_code: str | None = None) -> dict:
    """The uniform error envelope, with the expected status (and code)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "error_code", "timestamp"}, body
    assert body["detail"] and isinstance(body["detail"], str)
    if error_code is not None:
        assert body["error_code"] == error_code, body
    return body


class AppServer:
    """`create_app(settings)` served by uvicorn on a free loopback port."""

    def __init__(self, settings: Settings, app: FastAPI | None = None) -> None:
        self.settings = settings
        self.app = app or create_app(settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = Server(config(self.app, timeout_graceful_shutdown=2, ws="none"), self.app)
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)

    def _run(self, sock: socket.socket) -> None:
        # SystemExit is uvicorn's answer to a failed start-up; __enter__ reports it.
        with sock, contextlib.suppress(SystemExit):
            self.server.run(sockets=[sock])

    def __enter__(self) -> AppServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)

    def client(self, **kwargs: Any) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, timeout=30, **kwargs)

    def login(self, client: httpx2.Client | None = None) -> str:
        """A fresh JWT for the configured access token."""
        with client or self.client() as http:
            response = http.post("/api/auth/login", json={"token": ACCESS_TOKEN})
        response.raise_for_status()
        return response.json()["jwt"]


def authed(server: AppServer) -> httpx2.Client:
    """A client of `server`, logged in with a Bearer token."""
    return server.client(headers={"Authorization": f"Bearer {server.login()}"})
