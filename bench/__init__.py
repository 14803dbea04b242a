"""Benchmarks, run by hand: `python -m bench.<name>`. See bench/README.md."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def save_result(name: str, result: Any) -> Path:
    """Write a benchmark's figures to bench/results/<name>.json (not committed)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen[Any] | None) -> None:
    """End a child: closing its stdin ends the line-protocol ones (the lab, the load clients),
    SIGTERM the servers (uvicorn's graceful shutdown); whatever lingers is killed."""
    if process is None:
        return
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process.stdout is not None:
        with contextlib.suppress(OSError):
            process.stdout.close()
