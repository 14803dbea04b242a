"""The metrics store under simulated time: a year of samples, its tiers, retention and restarts.

A server's CPU follows a sawtooth over each hour (0 % at :00, 99.7 % at :59:50) and an
automation triggers once per sample, so every bucket's exact average, minimum, maximum and sum
are known in advance. Samples come every 30 s for a whole year; maintenance (roll-ups, the
flush and retention) runs once per simulated day, so each run also catches up a day of backlog,
as after downtime.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import to_json

from homepanel.metrics.points import EncodedHistory
from homepanel.store import db as db_module
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
    Kind,
    MetricsStore,
    Retention,
    counter_delta,
)
from homepanel.store.runs import EMPTY, RUN_COLUMNS, Run, joined, merged

DAY = 86400
STEP = 30  # the guests' collection interval: two raw samples per minute bucket
START = 1_767_225_600  # 2026-01-01 00:00:00 UTC, a whole hour
RETENTION = Retention(
    tiers={RAW: 3600, MINUTE: DAY, FIVE_MIN: 7 * DAY, THIRTY_MIN: 30 * DAY, HOUR: 365 * DAY},
    device_states=90 * DAY,
)
STEADY_ROWS = {RAW: 3600 // STEP, MINUTE: 1440, FIVE_MIN: 2016, THIRTY_MIN: 1440, HOUR: 8760}
# Rows leave a whole period at a time (raw: an hour, roll-ups: a day), so up to one more is kept.
UP_TO_MORE = {RAW: 3600 // STEP, MINUTE: 1440, FIVE_MIN: 288, THIRTY_MIN: 48, HOUR: 24}


def cpu(ts: int) -> float:
    return (ts % 3600) / 36


def expected_average(bucket: int, tier: int) -> float:
    samples = range(bucket, bucket + tier, STEP)
    return sum(cpu(ts) for ts in samples) / len(samples)


async def write_day(store: MetricsStore, day_start: int) -> None:
    stamps = range(day_start, day_start + DAY, STEP)
    await store.record_rows(
        SERVER, [("nas", ts, {"cpu_percent": cpu(ts), "ram_used": 1e9}) for ts in stamps]
    )
    await store.record_rows(AUTOMATION, [("main/a", ts, {"triggers_count": 1}) for ts in stamps])
    await store.record_device_states([("home/door", day_start * 1000, {"open": day_start})])


async def open_store(path: Path, flush_interval: int = 600) -> tuple[Database, MetricsStore]:
    db = await Database.open(path)
    return db, MetricsStore(db, RETENTION, flush_interval)


async def history(
    store: MetricsStore, kind: Kind, name: str, period: str, now: float
) -> list[dict[str, Any]]:
    """The points the API would show for `period`, as dicts."""
    series = await store.known(kind.name, name)
    assert series is not None
    tier, seconds = PERIODS[period]
    rows = await store.points(kind, series, tier, now - seconds)
    return [dict(zip(("ts", *kind.columns), row, strict=True)) for row in rows]


def rows_per_tier(path: Path, kind: Kind) -> Counter[int]:
    """Committed rows per tier, wherever they are stored."""
    counts: Counter[int] = Counter()
    with sqlite3.connect(path) as connection:
        for table in (kind.table, f"{kind.name}_recent_0", f"{kind.name}_recent_1"):
            sql = f"SELECT tier, COUNT(*) FROM {table} GROUP BY tier"  # noqa: S608
            counts.update(dict(connection.execute(sql).fetchall()))
        for half in (0, 1):
            sql = f"SELECT COUNT(*) FROM {kind.name}_raw_{half}"  # noqa: S608
            counts[RAW] += connection.execute(sql).fetchone()[0]
    return +counts


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

    # Every period reads its tier, evenly spaced, with exact averages, up to the last closed one.
    for period, (tier, seconds) in PERIODS.items():
        points = await history(store, SERVER, "nas", period, now)
        spacing = tier or STEP
        stamps = [p["ts"] for p in points]
        assert all(b - a == spacing for a, b in itertools.pairwise(stamps)), period
        assert stamps[0] >= now - seconds
        if tier == RAW:
            assert stamps[-1] == now - STEP
        else:
            assert stamps[-1] == (now - GRACE) // tier * tier - tier, period
            for point in points[:: max(1, len(points) // 50)]:
                average = expected_average(point["ts"], tier)
                assert math.isclose(point["cpu_percent"], average, abs_tol=1e-9), (period, point)
                assert point["cpu_min"] == cpu(point["ts"])  # the spike survives averaging
                assert point["cpu_max"] == cpu(point["ts"] + tier - STEP)
        for point in points:
            assert point["ram_used"] == 1e9

    # Counters are summed: one trigger per sample.
    for period, (tier, _) in PERIODS.items():
        points = await history(store, AUTOMATION, "main/a", period, now)
        expected = 1 if tier == RAW else tier // STEP
        assert {p["triggers_count"] for p in points} == {expected}, period

    # Each tier holds its retention window, and at most one more period: the steady state.
    for kind in (SERVER, AUTOMATION):
        counts = rows_per_tier(path, kind)
        for tier, steady in STEADY_ROWS.items():
            assert steady - 2 <= counts[tier] <= steady + UP_TO_MORE[tier], (kind, tier, counts)

    # Device states: one per day kept for 90 days.
    door = await store.known("device", "home/door")
    assert door is not None
    states = (await store.device_points(door, 0)).rows()
    assert len(states) == 90
    assert states[0][0] >= (now - 90 * DAY) * 1000

    await db.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental


async def test_waiting_rows_are_read_before_the_flush(tmp_path: Path) -> None:
    """Between flushes, samples and the buckets they close are in memory only, and every
    period still reads up to the last closed bucket. The flush changes no answer."""
    path = tmp_path / "metrics.db"
    db, store = await open_store(path, flush_interval=DAY)
    await store.maintain(START)  # the first cycle flushes (nothing yet)
    for ts in range(START, START + 3600, STEP):
        await store.record_rows(SERVER, [("nas", ts, {"cpu_percent": cpu(ts)})])
        await store.maintain(ts)
    now = START + 3600 + GRACE  # the first hour bucket has just closed
    await store.maintain(now)
    before = {period: await history(store, SERVER, "nas", period, now) for period in PERIODS}
    assert rows_per_tier(path, SERVER) == Counter()  # nothing committed yet
    assert [p["ts"] for p in before["1h"]] == list(range(now - 3600, START + 3600, STEP))
    for period, (tier, _) in PERIODS.items():
        if tier != RAW:  # the last bucket closed GRACE after its end
            assert before[period][-1]["ts"] == (now - GRACE) // tier * tier - tier, period

    await store.flush()
    assert rows_per_tier(path, SERVER)[RAW] == 3600 // STEP
    after = {period: await history(store, SERVER, "nas", period, now) for period in PERIODS}
    assert after == before
    await db.close()


async def test_rollups_are_idempotent_and_never_double(tmp_path: Path) -> None:
    """Running maintenance again, or in a new process after forgetting the watermarks (as if
    none had been committed), recomputes the same rows: nothing is counted twice."""
    path = tmp_path / "metrics.db"
    db, store = await open_store(path)
    for day in range(3):  # rows in the archive, in the recent tables and in memory
        await write_day(store, START + day * DAY)
        await store.maintain(START + (day + 1) * DAY)
    now = START + 3 * DAY
    first = {period: await history(store, SERVER, "nas", period, now) for period in PERIODS}
    await store.maintain(now)
    await store.flush()
    before = rows_per_tier(path, SERVER)
    await db.execute("DELETE FROM rollups")
    await db.close()
    db, again = await open_store(path)
    await again.maintain(now)
    await again.flush()
    assert rows_per_tier(path, SERVER) == before
    for period in PERIODS:
        assert await history(again, SERVER, "nas", period, now) == first[period], period
    await db.close()


async def test_a_retried_sample_replaces_instead_of_doubling(tmp_path: Path) -> None:
    db, store = await open_store(tmp_path / "metrics.db")
    await store.record_samples(SERVER, START, {"nas": {"cpu_percent": 10.0}})
    await store.record_samples(SERVER, START, {"nas": {"cpu_percent": 20.0}})  # waiting
    await store.flush()
    await store.record_samples(SERVER, START, {"nas": {"cpu_percent": 30.0}})  # stored
    points = await history(store, SERVER, "nas", "1h", START + 60)
    assert [(p["ts"], p["cpu_percent"]) for p in points] == [(START, 30.0)]
    await store.flush()
    assert await history(store, SERVER, "nas", "1h", START + 60) == points
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
        assert connection.execute("PRAGMA user_version").fetchone() == (6,)
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer than this release"):
        await Database.open(path)


async def test_the_wal_is_checkpointed_beside_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own checkpoint is off (it ran inside a commit); once the WAL holds
    CHECKPOINT_PAGES, a connection of its own copies it into the file, and the next commit
    starts the WAL over, cut back."""
    monkeypatch.setattr(db_module, "CHECKPOINT_PAGES", 100)
    db = await Database.open(tmp_path / "metrics.db")
    wal = tmp_path / "metrics.db-wal"
    await db.execute("CREATE TABLE t (x BLOB)")
    await db.execute("INSERT INTO t VALUES (zeroblob(1000000))")  # some 250 pages
    assert wal.stat().st_size > 200 * 4096
    for _ in range(100):
        await db.execute("INSERT INTO t VALUES (1)")
        if wal.stat().st_size < 100 * 4096:
            break
        await asyncio.sleep(0.02)
    assert wal.stat().st_size < 100 * 4096
    assert await db.fetchall("SELECT MAX(length(x)) FROM t") == [(1000000,)]  # in the file now
    await db.close()


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


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ("server_samples", "series_id = 1 AND tier = 60 AND ts >= 0"),
        ("server_recent_0", "tier = 60 AND ts >= 0 AND series_id = 1"),
        ("server_raw_0", "ts >= 0 AND series_id = 1"),
    ],
)
def test_reads_use_the_primary_key(tmp_path: Path, table: str, where: str) -> None:
    """Each table is read with one range scan on its primary key, with no sort step."""
    path = tmp_path / "metrics.db"
    from homepanel.store.schema import MIGRATIONS

    with sqlite3.connect(path) as connection:
        for script in MIGRATIONS:
            connection.executescript(script)
        sql = f"SELECT ts, cpu_percent FROM {table} WHERE {where} ORDER BY ts"  # noqa: S608
        plan = connection.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    details = " ".join(row[-1] for row in plan)
    assert f"SEARCH {table} USING PRIMARY KEY" in details
    assert "ts>?" in details
    assert "TEMP B-TREE" not in details


