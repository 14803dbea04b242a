"""`homepanel demo` as a new user runs it: no configuration, a printed token, a working lab."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """The demo started in an empty folder with no configuration; yields (process, url, jwt)."""
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "ACCESS_TOKEN", "ENV"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "homepanel", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    jwt = None
    output = []
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while jwt is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if match := re.search(r"Ready JWT\s+(\S+)", line):
            jwt = match[1]
    assert jwt, "".join(output)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):  # the banner precedes uvicorn's listen by a moment
        try:
            httpx2.get(f"{url}/health", timeout=1)
            break
        except httpx2.TransportError:
            time.sleep(0.05)
    yield process, url, jwt
    if process.poll() is None:
        process.kill()
    process.wait()


def test_demo_serves_the_simulated_lab(
    demo: tuple[subprocess.Popen[str], str, str], tmp_path: Path
) -> None:
    process, url, jwt = demo
    with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {jwt}"}, timeout=30) as api:
        servers = api.get("/api/proxmox/servers").json()["servers"]
        assert [(s["id"], s["online"]) for s in servers] == [("nas", True), ("smart-home", True)]
        guests = api.get("/api/proxmox/nas/vms").json()
        assert guests["total"] >= 10 and guests["stopped"] >= 1
        stopped = next(
            g for g in guests["instances"] if g["status"] == "stopped" and not g["template"]
        )
        started = api.post(f"/api/proxmox/nas/vm/{stopped['vmid']}/start").json()
        assert started["success"] is True
        deadline = time.monotonic() + 10
        while api.get(f"/api/proxmox/nas/vm/{stopped['vmid']}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the started guest never ran"
            time.sleep(0.2)
        snapshot = api.get("/api/frigate/camera/cam-doorbell/snapshot")
        assert (
            snapshot.headers["content-type"] == "image/jpeg" and snapshot.content[:2] == b"\xff\xd8"
        )
        assert api.get("/api/frigate/events").json()["events"]
        assert api.get("/api/mqtt/topics").json()["topics"]
        assert api.get("/api/automations").json()["total"] >= 10
        assert api.get("/api/ai/processes").json()["count"] == 0
    assert (tmp_path / "data" / "jwt_secret").is_file()
    assert (tmp_path / "logs" / "backend.log").is_file()

    started_stopping = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    assert time.monotonic() - started_stopping < 10
    log = (tmp_path / "logs" / "backend.log").read_text()
    assert "Home Panel shutting down" in log and "Application shutdown complete" in log
