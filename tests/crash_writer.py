"""Writes batches of metrics until killed, printing each batch's number once it is committed.

Run by test_crash_safety.py as `python -m tests.crash_writer <database> <first batch>`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from homepanel.store.db import Database
from homepanel.store.metrics import SERVER, MetricsStore, Retention

SERIES = 40  # rows per batch: a collection cycle of a larger fleet


async def main(path: Path, first: int) -> None:
    db = await Database.open(path)
    store = MetricsStore(db, Retention(tiers={}, device_states=86400))
    batch = first
    while True:
        rows = [(f"server-{i}", batch, {"cpu_percent": float(batch % 100)}) for i in range(SERIES)]
        await store.write_rows(SERVER, rows)
        print(batch, flush=True)  # only after the commit returned
        batch += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