def api_figure(column: str, value: float | None) -> float | None:
    """A figure as the API shows it: bytes whole, the rest to 2 places (of the figure times
    100, a double), halves away from zero."""
    if value is None:
        return None
    if column in ("ram_used", "ram_total"):
        return int(Decimal(value).quantize(Decimal(1), ROUND_HALF_UP))
    return int(Decimal(value * 100).quantize(Decimal(1), ROUND_HALF_UP)) / 100


def as_api(kind: Kind, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored points as the API shows them."""
    return [
        {"timestamp": row["ts"]}
        | {column: api_figure(column, row[column]) for column in kind.columns}
        for row in rows
    ]


async def texts(store: MetricsStore, tier: int, since: int) -> list[dict[str, Any]]:
    nas = await store.known("server", "nas")
    assert nas is not None
    run = await store.point_run(SERVER, nas, tier, since)
    return [json.loads(text) for _, text in run.rows()]


async def test_a_point_looks_the_same_waiting_stored_and_archived(tmp_path: Path) -> None:
    """Every way a point reaches the API builds the same JSON: waiting in memory, stored, and
    archived with its JSON kept, on halves, negatives, whole bytes, nulls and large figures.
    The kept JSON is what is sent, unless another look made it."""
    db = await Database.open(tmp_path / "metrics.db")
    retention = Retention(tiers={**RETENTION.tiers, RAW: DAY}, device_states=DAY)
    store = MetricsStore(db, retention)  # raw samples kept a day: in the table of the day
    figures = [0.015, 0.125, 2.675, 1.005, -0.015, -2.5, 2.5, 99.995, 7, 0.0, None, 1e12 + 0.125]
    samples = [
        {"cpu_percent": value, "ram_used": value, "ram_total": 66571993088, "net_rx": value}
        for value in figures
    ]
    rows = [("nas", START + hour * 3600, sample) for hour, sample in enumerate(samples)]
    expected = [
        {"timestamp": ts}
        | {column: api_figure(column, sample.get(column)) for column in SERVER.figures}
        | {"cpu_min": api_figure("cpu_min", sample["cpu_percent"])}
        | {"cpu_max": api_figure("cpu_max", sample["cpu_percent"])}
        for _, ts, sample in rows
    ]
    await store.record_rows(SERVER, rows)
    assert await texts(store, RAW, START) == expected  # waiting
    await store.flush()
    assert await texts(store, RAW, START) == expected  # stored
    await store.maintain(START + 3 * DAY)  # hourly rows, then their day archived
    with sqlite3.connect(db.path) as connection:
        kept = connection.execute("SELECT COUNT(*) FROM server_samples WHERE point IS NOT NULL")
        assert kept.fetchone() == (len(rows),)
    assert await texts(store, HOUR, START) == expected  # archived, JSON kept

    garbled = b'{"timestamp": 0}'
    await db.execute("UPDATE server_samples SET point = ? WHERE ts = ?", (garbled, START))
    assert (await texts(store, HOUR, START))[0] == {"timestamp": 0}  # the kept JSON is sent
    await db.execute("UPDATE server_samples SET point_look = 1 WHERE ts = ?", (START,))
    assert await texts(store, HOUR, START) == expected  # made by another look: built anew
    await db.close()


async def test_encoded_points_follow_the_store(tmp_path: Path) -> None:
    """The JSON the routes send equals the store's points, rounded, whether it comes from a
    cold start, from kept points plus new ones, or after the cache had to let series go."""
    db, store = await open_store(tmp_path / "metrics.db")
    warm, tiny = EncodedHistory(store), EncodedHistory(store, max_points=100)
    for day in range(2):
        await write_day(store, START + day * DAY)
        await store.maintain(START + (day + 1) * DAY)
    nas = await store.known("server", "nas")
    assert nas is not None
    for now in (START + 2 * DAY, START + 2 * DAY + 7200):
        if now > START + 2 * DAY:  # two more hours, waiting for the flush
            stamps = range(START + 2 * DAY, now, STEP)
            await store.record_rows(
                SERVER, [("nas", ts, {"cpu_percent": cpu(ts)}) for ts in stamps]
            )
            await store.maintain(now)
        for period in PERIODS:
            expected = as_api(SERVER, await history(store, SERVER, "nas", period, now))
            for encoded in (warm, tiny, EncodedHistory(store)):
                got = json.loads(await encoded.points(SERVER, nas, period, now))
                assert got == expected, period
    await db.close()


RUN_ROWS = [(10, b'{"a":1}'), (20, '"Café"'.encode()), (30, b"[1,2]"), (40, b"null")]


def test_a_run_splits_joins_and_merges_as_its_points() -> None:
    """A run is its points' JSON joined by commas: read from SQLite's aggregate as from
    rows, split and joined anywhere, merged with waiting points that replace stored ones,
    and put in order whatever order its parts came in."""
    run = Run.of_rows(RUN_ROWS)
    assert run.text == b'{"a":1},"Caf\xc3\xa9",[1,2],null' and run.rows() == RUN_ROWS
    with sqlite3.connect(":memory:") as connection:
        connection.execute("CREATE TABLE t (ts INTEGER, p BLOB)")
        connection.executemany("INSERT INTO t VALUES (?, ?)", RUN_ROWS)
        for since, expected in ((0, RUN_ROWS), (25, RUN_ROWS[2:]), (99, [])):
            sql = f"SELECT {RUN_COLUMNS} FROM t WHERE ts > ?"  # noqa: S608 - our constant
            aggregate = connection.execute(sql, (since,))
            assert Run.of_aggregate(*aggregate.fetchone()).rows() == expected
    for index in range(-1, len(RUN_ROWS) + 2):
        before, after = run.split(index)
        assert (before.rows(), after.rows()) == (
            RUN_ROWS[: max(index, 0)],
            RUN_ROWS[max(index, 0) :],
        )
        assert joined([before, after]) == run
    parts = [Run.of_rows(RUN_ROWS[2:]), EMPTY, Run.of_rows(RUN_ROWS[:2])]
    assert merged(parts, {}) == run
    waiting = {20: (20, b'"again"'), 50: (50, b"1")}
    assert merged(parts, waiting).rows() == [
        RUN_ROWS[0],
        (20, b'"again"'),
        *RUN_ROWS[2:],
        (50, b"1"),
    ]
    shuffled = Run.of_rows([RUN_ROWS[1], RUN_ROWS[0], *RUN_ROWS[2:]])  # a table read out of order
    assert merged([shuffled], {}) == run


async def test_encoded_device_states_respect_retention(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metrics.db")
    store = MetricsStore(db, Retention(tiers={}, device_states=DAY))
    for hour in range(48):
        await store.record_device_states([("home/door", (START + hour * 3600) * 1000, hour)])
    door = await store.known("device", "home/door")
    assert door is not None
    now = START + 48 * 3600
    got = json.loads(await EncodedHistory(store).device_states(door, "1y", now))
    assert [(p["timestamp"], p["state"]) for p in got] == [
        (START + hour * 3600, hour) for hour in range(24, 48)
    ]
    await db.close()


# Device states as the API shows them, on the edges of writing milliseconds as seconds.
DEVICE_STATES = [
    (0, {"contact": True, "linkquality": 80}),
    (1, "ON"),
    (5, None),
    (10, 21.5),
    (120, [1, "a"]),
    (999, {"name": 'Café "front"', "nested": {"ok": False}}),
    (1000, False),
]


def device_point(ts_ms: int, state: Any) -> bytes:
    """A device state's point as the API showed it when Python built it."""
    return b'{"timestamp":%b,"state":%b}' % (to_json(ts_ms / 1000), json.dumps(state).encode())


async def test_a_device_point_looks_the_same_waiting_logged_and_archived(
    tmp_path: Path,
) -> None:
    """A state's point is the same bytes whether it waits in memory, sits in the day's log or
    in the archive, and the same as Python writes it: the seconds as a float, the state's JSON
    as it came."""
    db, store = await open_store(tmp_path / "metrics.db")
    start_ms = START * 1000
    states = [(start_ms + 7_000 * i + ms, state) for i, (ms, state) in enumerate(DEVICE_STATES)]
    expected = [(ts_ms, device_point(ts_ms, state)) for ts_ms, state in states]
    await store.record_device_states([("home/door", ts_ms, state) for ts_ms, state in states])
    door = await store.known("device", "home/door")
    assert door is not None
    assert (await store.device_points(door, START)).rows() == expected  # waiting
    await store.flush()
    assert (await store.device_points(door, START)).rows() == expected  # in the day's log
    for minute in range(10):  # the daily housekeeping, a step a minute: states archived
        await store.maintain(START + 3 * DAY + minute * 60)
    with sqlite3.connect(db.path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM device_log").fetchone() == (0,)
    assert (await store.device_points(door, START)).rows() == expected  # archived
    assert (await store.device_points(door, START + 8)).rows() == expected[2:]
    got = json.loads(await EncodedHistory(store).device_states(door, "1y", START + DAY))
    assert got == [{"timestamp": ts_ms / 1000, "state": state} for ts_ms, state in states]
    assert await store.last_device_states() == {"home/door": DEVICE_STATES[-1][1]}
    await db.close()


async def test_a_version_5_database_keeps_its_device_states(tmp_path: Path) -> None:
    """Migration 6 stores each device state as its point: the API answers as before, and the
    newest state of each topic is still found after a restart."""
    path = tmp_path / "metrics.db"
    from homepanel.store.schema import MIGRATIONS

    archived, logged = DEVICE_STATES[:4], DEVICE_STATES[4:]
    with sqlite3.connect(path) as connection:
        connection.executescript("".join(MIGRATIONS[:5]) + "PRAGMA user_version = 5;")
        connection.execute("INSERT INTO series (id, kind, name) VALUES (1, 'device', 'a/b')")
        for table, rows in (("device_states", archived), ("device_log", logged)):
            connection.executemany(
                f"INSERT INTO {table} (series_id, ts_ms, state) VALUES (1, ?, ?)",  # noqa: S608
                [(START * 1000 + ms, json.dumps(state)) for ms, state in rows],
            )
    db, store = await open_store(path)
    assert (await store.device_points(1, START)).rows() == [
        (START * 1000 + ms, device_point(START * 1000 + ms, state)) for ms, state in DEVICE_STATES
    ]
    assert await store.last_device_states() == {"a/b": DEVICE_STATES[-1][1]}
    await db.close()


SHORT = Retention(tiers={**RETENTION.tiers, FIVE_MIN: 2 * DAY}, device_states=2 * DAY)


def housekeeping_done(path: Path, day_start: int) -> dict[str, bool]:
    """Which steps of the day's housekeeping the file shows done: each kind's recent rows of
    the day before yesterday archived, its archive within retention, device states moved."""
    left = {"device states": ("SELECT 1 FROM device_log WHERE ts_ms < ?", day_start * 1000)}
    for kind in (SERVER, AUTOMATION):
        table = f"{kind.name}_recent_{day_start // DAY % 2}"
        recent = f"SELECT 1 FROM {table} WHERE ts < ?"  # noqa: S608
        expired = f"SELECT 1 FROM {kind.table} WHERE tier = {FIVE_MIN} AND ts < ?"  # noqa: S608
        left[f"{kind.name} archived"] = (recent, day_start)
        left[f"{kind.name} expired"] = (expired, day_start - SHORT.tiers[FIVE_MIN])
    with sqlite3.connect(path) as connection:
        return {
            step: connection.execute(f"SELECT NOT EXISTS ({sql})", (bound,)).fetchone()[0] == 1
            for step, (sql, bound) in left.items()
        }


async def test_daily_housekeeping_is_spread_over_cycles(tmp_path: Path) -> None:
    """Around midnight each minute's cycle does at most one step of the day's housekeeping,
    every step is done within minutes, each period reads every point exactly once at every
    cycle, and a new process that does the steps again changes nothing."""
    path = tmp_path / "metrics.db"
    db = await Database.open(path)
    store = MetricsStore(db, SHORT)
    for day in range(3):
        await write_day(store, START + day * DAY)
    midnight = START + 3 * DAY
    for now in range(midnight - 900, midnight, 60):  # the day before: its steps done by now
        await store.maintain(now)
    before = housekeeping_done(path, midnight)
    assert not any(before.values())  # every step of the day has work to do
    steps: list[set[str]] = []
    for now in range(midnight, midnight + 900, 60):
        await store.maintain(now)
        done = housekeeping_done(path, midnight)
        steps.append({step for step, ok in done.items() if ok and not before[step]})
        before = done
        await assert_every_point_once(store, now)
    assert all(before.values()), before
    assert all(len(step) <= 1 for step in steps), steps
    assert sum(map(len, steps)) == len(before)  # each step in a cycle of its own

    now = midnight + 900
    answers = {period: await history(store, SERVER, "nas", period, now) for period in PERIODS}
    counts = rows_per_tier(path, SERVER)
    await db.close()
    db = await Database.open(path)
    again = MetricsStore(db, SHORT)  # as after a crash: today's steps are done again
    for cycle in range(10):
        await again.maintain(now + cycle * 60)
    assert rows_per_tier(path, SERVER) == counts
    for period, answer in answers.items():
        assert await history(again, SERVER, "nas", period, now) == answer, period
    await db.close()


async def assert_every_point_once(store: MetricsStore, now: int) -> None:
    """Each period's points are evenly spaced (none missing, none twice), every bucket's sum
    exact, and the device's states each shown once."""
    for period, (tier, seconds) in PERIODS.items():
        points = await history(store, AUTOMATION, "main/a", period, now)
        stamps = [point["ts"] for point in points]
        assert all(b - a == (tier or STEP) for a, b in itertools.pairwise(stamps)), (now, period)
        assert stamps[0] >= now - seconds, (now, period)
        assert {p["triggers_count"] for p in points} == {1 if tier == RAW else tier // STEP}
    door = await store.known("device", "home/door")
    assert door is not None
    stamps = (await store.device_points(door, 0)).stamps
    assert stamps == sorted(set(stamps)), now
