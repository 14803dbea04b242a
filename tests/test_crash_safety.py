"""SIGKILL during writes: the file stays intact, every committed flush survives whole, and
what is lost is what waited for the next flush."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.crash_writer import FLUSH_EVERY, SERIES

ROOT = Path(__file__).resolve().parent.parent


def stored_batches(path: Path) -> dict[int, int]:
    """Rows per raw sample time (batch number), wherever the store keeps them."""
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return dict(
            connection.execute(
                "SELECT ts, COUNT(*) FROM (SELECT ts FROM server_raw_0 UNION ALL "
                "SELECT ts FROM server_raw_1 UNION ALL "
                "SELECT ts FROM server_samples WHERE tier = 0) GROUP BY ts"
            ).fetchall()
        )


def test_killed_writer_loses_no_committed_flush(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    committed: list[int] = []  # the last batch of each flush the writer saw commit
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
        while time.monotonic() < deadline or len(seen) < 3:
            seen.append(int(process.stdout.readline()))
        time.sleep(rng.uniform(0, 0.05))  # land anywhere: recording, or mid-commit
        os.kill(process.pid, signal.SIGKILL)  # with no warning
        process.wait()
        seen += [int(line) for line in process.stdout]  # reported before the kill
        process.stdout.close()
        committed += seen
        stored = stored_batches(path)
        missing = [batch for batch in range(committed[-1] + 1) if stored.get(batch) != SERIES]
        assert not missing, missing[:5]
        # A flush is all or nothing: past the last one reported, at most one more (it may have
        # committed just before the kill), whole.
        newer = sorted(batch for batch in stored if batch > committed[-1])
        assert newer in ([], list(range(committed[-1] + 1, committed[-1] + 1 + FLUSH_EVERY)))
        assert set(stored.values()) == {SERIES}
    assert len(committed) > 10
