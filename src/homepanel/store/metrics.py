"""Metrics history: raw samples, continuous roll-ups into coarser tiers, retention, queries.

Every kind of series (servers, guests, automations) is a `Kind`: its tables and which columns
are gauges (averaged, weighted by the raw samples they hold), counters per interval (summed)
and the gauge whose minimum and maximum are kept, so a CPU spike survives averaging.

Writes are what wears an SSD, so they are few and small:
- New samples, device states and roll-up rows wait in memory and are committed together, one
  transaction per `flush_interval` (10 minutes by default). A crash loses at most that much
  raw data; roll-up rows are recomputed from what was committed. Queries read both, so every
  period has data up to the last closed bucket.
- Roll-ups run every minute over closed buckets only, between a per-(kind, tier) watermark and
  the last closed bucket, and the watermark is committed with the rows. Rerunning one (after a
  crash, say) recomputes the same rows, and after downtime the gap is caught up in one go.
- New rows go to tables keyed by time (schema migration 4): raw samples to a pair of tables
  that take turns hourly, roll-up rows to a pair that takes turns daily. A flush thus touches a
  few pages, and expiry empties a whole table, which frees its pages without writing them.
  What a table still holds within retention when its turn comes moves to the kind's archive,
  keyed by series for fast reads. Device states wait in `device_log` and move once a day.
- The daily housekeeping (archiving the recent tables' turn, archive retention in bounded
  batches, moving device states) is a step a cycle over the day's first minutes, each its own
  transaction: all of it in one cycle took 70 ms and more.

Reads give the rows, or each point as the JSON the API sends (`Kind.look`), built by SQLite;
archived hourly rows keep theirs, since a year of them is too many to build per request.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from operator import itemgetter
from typing import Any

import aiosqlite

from homepanel.store.db import Database
from homepanel.store.runs import RUN_COLUMNS, Run, merged, merged_rows
from homepanel.store.schema import device_point

RAW, MINUTE, FIVE_MIN, THIRTY_MIN, HOUR = 0, 60, 300, 1800, 3600
ROLLUPS = ((MINUTE, RAW), (FIVE_MIN, MINUTE), (THIRTY_MIN, FIVE_MIN), (HOUR, THIRTY_MIN))
# A raw sample is stamped with its collection tick but may be written up to ~35 s later (three
# tries with 1, 2, 4 s backoff and a 10 s timeout each): a bucket counts as closed only then.
GRACE = 60
# Seconds between commits. Each one costs a few dozen pages of WAL whatever it holds, so this
# sets the disk writes per day (bench/README.md) against the raw data a crash may lose.
FLUSH_INTERVAL = 600
DAY = 86400
DELETE_BATCH = 5000
DELETE_BATCHES_PER_CYCLE = 20
VACUUM_PAGES = 256
# Tiers whose archived rows keep their point's JSON (schema migration 5). Building it costs
# SQLite about 3 µs a point: a few ms for the other periods (up to 2,016 points), but some
# 30 ms for a year of hourly points, 8,760 per series, at a series' first request.
KEPT_TIERS = (HOUR,)
# SQLite's limit of bound parameters per statement (its default since 3.32).
MAX_PARAMETERS = 32766
# Free pages kept for reuse: each day's expiry frees about a day of roll-up rows, which the
# next day's rows fill again. Returning them to the file system would only rewrite them.
FREE_PAGES_KEPT = 4096

# period -> (tier, seconds covered)
PERIODS: Mapping[str, tuple[int, int]] = {
    "1h": (RAW, 3600),
    "6h": (MINUTE, 6 * 3600),
    "24h": (MINUTE, 86400),
    "7d": (FIVE_MIN, 7 * 86400),
    "30d": (THIRTY_MIN, 30 * 86400),
    "1y": (HOUR, 365 * 86400),
}

Figures = tuple[float | None, ...]  # a row's figures, in `Kind.columns` order
Point = tuple[Any, ...]  # (ts, *figures)
Bucket = tuple[int, Figures]  # (n, figures): a roll-up row as stored
Chore = Callable[[int, aiosqlite.Connection], Awaitable[None]]  # a step of a day's housekeeping
Project = Callable[[bool], str]  # SQL reading a raw (True) or roll-up row's columns


@dataclass(frozen=True)
class Kind:
    name: str
    table: str  # the archive
    gauges: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()  # per-interval deltas: summed by roll-ups
    spread: str | None = None  # the gauge whose min and max are kept as cpu_min / cpu_max
    whole: tuple[str, ...] = ()  # figures the API shows as whole numbers (bytes)

    @property
    def columns(self) -> tuple[str, ...]:
        extremes = ("cpu_min", "cpu_max") if self.spread else ()
        return (*self.gauges, *extremes, *self.counters)

    @property
    def figures(self) -> tuple[str, ...]:
        """What a raw sample stores: its minimum and maximum are the value itself."""
        return (*self.gauges, *self.counters)

    def sources(self, raw: bool) -> tuple[str, ...]:
        """SQL reading each of `columns` from a table of raw samples, or of roll-up rows."""
        if not raw:
            return self.columns
        return tuple(c if c in self.figures else str(self.spread) for c in self.columns)

    def figures_sql(self, raw: bool) -> str:
        """SQL reading a raw sample's or a roll-up row's figures as `columns`."""
        return ", ".join(self.sources(raw))

    def look(self, raw: bool) -> str:
        """SQL building a row's point as the API sends it: JSON of its timestamp and figures,
        bytes as whole numbers, the rest to 2 places, nulls kept. The one place that decides
        how a point looks. SQLite builds it (half the time Python takes, and no Python object
        per figure), and points waiting in memory go through the same SQL."""
        fields = ", ".join(
            f"'{column}', {_rounded(source, 0 if column in self.whole else 2)}"
            for column, source in zip(self.columns, self.sources(raw), strict=True)
        )
        return f"CAST(json_object('timestamp', ts, {fields}) AS BLOB)"

    @cached_property
    def stored_look(self) -> str:
        """`look` of a stored roll-up row (or of a row with its columns), built once."""
        return self.look(raw=False)

    @cached_property
    def look_id(self) -> int:
        """Names the look of an archive row, so that a text another version of it built is
        never sent."""
        return zlib.crc32(self.stored_look.encode())

    def archived(self, raw: bool) -> str:
        """SQL reading a row as the archive keeps it in KEPT_TIERS: figures, point, look."""
        return f"{self.figures_sql(raw)}, {self.look(raw)}, {self.look_id}"

    @cached_property
    def kept_look(self) -> str:
        """SQL reading an archive row's point: the JSON kept with it, or built now."""
        return f"CASE WHEN point_look = {self.look_id} THEN point ELSE {self.stored_look} END"

    def widen(self, figures: Figures) -> Figures:
        """A raw sample's figures as `columns`."""
        named = dict(zip(self.figures, figures, strict=True))
        return tuple(named.get(c, named.get(str(self.spread))) for c in self.columns)

    def combine(self, members: Sequence[Bucket]) -> Bucket:
        """Roll rows up into one: gauges averaged weighted by their samples (nulls left out),
        the extremes kept, counters summed."""
        total = sum(n for n, _ in members)
        out: list[float | None] = []
        for index, column in enumerate(self.columns):
            present = [(n, f[index]) for n, f in members if f[index] is not None]
            if not present:
                out.append(None)
            elif column == "cpu_min":
                out.append(min(value for _, value in present))
            elif column == "cpu_max":
                out.append(max(value for _, value in present))
            elif column in self.counters:
                out.append(sum(value for _, value in present))
            else:
                out.append(sum(n * v for n, v in present) / sum(n for n, _ in present))
        return total, tuple(out)


