"""The metrics store under the spec's fleet: ingest rate, roll-up time, query latency, disk writes.

Run: `python -m bench.store` (writes bench/results/store.json).

1. Ingest: raw samples written through `MetricsStore.write_rows`, in one big batch and as real
   collection cycles (one transaction per cycle), against the spec's "about 2,000 inserts/s".
2. The steady state after a year (built as in bench/metrics_size.py). On it:
   - roll-up cycle time: the first cycle (catching up every tier) and a normal minute's cycle;
   - query latency p50/p99 of every period for every kind of series.
3. One simulated hour of normal operation at the real cadence, committed as the app commits
   (servers every 10 s, guests 30 s, automations 5 s, device changes flushed each second,
   maintenance each minute), without the waiting: the bytes this process wrote to disk, from
   /proc/self/io, extrapolated to a day.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench import save_result
from bench.metrics_size import FLEET, NOW, build, values
from homepanel.store.db import Database
from homepanel.store.metrics import (
    AUTOMATION,
    FIVE_MIN,
    HOUR,
    KINDS,
    MINUTE,
    PERIODS,
    RAW,
    SERVER,
    THIRTY_MIN,
    VM,
    MetricsStore,
    Retention,
)

RETENTION = Retention(
    tiers={
        RAW: 3600,
        MINUTE: 86400,
        FIVE_MIN: 7 * 86400,
        THIRTY_MIN: 30 * 86400,
        HOUR: 365 * 86400,
    },
    device_states=90 * 86400,
)
SPEC_INSERTS_PER_SECOND = 2000
QUERY_ROUNDS = 30


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


async def ingest(path: Path) -> dict:
    rng = random.Random(2)
    db = await Database.open(path)
    store = MetricsStore(db, RETENTION)
    rows = [(f"vm-{i % 24}", NOW + i // 24, values(VM, rng)) for i in range(100_000)]
    started = time.perf_counter()
    await store.write_rows(VM, rows)
    bulk = len(rows) / (time.perf_counter() - started)
    cycles = 500
    started = time.perf_counter()
    for cycle in range(cycles):
        ts = NOW + 10**6 + cycle * 30
        await store.write_rows(VM, [(f"vm-{i}", ts, values(VM, rng)) for i in range(24)])
    per_cycle = cycles * 24 / (time.perf_counter() - started)
    await db.close()
    return {
        "bulk_samples_per_second": round(bulk),
        "cycle_samples_per_second": round(per_cycle),
        "bulk_vs_spec": round(bulk / SPEC_INSERTS_PER_SECOND, 1),
        "cycle_vs_spec": round(per_cycle / SPEC_INSERTS_PER_SECOND, 1),
    }


async def steady_state(path: Path) -> dict:
    size = await build(path)
    db = await Database.open(path)
    store = MetricsStore(db, RETENTION)
    started = time.perf_counter()
    await store.maintain(NOW)
    first_cycle = time.perf_counter() - started
    rng = random.Random(3)
    # One more minute of normal collection, then the minute's maintenance cycle.
    for kind, (count, interval) in FLEET.items():
        rows = [
            (f"{kind.name}-{i}", ts, values(kind, rng))
            for i in range(count)
            for ts in range(NOW, NOW + 60, interval)
        ]
        await store.write_rows(kind, rows)
    cycle_times = []
    for minute in range(1, 6):
        started = time.perf_counter()
        await store.maintain(NOW + 60 * minute + 60)
        cycle_times.append(time.perf_counter() - started)
    queries = {}
    for kind in KINDS:
        series = await store.known(kind.name, f"{kind.name}-0")
        assert series is not None
        for period in PERIODS:
            times = []
            for _ in range(QUERY_ROUNDS):
                started = time.perf_counter()
                _, points = await store.history(kind, series, period, NOW + 60)
                times.append(time.perf_counter() - started)
            times.sort()
            queries[f"{kind.name} {period}"] = {
                "points": len(points),
                "p50_ms": round(statistics.median(times) * 1000, 2),
                "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 2),
            }
    await db.close()
    return {
        "size": size,
        "rollup_first_cycle_ms": round(first_cycle * 1000, 1),
        "rollup_cycle_ms_median": round(statistics.median(cycle_times) * 1000, 1),
        "queries": queries,
    }


async def one_hour(path: Path) -> dict:
    """An hour of the app's writes, in the app's transactions, without the waiting."""
    rng = random.Random(4)
    db = await Database.open(path)
    store = MetricsStore(db, RETENTION)
    start = NOW + 10**7
    before = written_bytes()
    commits = 0
    for second in range(0, 3600):
        ts = start + second
        if second % 10 == 0:
            await store.write_samples(
                SERVER, ts, {f"server-{i}": values(SERVER, rng) for i in range(2)}
            )
            commits += 1
        if second % 30 == 0:
            await store.write_samples(VM, ts, {f"vm-{i}": values(VM, rng) for i in range(24)})
            commits += 1
        if second % 5 == 0:
            await store.write_samples(
                AUTOMATION, ts, {f"automation-{i}": values(AUTOMATION, rng) for i in range(11)}
            )
            commits += 1
        if second % 12 == 0:  # 50 devices changing every 10 minutes: one change per 12 s
            await store.write_device_states([(f"dev-{second % 50}", ts * 1000, {"t": second})])
            commits += 1
        if second % 60 == 0:
            await store.maintain(ts)
    await db.close()
    written = written_bytes() - before
    return {
        "commits_per_hour": commits,
        "bytes_written_per_hour": written,
        "mb_written_per_day": round(written * 24 / 1e6, 1),
    }


async def run() -> dict:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        return {
            "ingest": await ingest(folder / "ingest.db"),
            "steady": await steady_state(folder / "steady.db"),
            "hour": await one_hour(folder / "hour.db"),
        }


def main() -> None:
    result = asyncio.run(run())
    ingest_, steady, hour = result["ingest"], result["steady"], result["hour"]
    print(
        "ingest (samples/s)      bulk {:>9}  per cycle {:>7}   (spec ~2000: x{} / x{})".format(
            ingest_["bulk_samples_per_second"],
            ingest_["cycle_samples_per_second"],
            ingest_["bulk_vs_spec"],
            ingest_["cycle_vs_spec"],
        )
    )
    print(
        f"database after a year   {steady['size']['size_mb']} MB, "
        f"{steady['size']['bytes_per_stored_row']} bytes per stored row"
    )
    print(
        f"roll-up cycle           first (catch-up) {steady['rollup_first_cycle_ms']} ms, "
        f"normal minute {steady['rollup_cycle_ms_median']} ms (target < 100 ms)"
    )
    print(
        f"disk writes             {hour['mb_written_per_day']} MB/day "
        f"({hour['commits_per_hour']} commits/hour; target < 100 MB/day)"
    )
    print(f"{'query':<18}{'points':>8}{'p50 ms':>9}{'p99 ms':>9}   (target p99 < 20 ms)")
    for name, query in steady["queries"].items():
        print(f"{name:<18}{query['points']:>8}{query['p50_ms']:>9}{query['p99_ms']:>9}")
    save_result("store", result)


if __name__ == "__main__":
    main()
