"""How big the metrics database gets: the steady state after a year of the spec's fleet.

Run: `python -m bench.metrics_size` (writes bench/results/metrics_size.json).

The fleet is the spec's: 2 servers (raw every 10 s), 24 guests (30 s), 11 automations (5 s)
and 50 devices. After a year every tier holds its retention window, which the simulated-year
test (tests/test_metrics_store.py) checks the roll-ups converge to. So this builds that steady
state directly: raw rows through the store's own write path, rolled rows of each tier at its
spacing, each in the table the store keeps it in at that age (the day's recent rows apart from
the archive), device states at an assumed rate of one change per device every 10 minutes kept
for 90 days. It then reports rows per series and the file's size.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
from pathlib import Path

import aiosqlite

from bench import save_result
from homepanel.store.db import Database
from homepanel.store.metrics import (
    AUTOMATION,
    DAY,
    FIVE_MIN,
    HOUR,
    KEPT_TIERS,
    MINUTE,
    SERVER,
    THIRTY_MIN,
    VM,
    Kind,
    MetricsStore,
    Retention,
)
from homepanel.store.schema import device_point

NOW = 1_800_000_000
FLEET = {SERVER: (2, 10), VM: (24, 30), AUTOMATION: (11, 5)}  # kind: (series, raw interval)
WINDOWS = {MINUTE: 86400, FIVE_MIN: 7 * 86400, THIRTY_MIN: 30 * 86400, HOUR: 365 * 86400}
DEVICES = 50
DEVICE_CHANGE_EVERY = 600
DEVICE_DAYS = 90


def values(kind: Kind, rng: random.Random) -> dict[str, float]:
    figures = {
        "cpu_percent": rng.uniform(0, 100),
        "ram_used": rng.uniform(1e9, 6e10),
        "ram_total": 66571993088,
        "ram_percent": rng.uniform(0, 100),
        "net_rx": rng.uniform(0, 1e6),
        "net_tx": rng.uniform(0, 1e6),
        "disk_read": rng.uniform(0, 1e6),
        "disk_write": rng.uniform(0, 1e6),
        "triggers_count": rng.randint(0, 20),
        "errors_count": rng.randint(0, 2),
    }
    if kind is SERVER:
        figures["disk_read"] = figures["disk_write"] = None  # type: ignore[assignment]
    return {column: figures[column] for column in (*kind.gauges, *kind.counters)}


async def build(path: Path) -> dict:
    rng = random.Random(1)
    db = await Database.open(path)
    store = MetricsStore(db, Retention(tiers={}, device_states=DEVICE_DAYS * 86400))
    for kind, (count, interval) in FLEET.items():
        names = [f"{kind.name}-{i}" for i in range(count)]
        raw = [
            (name, ts, values(kind, rng))
            for name in names
            for ts in range(NOW - 3600, NOW, interval)
        ]
        await store.record_rows(kind, raw)
        await store.flush()
        for tier, window in WINDOWS.items():
            await _rolled(db, store, kind, names, tier, window, interval, rng)
    today = NOW // DAY * DAY  # the store moves device states to their archive once a day
    for device in range(DEVICES):
        topic = f"zigbee2mqtt/room-{device}-sensor"
        start = NOW - DEVICE_DAYS * 86400
        states = [
            (topic, ts * 1000, {"temperature": round(rng.uniform(18, 25), 1), "humidity": 45})
            for ts in range(start, NOW, DEVICE_CHANGE_EVERY)
        ]
        await store.record_device_states([state for state in states if state[1] >= today * 1000])
        await store.flush()
        topic_id = await store.known("device", topic)
        await _archived_states(db, topic_id, [s for s in states if s[1] < today * 1000])
    counts = await store.row_counts()
    await db.close()  # the last connection to close checkpoints the WAL into the file
    size = path.stat().st_size  # noqa: ASYNC240 - once, after everything is written
    series = sum(count for count, _ in FLEET.values())
    samples = sum(counts[kind.table] for kind in FLEET)
    return {
        "rows": counts,
        "rows_per_series": {
            kind.name: counts[kind.table] // count for kind, (count, _) in FLEET.items()
        },
        "device_states_per_device": counts["device_states"] // DEVICES,
        "size_bytes": size,
        "size_mb": round(size / 1e6, 1),
        "bytes_per_stored_row": round(size / (samples + counts["device_states"]), 1),
        "series": series,
    }


async def _rolled(
    db: Database,
    store: MetricsStore,
    kind: Kind,
    names: list[str],
    tier: int,
    window: int,
    interval: int,
    rng: random.Random,
) -> None:
    """A tier's rows over its window: yesterday's and today's in the recent tables, older
    ones in the archive, as the store keeps them (archived hourly rows with their JSON)."""
    columns = ("series_id", "tier", "ts", "n", *kind.columns)
    ids = {row[1]: row[0] for row in await db.fetchall("SELECT id, name FROM series")}
    tables: dict[str, list[tuple]] = {}
    recent_from = (NOW // DAY - 1) * DAY
    for name in names:
        for ts in range(NOW - window, NOW, tier):
            sample = values(kind, rng)
            if kind.spread:
                sample["cpu_min"] = sample["cpu_percent"] - 5
                sample["cpu_max"] = sample["cpu_percent"] + 5
            table = store.table_for(kind, tier, ts) if ts >= recent_from else kind.table
            row = (ids[name], tier, ts, tier // interval, *[sample.get(c) for c in kind.columns])
            tables.setdefault(table, []).append(row)

    async def job(connection: aiosqlite.Connection) -> None:
        for table, rows in tables.items():
            await connection.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - constants only
                f"VALUES ({', '.join('?' * len(columns))})",
                rows,
            )
        if tier in KEPT_TIERS:
            await connection.execute(
                f"UPDATE {kind.table} SET point = {kind.stored_look}, "  # noqa: S608
                f"point_look = {kind.look_id} WHERE tier = {tier}"
            )

    await db.write(job)


async def _archived_states(db: Database, series: int | None, states: list[tuple]) -> None:
    async def job(connection: aiosqlite.Connection) -> None:
        await connection.executemany(
            "INSERT INTO device_states (series_id, ts_ms, point) "  # noqa: S608 - constants only
            f"VALUES (?1, ?2, {device_point('?2', '?3')})",
            [(series, ts_ms, json.dumps(state)) for _, ts_ms, state in states],
        )

    await db.write(job)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        result = asyncio.run(build(Path(directory) / "metrics.db"))
    print(f"{'kind':<12}{'rows per series':>18}")
    for kind, rows in result["rows_per_series"].items():
        print(f"{kind:<12}{rows:>18}")
    print(f"{'device':<12}{result['device_states_per_device']:>18}  (states per device)")
    print(f"database: {result['size_mb']} MB, {result['bytes_per_stored_row']} bytes per row")
    save_result("metrics_size", result)


if __name__ == "__main__":
    main()