def _rounded(value: str, places: int) -> str:
    """SQL rounding `value` to `places` decimals, halves away from zero; a whole number if 0.
    Plain arithmetic, not round(), whose results on halves differ between SQLite versions
    (3.40 and 3.51 here), while texts built by one are kept and sent beside another's. The
    result prints exactly: JSON has 15 significant digits for a real, enough below 10^13."""
    scaled = value if places == 0 else f"{value} * {10**places}"
    whole = f"CAST({scaled} + (CASE WHEN {value} < 0 THEN -0.5 ELSE 0.5 END) AS INTEGER)"
    return whole if places == 0 else f"{whole} / {10**places}.0"


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
    whole=("ram_used", "ram_total"),
)
VM = Kind(
    "vm",
    "vm_samples",
    gauges=("cpu_percent", "ram_used", "ram_total", "disk_read", "disk_write", "net_rx", "net_tx"),
    spread="cpu_percent",
    whole=("ram_used", "ram_total"),
)
AUTOMATION = Kind("automation", "automation_samples", counters=("triggers_count", "errors_count"))
KINDS = (SERVER, VM, AUTOMATION)
_ALL_TIME = {"start": -(2**62), "end": 2**62}  # bounds no timestamp is outside of
_FIRST = itemgetter(0)
_WAITING_DEVICE_POINT = device_point("ts", "state")  # of the rows `_built` lists
_DEVICE_RUNS = " UNION ALL ".join(  # a device's states from :ms on: a run per table
    f"SELECT {RUN_COLUMNS} FROM (SELECT ts_ms AS ts, point AS p FROM {table} WHERE {where})"
    for table, where in (
        ("device_states", "series_id = :series AND ts_ms >= :ms"),
        ("device_log", "ts_ms >= :ms AND series_id = :series"),
    )
)


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


