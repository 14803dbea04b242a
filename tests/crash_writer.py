"""Records batches of metrics until killed, flushing every FLUSH_EVERY batches, and prints the
number of the last batch of each flush once that flush has committed.

Run by test_crash_safety.py as `python -m tests.crash_writer <database> <first batch>`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from homepanel.store.db import Database
from homepanel.store.metrics import SERVER, MetricsStore, Retention

SERIES = 40  # rows per batch: a collection cycle of a larger fleet
FLUSH_EVERY = 10  # batches per flush: what a crash may lose, as the app's flush interval


async def main(path: Path, first: int) -> None:
    db = await Database.open(path)
    store = MetricsStore(db, Retention(tiers={}, device_states=86400))
    batch = first
    while True:
        rows = [(f"server-{i}", batch, {"cpu_percent": float(batch % 100)}) for i in range(SERIES)]
        await store.record_rows(SERVER, rows)
        if (batch - first) % FLUSH_EVERY == FLUSH_EVERY - 1:
            await store.flush()
            print(batch, flush=True)  # only after the commit returned
        batch += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
