"""The metrics store under the spec's fleet: ingest rate, roll-up time, query latency, disk writes.

Run: `python -m bench.store` (writes bench/results/store.json).

1. Ingest: raw samples recorded through `MetricsStore.record_rows` and committed by its flush,
   in one big batch and as 500 real collection cycles of 24 rows (one flush for all, as the
   app commits), against the spec's "about 2,000 inserts/s".
2. The steady state after a year (built as in bench/metrics_size.py). On it:
   - roll-up cycle time: the first cycle (catching up every tier), normal minutes, and the
     minutes that also flush;
   - query latency of every period for every kind of series, through `EncodedHistory` (what
     the routes call: the rows, merged with those waiting, as the JSON the API sends). Cold:
     the first request for a series and period, each of 20 times with a fresh cache; warm: 30
     more on one cache, as a dashboard polls.
3. A simulated day of normal operation on a copy of that steady state, at the real cadence
   (servers every 10 s, guests 30 s, automations 5 s, a device change every 12 s, the store's
   minute cycle with its flush), across midnight (the daily archiving and retention), without
   the waiting: the bytes this process wrote to disk, from /proc/self/io, WAL checkpoints and
   the final one at closing included, and the day's slowest cycle (and when it ran).
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from bench import save_result
from bench.metrics_size import DEVICES, FLEET, NOW, build, values
from homepanel.metrics.points import EncodedHistory
from homepanel.store.db import Database
from homepanel.store.metrics import (
    DAY,
    FIVE_MIN,
    FLUSH_INTERVAL,
    HOUR,
    KINDS,
    MINUTE,
    PERIODS,
    RAW,
    THIRTY_MIN,
    VM,
    Kind,
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
COLD_ROUNDS = 20
MIDNIGHT_WORK = 15 * 60  # the daily housekeeping's cycles, from midnight on
DEVICE_CHANGE_EVERY = 12  # 50 devices changing every 10 minutes


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
    await store.record_rows(VM, rows)
    await store.flush()
    bulk = len(rows) / (time.perf_counter() - started)
    cycles = 500
    started = time.perf_counter()
    for cycle in range(cycles):
        ts = NOW + 10**6 + cycle * 30
        await store.record_rows(VM, [(f"vm-{i}", ts, values(VM, rng)) for i in range(24)])
    await store.flush()
    per_cycle = cycles * 24 / (time.perf_counter() - started)
    await db.close()
    return {
        "bulk_samples_per_second": round(bulk),
        "cycle_samples_per_second": round(per_cycle),
        "bulk_vs_spec": round(bulk / SPEC_INSERTS_PER_SECOND, 1),
        "cycle_vs_spec": round(per_cycle / SPEC_INSERTS_PER_SECOND, 1),
    }


async def collect(
    store: MetricsStore, start: int, seconds: int, rng: random.Random
) -> dict[int, float]:
    """The fleet's samples and device changes of [start, start + seconds), with the minute
    cycle at each minute, as the app's jobs run them. Returns each cycle's duration."""
    cycles = {}
    for ts in range(start, start + seconds):
        for kind, (count, interval) in FLEET.items():
            if ts % interval == 0:
                samples = {f"{kind.name}-{i}": values(kind, rng) for i in range(count)}
                await store.record_samples(kind, ts, samples)
        if ts % DEVICE_CHANGE_EVERY == 0:
            topic = f"zigbee2mqtt/room-{ts // DEVICE_CHANGE_EVERY % DEVICES}-sensor"
            await store.record_device_states([(topic, ts * 1000, {"temperature": ts % 7})])
        if ts % 60 == 0:
            started = time.perf_counter()
            await store.maintain(ts)
            cycles[ts] = time.perf_counter() - started
    return cycles


async def steady_state(path: Path) -> dict:
    size = await build(path)
    db = await Database.open(path)
    store = MetricsStore(db, RETENTION)
    started = time.perf_counter()
    await store.maintain(NOW)
    first_cycle = time.perf_counter() - started
    cycles = await collect(store, NOW + 1, 20 * 60, random.Random(3))
    minutes = [seconds for ts, seconds in cycles.items() if ts % FLUSH_INTERVAL]
    flushes = [seconds for ts, seconds in cycles.items() if not ts % FLUSH_INTERVAL]
    gc.collect()  # as the app does once started (app.py), so full collections stay short
    gc.freeze()
    queries = await query_latency(store, NOW + 20 * 60)
    await db.close()
    return {
        "size": size,
        "rollup_first_cycle_ms": round(first_cycle * 1000, 1),
        "rollup_cycle_ms_median": round(statistics.median(minutes) * 1000, 1),
        "rollup_flush_cycle_ms_max": round(max(flushes) * 1000, 1),
        "queries": queries,
    }


async def timed(call: Callable[[], Awaitable[bytes]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


def request(
    encoded: EncodedHistory, kind: Kind | None, series: int, period: str, now: int
) -> Callable[[], Awaitable[bytes]]:
    """What the route asks `encoded` for: a series' points, or a device's states (no kind)."""
    if kind is None:
        return partial(encoded.device_states, series, period, now)
    return partial(encoded.points, kind, series, period, now)


async def query_latency(store: MetricsStore, now: int) -> dict:
    """Each kind's and period's answer, cold (a fresh cache) and then warm."""
    queries = {}
    device = await store.known("device", "zigbee2mqtt/room-0-sensor")
    assert device is not None
    for kind_name in [kind.name for kind in KINDS] + ["device"]:
        kind = next((k for k in KINDS if k.name == kind_name), None)
        series = device if kind is None else await store.known(kind_name, f"{kind_name}-0")
        assert series is not None
        for period in PERIODS:
            ask = partial(request, kind=kind, series=series, period=period, now=now)
            cold = sorted([await timed(ask(EncodedHistory(store))) for _ in range(COLD_ROUNDS)])
            warm = ask(EncodedHistory(store))
            await warm()
            times = sorted([await timed(warm) for _ in range(QUERY_ROUNDS)])
            queries[f"{kind_name} {period}"] = {
                "points": (await warm()).count(b'"timestamp"'),
                "cold_p50_ms": round(statistics.median(cold) * 1000, 2),
                "cold_max_ms": round(cold[-1] * 1000, 2),
                "p50_ms": round(statistics.median(times) * 1000, 2),
                "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 2),
            }
    return queries


async def normal_operation(steady: Path, copy: Path) -> dict:
    """A day of the app's writes, across midnight, without the waiting."""
    shutil.copyfile(steady, copy)
    rng = random.Random(4)
    db = await Database.open(copy)
    store = MetricsStore(db, RETENTION)
    start = NOW + 3600
    await collect(store, start - 600, 600, rng)  # settle: a new process' first cycle is done
    before = written_bytes()
    started = time.perf_counter()
    cycles = await collect(store, start, DAY, rng)
    await store.flush()
    await db.close()
    written = written_bytes() - before
    slowest = max(cycles, key=cycles.__getitem__)
    midnight = [seconds for ts, seconds in cycles.items() if ts % DAY < MIDNIGHT_WORK]
    return {
        "bytes_written": written,
        "mb_written_per_day": round(written / 1e6, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "midnight_slowest_cycle_ms": round(max(midnight) * 1000, 1),
        "slowest_cycle_ms": round(cycles[slowest] * 1000, 1),
        "slowest_cycle_at": time.strftime("%H:%M UTC", time.gmtime(slowest)),
    }


async def run() -> dict:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        result = {
            "ingest": await ingest(folder / "ingest.db"),
            "steady": await steady_state(folder / "steady.db"),
        }
        result["day"] = await normal_operation(folder / "steady.db", folder / "day.db")
        return result


def main() -> None:
    result = asyncio.run(run())
    ingest_, steady, day = result["ingest"], result["steady"], result["day"]
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
        f"normal minute {steady['rollup_cycle_ms_median']} ms, "
        f"with a flush up to {steady['rollup_flush_cycle_ms_max']} ms (target < 100 ms)"
    )
    print(
        f"disk writes             {day['mb_written_per_day']} MB/day "
        f"(a simulated day in {day['seconds']} s; target < 100 MB/day)"
    )
    print(
        f"slowest cycles          midnight (00:00-00:15, daily housekeeping) "
        f"{day['midnight_slowest_cycle_ms']} ms; the day's {day['slowest_cycle_ms']} ms, "
        f"at {day['slowest_cycle_at']} (target < 100 ms)"
    )
    print(
        f"{'query':<18}{'points':>8}{'cold p50':>10}{'cold max':>10}{'p50 ms':>9}{'p99 ms':>9}"
        "   (< 20 ms)"
    )
    for name, query in steady["queries"].items():
        print(
            f"{name:<18}{query['points']:>8}{query['cold_p50_ms']:>10}{query['cold_max_ms']:>10}"
            f"{query['p50_ms']:>9}{query['p99_ms']:>9}"
        )
    save_result("store", result)


if __name__ == "__main__":
    main()