@dataclass(frozen=True)
class _Pair:
    """Two tables keyed by time that take turns, a period each: rows of period p go to table
    p % 2, which is emptied before the first rows of p arrive. What it still holds within
    retention goes to the archive first, so a change of period or retention loses nothing."""

    kind: Kind
    raw: bool
    period: int

    @property
    def names(self) -> tuple[str, str]:
        role = "raw" if self.raw else "recent"
        return f"{self.kind.name}_{role}_0", f"{self.kind.name}_{role}_1"

    @property
    def tiers(self) -> tuple[int, ...]:
        return (RAW,) if self.raw else tuple(tier for tier, _ in ROLLUPS)

    @property
    def columns(self) -> tuple[str, ...]:
        """Its tables' columns, as `_insert` fills them."""
        if self.raw:
            return ("ts", "series_id", *self.kind.figures)
        return ("tier", "ts", "series_id", "n", *self.kind.columns)

    def table(self, ts: int) -> str:
        return self.names[ts // self.period % 2]

    def select(self, lead: Sequence[str], tier: int, condition: str, project: Project) -> str:
        """SQL reading both tables' `tier` rows as (*lead, project)."""
        return " UNION ALL ".join(
            self.select_from(name, lead, tier, condition, project) for name in self.names
        )

    def select_from(
        self, name: str, lead: Sequence[str], tier: int, condition: str, project: Project
    ) -> str:
        """SQL reading one table's `tier` rows as (*lead, project); `lead` from series_id,
        tier, ts and n."""
        if self.raw:
            lead = [{"n": "1", "tier": str(RAW)}.get(c, c) for c in lead]
            where = condition
        else:
            where = f"tier = {tier} AND {condition}"
        return f"SELECT {', '.join(lead)}, {project(self.raw)} FROM {name} WHERE {where}"


@dataclass
class _Batch:
    """What waits for the next commit: rows per (kind, tier) keyed by (series id, ts), raw
    samples as their figures and roll-up rows as (n, figures); device states keyed by
    (series id, ms) as JSON text."""

    rows: dict[tuple[str, int], dict[tuple[int, int], Any]] = field(default_factory=dict)
    devices: dict[tuple[int, int], str] = field(default_factory=dict)

    def restore(self, older: _Batch) -> None:
        """Take back a batch that failed to commit, where nothing newer replaced it."""
        for key, rows in older.rows.items():
            mine = self.rows.setdefault(key, {})
            for row_key, row in rows.items():
                mine.setdefault(row_key, row)
        for device_key, state in older.devices.items():
            self.devices.setdefault(device_key, state)


class MetricsStore:
    """The metrics tables of `db`: writes wait in memory and go through its writer task every
    `flush_interval`; reads go through its reader and see what waits too."""

    def __init__(
        self, db: Database, retention: Retention, flush_interval: int = FLUSH_INTERVAL
    ) -> None:
        self._db = db
        self._retention = retention
        self._flush_interval = flush_interval
        self._series: dict[tuple[str, str], int] = {}
        self._pending = _Batch()
        self._flushing: _Batch | None = None  # being committed: still read from memory
        self._watermarks: dict[tuple[str, int], int] | None = None
        self._flushed_at: int | None = None  # the flush interval of the last flush
        self._chores: list[Chore] = []  # the day's housekeeping not done yet
        self._chores_day: int | None = None  # the (recent) period they are for
        self._periods: dict[_Pair, int] = {}  # each pair's latest period, as flushes saw it
        self._lock = asyncio.Lock()  # one roll-up or flush at a time
        self._selects: dict[tuple[Any, ...], str] = {}  # SQL of queries, built once each
        raw_period = retention.tiers.get(RAW) or HOUR
        self._recent_period = retention.tiers.get(MINUTE) or DAY
        self._pairs = {
            kind.name: (_Pair(kind, True, raw_period), _Pair(kind, False, self._recent_period))
            for kind in KINDS
        }

    # --- recording ---------------------------------------------------------------------------

    async def record_samples(
        self, kind: Kind, ts: int, samples: Mapping[str, Mapping[str, float | None]]
    ) -> None:
        """One raw sample per series name, all stamped `ts` (a collection cycle)."""
        await self.record_rows(kind, [(name, ts, values) for name, values in samples.items()])

    async def record_rows(
        self, kind: Kind, rows: Sequence[tuple[str, int, Mapping[str, float | None]]]
    ) -> None:
        """Raw samples as (series name, ts, values), committed with the next flush.

        A retried collection that lands on the same `ts` replaces the sample, never doubles it.
        """
        ids = await self._series_ids(kind.name, [name for name, _, _ in rows])
        pending = self._pending.rows.setdefault((kind.name, RAW), {})
        for name, ts, values in rows:
            pending[ids[name], ts] = tuple(values.get(column) for column in kind.figures)

    async def record_device_states(self, states: Sequence[tuple[str, int, Any]]) -> None:
        """(topic, ms timestamp, state) rows; the caller decides what counts as a change."""
        ids = await self._series_ids("device", [topic for topic, _, _ in states])
        for topic, ts_ms, state in states:
            self._pending.devices[ids[topic], ts_ms] = json.dumps(state)

    async def _series_ids(self, kind: str, names: Iterable[str]) -> dict[str, int]:
        """Ids of series names; new ones are committed at once, so reads can find them."""
        new = {name for name in names if (kind, name) not in self._series}
        if new:
            await self._db.write(partial(self._create_series, kind, sorted(new)))
        return {name: self._series[kind, name] for name in names}

    async def _create_series(
        self, kind: str, names: list[str], connection: aiosqlite.Connection
    ) -> None:
        await connection.executemany(
            "INSERT OR IGNORE INTO series (kind, name) VALUES (?, ?)", [(kind, n) for n in names]
        )
        for name in names:
            async with connection.execute(
                "SELECT id FROM series WHERE kind = ? AND name = ?", (kind, name)
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            self._series[kind, name] = row[0]

    # --- roll-ups and flushing ---------------------------------------------------------------

    async def maintain(self, now: float) -> None:
        """The minute's cycle: roll up the buckets closed since the last one, once per flush
        interval commit everything waiting, and do a step of the day's housekeeping."""
        async with self._lock:
            watermarks = await self._load_watermarks()
            for kind in KINDS:
                for tier, source in ROLLUPS:
                    await self._rollup(watermarks, kind, tier, source, now)
            if int(now) // self._flush_interval != self._flushed_at:
                await self._flush()
                self._flushed_at = int(now) // self._flush_interval
            await self._housekeeping(int(now) // self._recent_period)

    async def flush(self) -> None:
        """Commit everything waiting now (at shutdown, say)."""
        async with self._lock:
            await self._flush()

    async def _load_watermarks(self) -> dict[tuple[str, int], int]:
        if self._watermarks is None:
            rows = await self._db.fetchall("SELECT kind, tier, done_until FROM rollups")
            self._watermarks = {(kind, tier): done for kind, tier, done in rows}
        return self._watermarks

    async def _rollup(
        self,
        watermarks: dict[tuple[str, int], int],
        kind: Kind,
        tier: int,
        source: int,
        now: float,
    ) -> None:
        """Fold the closed `source` buckets since the watermark into `tier` buckets."""
        end = int(now - GRACE) // tier * tier
        if source != RAW:  # only what the finer tier has completed
            end = min(end, watermarks.get((kind.name, source), 0) // tier * tier)
        start = watermarks.get((kind.name, tier))
        if start is None:
            first = await self._first(kind, source)
            if first is None:
                return
            start = first // tier * tier
        if start >= end:
            return
        buckets: dict[tuple[int, int], list[Bucket]] = {}
        for (series_id, ts), row in (await self._source(kind, source, start, end)).items():
            buckets.setdefault((series_id, ts // tier * tier), []).append(row)
        if buckets:
            pending = self._pending.rows.setdefault((kind.name, tier), {})
            for key, members in buckets.items():
                pending[key] = kind.combine(members)
        watermarks[kind.name, tier] = end

    async def _first(self, kind: Kind, tier: int) -> int | None:
        """The oldest `tier` timestamp of `kind`, stored or waiting."""
        sql = self._select(kind, tier, ("ts",), every_series=True)
        stored = await self._db.fetchall(
            f"SELECT MIN(ts) FROM ({sql})", _ALL_TIME | {"kind": kind.name}
        )
        waiting = [ts for _, ts in self._pending.rows.get((kind.name, tier), {})]
        found = [ts for ts in (stored[0][0], *waiting) if ts is not None]
        return min(found, default=None)

    async def _source(
        self, kind: Kind, tier: int, start: int, end: int
    ) -> dict[tuple[int, int], Bucket]:
        """Every series' `tier` rows in [start, end) as (n, figures), stored or waiting."""
        sql = self._select(kind, tier, ("series_id", "ts", "n"), every_series=True)
        parameters = {"kind": kind.name, "start": start, "end": end}
        rows = {(r[0], r[1]): (r[2], r[3:]) for r in await self._db.fetchall(sql, parameters)}
        for (series_id, ts), stored in self._pending.rows.get((kind.name, tier), {}).items():
            if start <= ts < end:
                rows[series_id, ts] = (1, kind.widen(stored)) if tier == RAW else stored
        return rows

    async def _flush(self) -> None:
        """Commit what waits, in one transaction."""
        batch, self._pending = self._pending, _Batch()
        if not (any(batch.rows.values()) or batch.devices):
            return
        watermarks = dict(self._watermarks or {})  # consistent with the rows: both under lock
        for (kind_name, tier), rows in batch.rows.items():
            if rows:
                pair = self._pair(kind_name, tier)
                newest = max(ts for _, ts in rows) // pair.period
                self._periods[pair] = max(self._periods.get(pair, newest), newest)
        self._flushing = batch
        try:
            await self._db.write(partial(self._commit, batch, watermarks))
        except BaseException:
            self._pending.restore(batch)
            raise
        finally:
            self._flushing = None

    async def _commit(
        self,
        batch: _Batch,
        watermarks: dict[tuple[str, int], int],
        connection: aiosqlite.Connection,
    ) -> None:
        groups = [
            (self._pair(k, tier), tier, rows) for (k, tier), rows in batch.rows.items() if rows
        ]
        for pair in {pair for pair, _, _ in groups}:
            await self._rotate(pair, self._periods[pair], connection)
        for pair, tier, rows in groups:
            await self._insert(connection, pair, tier, rows)
        await connection.executemany(
            "INSERT OR REPLACE INTO device_log (series_id, ts_ms, point) "
            f"VALUES (?1, ?2, {device_point('?2', '?3')})",
            [(series_id, ts_ms, state) for (series_id, ts_ms), state in batch.devices.items()],
        )
        await connection.executemany(
            "INSERT INTO rollups (kind, tier, done_until) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, tier) DO UPDATE SET done_until = excluded.done_until",
            [(kind, tier, done) for (kind, tier), done in watermarks.items()],
        )
        await _vacuum(connection)

    async def _rotate(self, pair: _Pair, period: int, connection: aiosqlite.Connection) -> None:
        """Keep the pair's tables to `period` and the one before. A table that holds an older
        one (and then nothing newer: rows of older periods never go in) has what is still
        within retention archived, and is emptied whole, which frees its pages without writing
        them. Archived hourly rows keep their point's JSON (KEPT_TIERS)."""
        tiers = "" if pair.raw else f"tier IN ({', '.join(map(str, pair.tiers))}) AND "
        lead = ("series_id", "tier", "ts", "n")
        for current in (period, period - 1):
            table = pair.table(current * pair.period)
            async with connection.execute(
                f"SELECT 1 FROM {table} WHERE {tiers}ts < ? LIMIT 1", (current * pair.period,)
            ) as cursor:
                if await cursor.fetchone() is None:
                    continue
            for tier in pair.tiers:
                kept = tier in KEPT_TIERS
                names = (*lead, *pair.kind.columns, *(("point", "point_look") if kept else ()))
                project = pair.kind.archived if kept else pair.kind.figures_sql
                await connection.execute(
                    f"INSERT OR REPLACE INTO {pair.kind.table} ({', '.join(names)}) "
                    f"{pair.select_from(table, lead, tier, 'ts >= ?', project)} "
                    "ORDER BY series_id, ts",
                    (self._cutoff(tier, period * pair.period),),
                )
            await connection.execute(f"DELETE FROM {table}")

    async def _insert(
        self,
        connection: aiosqlite.Connection,
        pair: _Pair,
        tier: int,
        rows: Mapping[tuple[int, int], Any],
    ) -> None:
        """Rows of one tier into the pair's table for their period; rows of older periods
        (late, or caught up after downtime) into the archive, if still within retention."""
        kind, period = pair.kind, self._periods[pair]
        cutoff = self._cutoff(tier, period * pair.period)
        tables: dict[str, list[tuple[Any, ...]]] = {}
        for (series_id, ts), stored in sorted(rows.items(), key=lambda item: item[0][1]):
            n, figures = (1, stored) if pair.raw else stored
            if ts >= (period - 1) * pair.period:
                row = (ts, series_id, *figures) if pair.raw else (tier, ts, series_id, n, *figures)
                tables.setdefault(pair.table(ts), []).append(row)
            elif ts >= cutoff:
                figures = kind.widen(figures) if pair.raw else figures
                tables.setdefault(kind.table, []).append((tier, ts, series_id, n, *figures))
        for table, table_rows in tables.items():
            names = (
                pair.columns
                if table in pair.names
                else ("tier", "ts", "series_id", "n", *kind.columns)
            )
            await connection.executemany(
                f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})",
                table_rows,
            )

    def _cutoff(self, tier: int, now: int) -> int:
        """The oldest `tier` timestamp still within retention at `now`."""
        keep = self._retention.tiers.get(tier)
        return now - keep if keep is not None else _ALL_TIME["start"]

    async def _housekeeping(self, day: int) -> None:
        """One step of the day's housekeeping per cycle: all of them in one cycle made it take
        70 ms and more (bench/README.md). Steps left from an earlier day (cycles that far
        apart: after downtime, in tests) are overdue: they all run now, with today's bounds."""
        overdue: list[Chore] = []
        if day != self._chores_day:
            overdue, self._chores, self._chores_day = self._chores, self._daily_chores(), day
        for chore in overdue:
            await self._db.write(partial(chore, day))
        if self._chores:
            await self._db.write(partial(self._chores[0], day))
            del self._chores[0]

    def _daily_chores(self) -> list[Chore]:
        """The day's housekeeping. Each step is one transaction and finds nothing to do if run
        again (after a crash, by a new process). Each kind's recent roll-up rows of the day
        before yesterday are archived before today's arrive (or the flush that brings them
        does it); then each kind's archive retention, and the device states."""
        return [
            *(partial(self._rotate, self._pairs[kind.name][1]) for kind in KINDS),
            *(partial(self._expire_archive, kind) for kind in KINDS),
            self._keep_device_states,
        ]

    async def _expire_archive(self, kind: Kind, day: int, connection: aiosqlite.Connection) -> None:
        """Delete the kind's archived rows past their tier's retention."""
        for tier, keep in self._retention.tiers.items():
            sql = _expire_sql(kind.table, "(series_id, tier, ts)", "ts", "tier = ?")
            await _expire(connection, sql, (kind.name, tier, day * self._recent_period - keep))

    async def _keep_device_states(self, day: int, connection: aiosqlite.Connection) -> None:
        """Move the device states of earlier days to their archive, and apply its retention."""
        day_start = day * self._recent_period
        await connection.execute(
            "INSERT OR REPLACE INTO device_states (series_id, ts_ms, point) "
            "SELECT series_id, ts_ms, point FROM device_log WHERE ts_ms < ? "
            "ORDER BY series_id, ts_ms",
            (day_start * 1000,),
        )
        await connection.execute("DELETE FROM device_log WHERE ts_ms < ?", (day_start * 1000,))
        cutoff_ms = (day_start - self._retention.device_states) * 1000
        sql = _expire_sql("device_states", "(series_id, ts_ms)", "ts_ms", "1")
        await _expire(connection, sql, ("device", cutoff_ms))

    # --- reading -----------------------------------------------------------------------------

    @property
    def retention(self) -> Retention:
        return self._retention

    async def known(self, kind: str, name: str) -> int | None:
        if (kind, name) in self._series:
            return self._series[kind, name]
        rows = await self._db.fetchall(
            "SELECT id FROM series WHERE kind = ? AND name = ?", (kind, name)
        )
        return rows[0][0] if rows else None

    async def points(self, kind: Kind, series_id: int, tier: int, since: float) -> list[Point]:
        """The series' points of `tier` from `since` on, oldest first, as (ts, *columns):
        the committed ones and those waiting for the next flush."""
        waiting = self._waiting(kind, series_id, tier, int(since))  # first: see _waiting
        sql = self._select(kind, tier, ("ts",), every_series=False)
        stored = await self._db.fetchall(sql, {"series": series_id, "start": int(since)})
        return merged_rows(_sorted(stored), waiting)

    async def point_run(self, kind: Kind, series_id: int, tier: int, since: float) -> Run:
        """The same points as `points`, as one run of their JSON as the API sends it."""
        waiting = self._waiting(kind, series_id, tier, int(since))  # first: see _waiting
        sql = self._run_select(kind, tier)
        parts = await self._db.fetchall(sql, {"series": series_id, "start": int(since)})
        built = await self._built(kind.columns, kind.stored_look, list(waiting.values()))
        return merged([Run.of_aggregate(*part) for part in parts], built)

    async def _built(
        self, columns: Sequence[str], look: str, waiting: Sequence[tuple[Any, ...]]
    ) -> dict[int, tuple[int, bytes]]:
        """Rows in memory, (ts, *columns), as (ts, JSON) by `look`, the SQL that built the
        stored ones."""
        texts: dict[int, tuple[int, bytes]] = {}
        width = 1 + len(columns)
        per_query = MAX_PARAMETERS // width
        for start in range(0, len(waiting), per_query):
            chunk = waiting[start : start + per_query]
            values = ", ".join([f"({', '.join('?' * width)})"] * len(chunk))
            sql = f"WITH w (ts, {', '.join(columns)}) AS (VALUES {values}) SELECT ts, {look} FROM w"
            rows = await self._db.fetchall(sql, [value for row in chunk for value in row])
            texts.update((ts, (ts, text)) for ts, text in rows)
        return texts

    def _waiting(self, kind: Kind, series_id: int, tier: int, since: int) -> dict[int, Point]:
        """The series' uncommitted points. Read before the database: a flush that commits in
        between then shows a point twice (the caller keeps one), never not at all."""
        found: dict[int, Point] = {}
        for batch in (self._flushing, self._pending):
            rows = batch.rows.get((kind.name, tier), {}) if batch else {}
            for (row_series, ts), stored in rows.items():
                if row_series == series_id and ts >= since:
                    found[ts] = (ts, *(kind.widen(stored) if tier == RAW else stored[1]))
        return found

    async def device_points(self, series_id: int, since: float) -> Run:
        """The device's states from `since` on, oldest first, stamped in ms, each as its point
        as the API sends it (`device_point`)."""
        since_ms = int(since * 1000)
        waiting = [  # first: see _waiting
            (ts_ms, state)
            for batch in (self._flushing, self._pending)
            if batch
            for (row_series, ts_ms), state in batch.devices.items()
            if row_series == series_id and ts_ms >= since_ms
        ]
        parts = await self._db.fetchall(_DEVICE_RUNS, {"series": series_id, "ms": since_ms})
        built = await self._built(("state",), _WAITING_DEVICE_POINT, waiting)
        return merged([Run.of_aggregate(*part) for part in parts], built)

    async def last_device_states(self) -> dict[str, Any]:
        """Each topic's newest stored state, to compare the next message with after a restart."""
        newest: dict[str, tuple[int, bytes]] = {}
        for sql in (
            "SELECT s.name, d.ts_ms, d.point FROM series s JOIN device_states d "
            "ON d.series_id = s.id WHERE s.kind = 'device' AND d.ts_ms = "
            "(SELECT MAX(ts_ms) FROM device_states WHERE series_id = s.id)",
            # SQLite takes the bare columns from the row with the maximum.
            "SELECT s.name, MAX(d.ts_ms), d.point FROM device_log d "
            "JOIN series s ON s.id = d.series_id GROUP BY d.series_id",
        ):
            for name, ts_ms, point in await self._db.fetchall(sql):
                if ts_ms > newest.get(name, (-1, b""))[0]:
                    newest[name] = (ts_ms, point)
        return {name: json.loads(point)["state"] for name, (_, point) in newest.items()}

    async def row_counts(self) -> dict[str, int]:
        """Stored rows per kind (archive and recent tables), of device states and of series."""
        tables = {
            kind.table: [
                kind.table,
                *(name for pair in self._pairs[kind.name] for name in pair.names),
            ]
            for kind in KINDS
        }
        tables |= {"device_states": ["device_states", "device_log"], "series": ["series"]}
        counts = {}
        for name, parts in tables.items():
            counts[name] = 0
            for table in parts:
                counts[name] += (await self._db.fetchall(f"SELECT COUNT(*) FROM {table}"))[0][0]
        return counts

    def table_for(self, kind: Kind, tier: int, ts: int) -> str:
        """The table that takes a `tier` row stamped `ts` while it is recent (for benchmarks)."""
        return self._pair(kind.name, tier).table(ts)

    def _pair(self, kind: str, tier: int) -> _Pair:
        raw, recent = self._pairs[kind]
        return raw if tier == RAW else recent

    def _select(self, kind: Kind, tier: int, lead: Sequence[str], every_series: bool) -> str:
        """SQL reading `kind`'s `tier` rows as (*lead, *columns), from the archive and the
        pair of tables that takes that tier: of every series of :kind in [:start, :end), or
        of :series from :start on."""
        key = (kind.name, tier, tuple(lead), every_series)
        if key not in self._selects:
            self._selects[key] = self._build_select(kind, tier, lead, every_series)
        return self._selects[key]

    def _build_select(self, kind: Kind, tier: int, lead: Sequence[str], every_series: bool) -> str:
        if every_series:
            series = "series_id IN (SELECT id FROM series WHERE kind = :kind)"
            condition = "ts >= :start AND ts < :end"
            recent = self._pair(kind.name, tier).select(lead, tier, condition, kind.figures_sql)
        else:
            series, condition = "series_id = :series", "ts >= :start"
            recent = self._pair(kind.name, tier).select(
                lead, tier, f"{condition} AND {series}", kind.figures_sql
            )
        archive = (
            f"SELECT {', '.join(lead)}, {kind.figures_sql(False)} FROM {kind.table} "
            f"WHERE {series} AND tier = {tier} AND {condition}"
        )
        return f"{archive} UNION ALL {recent}"

    def _run_select(self, kind: Kind, tier: int) -> str:
        """SQL reading the `tier` points of :series from :start on as one run (RUN_COLUMNS)
        per table. Points the archive keeps (KEPT_TIERS) are read straight into the
        aggregate; those built now are built in a subquery SQLite runs as such (`LIMIT -1`):
        merged into the aggregate, each would be built once per use."""
        key = (kind.name, tier, "run")
        if key not in self._selects:
            pair = self._pair(kind.name, tier)
            condition = "ts >= :start AND series_id = :series"
            archive = (
                f"SELECT ts, {kind.kept_look} AS p FROM {kind.table} "
                f"WHERE series_id = :series AND tier = {tier} AND ts >= :start"
            )
            built = [
                pair.select_from(
                    name, ("ts",), tier, condition, lambda raw: f"{kind.look(raw)} AS p"
                )
                + " LIMIT -1"
                for name in pair.names
            ]
            if tier not in KEPT_TIERS:
                archive += " LIMIT -1"
            self._selects[key] = " UNION ALL ".join(
                f"SELECT {RUN_COLUMNS} FROM ({select})" for select in (archive, *built)
            )
        return self._selects[key]


def _sorted(rows: list[Any]) -> list[Any]:
    """Rows of a UNION ALL of tables, each read in its key's order, by their first value. Not
    ORDER BY: SQLite's merge of the tables took longer (about 2 ms for a year of points) than
    Python's sort takes to join runs already in order."""
    rows.sort(key=_FIRST)
    return rows


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


async def _vacuum(connection: aiosqlite.Connection) -> None:
    """Give free pages beyond FREE_PAGES_KEPT back to the file system, a few at a time."""
    async with connection.execute("PRAGMA freelist_count") as cursor:
        row = await cursor.fetchone()
    excess = min((row[0] if row else 0) - FREE_PAGES_KEPT, VACUUM_PAGES)
    if excess > 0:
        # The pragma frees one page per result row: it only works if the rows are stepped through.
        async with connection.execute(f"PRAGMA incremental_vacuum({excess})") as cursor:
            await cursor.fetchall()
