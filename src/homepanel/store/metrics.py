"""Metrics history: raw samples, continuous roll-ups into coarser tiers, retention, queries.

Every kind of series (servers, guests, automations) is a `Kind`: its table and which columns are
gauges (averaged, weighted by the raw samples they hold), counters per interval (summed) and the
gauge whose minimum and maximum are kept, so a CPU spike survives averaging. The SQL for every
kind is generated from that one description.

Roll-ups run every minute over closed buckets only, between a per-(kind, tier) watermark and
the last closed bucket, in the same transaction that moves the watermark. Rerunning one (after
a crash, say) recomputes the same rows from the same source rows, and after downtime the gap is
caught up in one go. Retention deletes run in bounded batches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from homepanel.store.db import Database

RAW, MINUTE, FIVE_MIN, THIRTY_MIN, HOUR = 0, 60, 300, 1800, 3600
ROLLUPS = ((MINUTE, RAW), (FIVE_MIN, MINUTE), (THIRTY_MIN, FIVE_MIN), (HOUR, THIRTY_MIN))
# A raw sample is stamped with its collection tick but may be written up to ~35 s later (three
# tries with 1, 2, 4 s backoff and a 10 s timeout each): a bucket counts as closed only then.
GRACE = 60
DELETE_BATCH = 5000
DELETE_BATCHES_PER_CYCLE = 20
VACUUM_PAGES = 256

# period -> (tier, seconds covered)
PERIODS: Mapping[str, tuple[int, int]] = {
    "1h": (RAW, 3600),
    "6h": (MINUTE, 6 * 3600),
    "24h": (MINUTE, 86400),
    "7d": (FIVE_MIN, 7 * 86400),
    "30d": (THIRTY_MIN, 30 * 86400),
    "1y": (HOUR, 365 * 86400),
}


@dataclass(frozen=True)
class Kind:
    name: str
    table: str
    gauges: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()  # per-interval deltas: summed by roll-ups
    spread: str | None = None  # the gauge whose min and max are kept as cpu_min / cpu_max

    @property
    def columns(self) -> tuple[str, ...]:
        extremes = ("cpu_min", "cpu_max") if self.spread else ()
        return (*self.gauges, *extremes, *self.counters)

    def raw_values(self, values: Mapping[str, float | None]) -> list[float | None]:
        row = dict(values)
        if self.spread:
            row["cpu_min"] = row["cpu_max"] = values.get(self.spread)
        return [row.get(column) for column in self.columns]


SERVER = Kind(
    "server",
    "server_samples",
    gauges=(
        "cpu_percent",
        "ram_used",
        "ram_total",
        "ram_percent",
        "disk_read",
        "disk_write",
        "net_rx",
        "net_tx",
    ),
    spread="cpu_percent",
)
VM = Kind(
    "vm",
    "vm_samples",
    gauges=("cpu_percent", "ram_used", "ram_total", "disk_read", "disk_write", "net_rx", "net_tx"),
    spread="cpu_percent",
)
AUTOMATION = Kind("automation", "automation_samples", counters=("triggers_count", "errors_count"))
KINDS = (SERVER, VM, AUTOMATION)


def counter_delta(previous: float | None, current: float | None) -> float | None:
    """How much a cumulative counter grew. A counter that went down was reset (a restart or
    reboot): it counted from zero, so its value is the growth, not a negative spike."""
    if previous is None or current is None:
        return None
    return current - previous if current >= previous else current


@dataclass(frozen=True, slots=True)
class Retention:
    """Seconds kept per tier, and for device states."""

    tiers: Mapping[int, int]
    device_states: int


class MetricsStore:
    """The metrics tables of `db`: writes go through its writer task, reads through its reader."""

    def __init__(self, db: Database, retention: Retention) -> None:
        self._db = db
        self._retention = retention
        self._series: dict[tuple[str, str], int] = {}

    # --- writing -----------------------------------------------------------------------------

    async def write_samples(
        self, kind: Kind, ts: int, samples: Mapping[str, Mapping[str, float | None]]
    ) -> None:
        """One raw sample per series name, all stamped `ts` (a collection cycle)."""
        await self.write_rows(kind, [(name, ts, values) for name, values in samples.items()])

    async def write_rows(
        self, kind: Kind, rows: Sequence[tuple[str, int, Mapping[str, float | None]]]
    ) -> None:
        """Raw samples as (series name, ts, values), in one transaction.

        A retried collection that lands on the same `ts` replaces the sample, never doubles it.
        """
        columns = ("series_id", "tier", "ts", "n", *kind.columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in ("n", *kind.columns))
        sql = (
            f"INSERT INTO {kind.table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT (series_id, tier, ts) DO UPDATE SET {updates}"
        )

        async def job(connection: aiosqlite.Connection) -> None:
            ids = {name: await self._series_id(connection, kind.name, name) for name, _, _ in rows}
            await connection.executemany(
                sql, [(ids[name], RAW, ts, 1, *kind.raw_values(v)) for name, ts, v in rows]
            )

        await self._db.write(job)

    async def write_device_states(self, states: Sequence[tuple[str, int, Any]]) -> None:
        """(topic, ms timestamp, state) rows; the caller decides what counts as a change."""

        async def job(connection: aiosqlite.Connection) -> None:
            rows = [
                (await self._series_id(connection, "device", topic), ts_ms, json.dumps(state))
                for topic, ts_ms, state in states
            ]
            await connection.executemany(
                "INSERT OR REPLACE INTO device_states (series_id, ts_ms, state) VALUES (?, ?, ?)",
                rows,
            )

        await self._db.write(job)

    async def _series_id(self, connection: aiosqlite.Connection, kind: str, name: str) -> int:
        key = (kind, name)
        if key not in self._series:
            await connection.execute(
                "INSERT OR IGNORE INTO series (kind, name) VALUES (?, ?)", (kind, name)
            )
            async with connection.execute(
                "SELECT id FROM series WHERE kind = ? AND name = ?", key
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            self._series[key] = row[0]
        return self._series[key]

    # --- roll-ups and retention ------------------------------------------------------------

    async def maintain(self, now: float) -> None:
        """One maintenance cycle, in one transaction (one commit, not one per step): roll up
        closed buckets, then expire old rows, then give freed pages back to the file system."""
        await self._db.write(lambda connection: self._maintain(connection, now))

    async def _maintain(self, connection: aiosqlite.Connection, now: float) -> None:
        for kind in KINDS:
            for tier, source in ROLLUPS:
                await _rollup(connection, kind, tier, source, now)
        for kind in KINDS:
            for tier, keep in self._retention.tiers.items():
                sql = _expire_sql(kind.table, "(series_id, tier, ts)", "ts", "tier = ?")
                await _expire(connection, sql, (kind.name, tier, int(now - keep)))
        cutoff_ms = int((now - self._retention.device_states) * 1000)
        sql = _expire_sql("device_states", "(series_id, ts_ms)", "ts_ms", "1")
        await _expire(connection, sql, ("device", cutoff_ms))
        await _vacuum(connection)

    # --- reading -----------------------------------------------------------------------------

    async def known(self, kind: str, name: str) -> int | None:
        rows = await self._db.fetchall(
            "SELECT id FROM series WHERE kind = ? AND name = ?", (kind, name)
        )
        return rows[0][0] if rows else None

    async def history(
        self, kind: Kind, series_id: int, period: str, now: float
    ) -> tuple[int, list[dict[str, Any]]]:
        """The tier `period` reads (see PERIODS) and its points in the period, oldest first."""
        tier, seconds = PERIODS[period]
        return tier, await self.samples(kind, series_id, tier, now - seconds)

    async def samples(
        self, kind: Kind, series_id: int, tier: int, since: float
    ) -> list[dict[str, Any]]:
        """The series' points of `tier` from `since` on, oldest first."""
        names = ("ts", *kind.columns)
        rows = await self._db.fetchall(
            f"SELECT {', '.join(names)} FROM {kind.table} "
            "WHERE series_id = ? AND tier = ? AND ts >= ? ORDER BY ts",
            (series_id, tier, int(since)),
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def device_states(self, series_id: int, since: float) -> list[tuple[int, Any]]:
        rows = await self._db.fetchall(
            "SELECT ts_ms, state FROM device_states WHERE series_id = ? AND ts_ms >= ? "
            "ORDER BY ts_ms",
            (series_id, int(since * 1000)),
        )
        return [(ts_ms, json.loads(state)) for ts_ms, state in rows]

    async def last_device_states(self) -> dict[str, Any]:
        """Each topic's newest stored state, to compare the next message with after a restart."""
        rows = await self._db.fetchall(
            "SELECT s.name, d.state FROM series s JOIN device_states d ON d.series_id = s.id "
            "WHERE s.kind = 'device' AND d.ts_ms = "
            "(SELECT MAX(ts_ms) FROM device_states WHERE series_id = s.id)"
        )
        return {name: json.loads(state) for name, state in rows}

    async def row_counts(self) -> dict[str, int]:
        """Rows per table, for operators and benchmarks."""
        tables = [kind.table for kind in KINDS] + ["device_states", "series"]
        counts = {}
        for table in tables:
            counts[table] = (await self._db.fetchall(f"SELECT COUNT(*) FROM {table}"))[0][0]
        return counts


def _rollup_sql(kind: Kind) -> str:
    weighted = [f"SUM({g} * n) / SUM(CASE WHEN {g} IS NOT NULL THEN n END)" for g in kind.gauges]
    extremes = ["MIN(cpu_min)", "MAX(cpu_max)"] if kind.spread else []
    sums = [f"SUM({c})" for c in kind.counters]
    columns = ("series_id", "tier", "ts", "n", *kind.columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in ("n", *kind.columns))
    return (
        f"INSERT INTO {kind.table} ({', '.join(columns)}) "
        f"SELECT series_id, :tier, (ts / :tier) * :tier AS bucket, SUM(n), "
        f"{', '.join([*weighted, *extremes, *sums])} "
        f"FROM {kind.table} "
        "WHERE series_id IN (SELECT id FROM series WHERE kind = :kind) "
        "AND tier = :source AND ts >= :start AND ts < :end "
        "GROUP BY series_id, bucket "
        f"ON CONFLICT (series_id, tier, ts) DO UPDATE SET {updates}"
    )


async def _rollup(
    connection: aiosqlite.Connection, kind: Kind, tier: int, source: int, now: float
) -> None:
    """Fold the closed `source` buckets since the watermark into `tier` buckets."""
    end = int(now - GRACE) // tier * tier
    if source != RAW:  # only what the finer tier has completed
        end = min(end, (await _watermark(connection, kind, source) or 0) // tier * tier)
    start = await _watermark(connection, kind, tier)
    if start is None:
        async with connection.execute(
            f"SELECT MIN(ts) FROM {kind.table} WHERE tier = ?", (source,)
        ) as cursor:
            first = (await cursor.fetchone() or (None,))[0]
        if first is None:
            return
        start = first // tier * tier
    if start >= end:
        return
    parameters = {"tier": tier, "source": source, "kind": kind.name, "start": start, "end": end}
    await connection.execute(_rollup_sql(kind), parameters)
    await connection.execute(
        "INSERT INTO rollups (kind, tier, done_until) VALUES (?, ?, ?) "
        "ON CONFLICT (kind, tier) DO UPDATE SET done_until = excluded.done_until",
        (kind.name, tier, end),
    )


def _expire_sql(table: str, key: str, column: str, condition: str) -> str:
    return (
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key[1:-1]} FROM {table} "
        f"WHERE series_id IN (SELECT id FROM series WHERE kind = ?) AND {condition} "
        f"AND {column} < ? LIMIT {DELETE_BATCH})"
    )


async def _expire(connection: aiosqlite.Connection, sql: str, parameters: tuple[Any, ...]) -> None:
    """Delete in bounded batches, so a long backlog (after downtime) never holds the writer
    for long; what is left is deleted in the next cycles."""
    for _ in range(DELETE_BATCHES_PER_CYCLE):
        cursor = await connection.execute(sql, parameters)
        if cursor.rowcount < DELETE_BATCH:
            return


async def _watermark(connection: aiosqlite.Connection, kind: Kind, tier: int) -> int | None:
    async with connection.execute(
        "SELECT done_until FROM rollups WHERE kind = ? AND tier = ?", (kind.name, tier)
    ) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None


async def _vacuum(connection: aiosqlite.Connection) -> None:
    # The pragma frees one page per result row: it only works if the rows are stepped through.
    async with connection.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})") as cursor:
        await cursor.fetchall()
