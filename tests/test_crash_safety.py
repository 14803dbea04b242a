"""SIGKILL during writes: the file stays intact and every committed batch survives."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.crash_writer import SERIES

ROOT = Path(__file__).resolve().parent.parent


def test_killed_writer_loses_no_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    committed: list[int] = []
    rng = random.Random(7)
    for _ in range(5):
        first = committed[-1] + 1 if committed else 0
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_writer", str(path), str(first)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.5, 1.5)
        seen: list[int] = []
        while time.monotonic() < deadline or len(seen) < 5:
            seen.append(int(process.stdout.readline()))
        os.kill(process.pid, signal.SIGKILL)  # mid-write, with no warning
        process.wait()
        process.stdout.close()
        committed += seen
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = dict(
                connection.execute("SELECT ts, COUNT(*) FROM server_samples GROUP BY ts").fetchall()
            )
        missing = [batch for batch in committed if stored.get(batch) != SERIES]
        assert not missing, missing[:5]
        # A batch is all or nothing: no half-written one, committed or not.
        assert set(stored.values()) == {SERIES}
    assert len(committed) > 50
