"""The metrics store under simulated time: a year of samples, its tiers, retention and restarts.

A server's CPU follows a sawtooth over each hour (0 % at :00, 99.7 % at :59:50) and an
automation triggers once per sample, so every bucket's exact average, minimum, maximum and sum
are known in advance. Samples come every 30 s for a whole year; maintenance (roll-ups and
retention) runs once per simulated day, so each run also catches up a day of backlog, as after
downtime.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from pathlib import Path

import pytest

from homepanel.store.db import Database
from homepanel.store.metrics import (
    AUTOMATION,
    FIVE_MIN,
    GRACE,
    HOUR,
    MINUTE,
    PERIODS,
    RAW,
    SERVER,
    THIRTY_MIN,
    MetricsStore,
    Retention,
    counter_delta,
)

DAY = 86400
STEP = 30  # the guests' collection interval: two raw samples per minute bucket
START = 1_767_225_600  # 2026-01-01 00:00:00 UTC, a whole hour
RETENTION = Retention(
    tiers={RAW: 3600, MINUTE: DAY, FIVE_MIN: 7 * DAY, THIRTY_MIN: 30 * DAY, HOUR: 365 * DAY},
    device_states=90 * DAY,
)
STEADY_ROWS = {RAW: 3600 // STEP, MINUTE: 1440, FIVE_MIN: 2016, THIRTY_MIN: 1440, HOUR: 8760}


def cpu(ts: int) -> float:
    return (ts % 3600) / 36


def expected_average(bucket: int, tier: int) -> float:
    samples = range(bucket, bucket + tier, STEP)
    return sum(cpu(ts) for ts in samples) / len(samples)


async def write_day(store: MetricsStore, day_start: int) -> None:
    stamps = range(day_start, day_start + DAY, STEP)
    await store.write_rows(
        SERVER, [("nas", ts, {"cpu_percent": cpu(ts), "ram_used": 1e9}) for ts in stamps]
    )
    await store.write_rows(AUTOMATION, [("main/a", ts, {"triggers_count": 1}) for ts in stamps])
    await store.write_device_states([("home/door", day_start * 1000, {"open": day_start})])


async def open_store(path: Path) -> tuple[Database, MetricsStore]:
    db = await Database.open(path)
    return db, MetricsStore(db, RETENTION)


def rows_per_tier(path: Path, table: str) -> dict[int, int]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"SELECT tier, COUNT(*) FROM {table} GROUP BY tier").fetchall()  # noqa: S608
    return dict(rows)


@pytest.mark.timeout(300)
async def test_a_simulated_year(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    db, store = await open_store(path)
    days = 366
    for day in range(days):
        if day == 180:  # a restart half-way: a new process, the same file
            await db.close()
            db, store = await open_store(path)
        day_start = START + day * DAY
        await write_day(store, day_start)
        await store.maintain(day_start + DAY)
    now = START + days * DAY
    await store.maintain(now)  # nothing new: an idle cycle changes nothing

    series = await store.known("server", "nas")
    assert series is not None

    # Every period reads its tier, evenly spaced, with exact averages, up to the last closed one.
    for period, (tier, seconds) in PERIODS.items():
        got_tier, points = await store.history(SERVER, series, period, now)
        assert got_tier == tier, period
        spacing = tier or STEP
        stamps = [p["ts"] for p in points]
        assert all(b - a == spacing for a, b in itertools.pairwise(stamps)), period
        assert stamps[0] >= now - seconds
        if tier == RAW:
            assert stamps[-1] == now - STEP
        else:
            assert stamps[-1] + tier <= now - GRACE + tier
            for point in points[:: max(1, len(points) // 50)]:
                average = expected_average(point["ts"], tier)
                assert math.isclose(point["cpu_percent"], average, abs_tol=1e-9), (period, point)
                assert point["cpu_min"] == cpu(point["ts"])  # the spike survives averaging
                assert point["cpu_max"] == cpu(point["ts"] + tier - STEP)
        for point in points:
            assert point["ram_used"] == 1e9

    # Counters are summed: one trigger per sample.
    automation = await store.known("automation", "main/a")
    assert automation is not None
    for period, (tier, _) in PERIODS.items():
        _, points = await store.history(AUTOMATION, automation, period, now)
        expected = 1 if tier == RAW else tier // STEP
        assert {p["triggers_count"] for p in points} == {expected}, period

    # Each tier holds its retention window and no more: the steady state.
    for table in ("server_samples", "automation_samples"):
        counts = rows_per_tier(path, table)
        for tier, steady in STEADY_ROWS.items():
            assert steady - 2 <= counts[tier] <= steady + 1, (table, tier, counts)

    # Device states: one per day kept for 90 days.
    door = await store.known("device", "home/door")
    assert door is not None
    states = await store.device_states(door, 0)
    assert len(states) == 90
    assert states[0][0] >= (now - 90 * DAY) * 1000

    await db.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental


async def test_rollups_are_idempotent_and_never_double(tmp_path: Path) -> None:
    """Running maintenance again, or after forgetting the watermarks (as a crash between two
    roll-ups would leave them), recomputes the same rows: nothing is counted twice."""
    path = tmp_path / "metrics.db"
    db, store = await open_store(path)
    await write_day(store, START)
    await store.maintain(START + DAY)
    before = rows_per_tier(path, "server_samples")
    series = await store.known("server", "nas")
    assert series is not None
    _, first = await store.history(SERVER, series, "24h", START + DAY)
    await store.maintain(START + DAY)
    await db.execute("DELETE FROM rollups")
    await store.maintain(START + DAY)
    _, again = await store.history(SERVER, series, "24h", START + DAY)
    assert again == first
    assert rows_per_tier(path, "server_samples") == before
    await db.close()


async def test_a_retried_sample_replaces_instead_of_doubling(tmp_path: Path) -> None:
    db, store = await open_store(tmp_path / "metrics.db")
    await store.write_samples(SERVER, START, {"nas": {"cpu_percent": 10.0}})
    await store.write_samples(SERVER, START, {"nas": {"cpu_percent": 20.0}})
    series = await store.known("server", "nas")
    assert series is not None
    _, points = await store.history(SERVER, series, "1h", START + 60)
    assert [(p["ts"], p["cpu_percent"]) for p in points] == [(START, 20.0)]
    await db.close()


@pytest.mark.parametrize(
    ("previous", "current", "delta"),
    [(10, 15, 5), (15, 15, 0), (153, 4, 4), (None, 5, None), (5, None, None)],
)
def test_counter_delta_survives_resets(
    previous: float | None, current: float | None, delta: float | None
) -> None:
    assert counter_delta(previous, current) == delta


async def test_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    db = await Database.open(path)
    await db.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (3,)
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer than this release"):
        await Database.open(path)


async def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    """A file from the first release (revoked tokens only) gains the metrics tables and keeps
    its rows."""
    path = tmp_path / "metrics.db"
    from homepanel.store.schema import MIGRATIONS

    with sqlite3.connect(path) as connection:
        connection.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        connection.execute("INSERT INTO revoked_tokens VALUES ('old-jti', 99999999999)")
    db = await Database.open(path)
    assert await db.fetchall("SELECT jti FROM revoked_tokens") == [("old-jti",)]
    assert await db.fetchall("SELECT COUNT(*) FROM server_samples") == [(0,)]
    await db.close()


def test_reads_use_the_primary_key(tmp_path: Path) -> None:
    """The read path is one range scan on the primary key, with no sort step."""
    path = tmp_path / "metrics.db"
    from homepanel.store.schema import MIGRATIONS

    with sqlite3.connect(path) as connection:
        for script in MIGRATIONS:
            connection.executescript(script)
        plan = connection.execute(
            "EXPLAIN QUERY PLAN SELECT ts, cpu_percent FROM server_samples "
            "WHERE series_id = 1 AND tier = 60 AND ts >= 0 ORDER BY ts"
        ).fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "SEARCH server_samples USING PRIMARY KEY (series_id=? AND tier=? AND ts>?)" in details
    assert "TEMP B-TREE" not in details
