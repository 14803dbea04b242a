"""The database schema, as migrations. Append only: migration N takes user_version N to N+1.

Metrics in a few lines (migration 4 explains why the recent rows live apart):
- `series` names every time series once: (kind, name) -> a small integer id.
- Per kind of series (server, vm, automation), a column per figure, in three homes:
  - `<kind>_samples`, keyed (series_id, tier, ts): the archive; one range scan per query.
  - `<kind>_recent_0/_1`, keyed (tier, ts, series_id): the roll-up rows of the last day or two.
  - `<kind>_raw_0/_1`, keyed (ts, series_id): raw samples of the last hour or two.
- `tier` is the bucket length: 0 raw, then 60, 300, 1800, 3600 s; `n` counts raw samples.
- `device_states` keeps each topic's state when it changed, keyed by millisecond; the newest
  ones wait in `device_log`, keyed by time, until they are moved over once a day.
- An archived hourly row also keeps the JSON the API sends for it (migration 5), and a device
  state is kept only as that JSON (migration 6).
"""

from __future__ import annotations

_SAMPLE_KEY = """
    series_id INTEGER NOT NULL REFERENCES series (id),
    tier INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    n INTEGER NOT NULL,
"""

_SERVER = """cpu_percent REAL, ram_used REAL, ram_total REAL, ram_percent REAL,
    disk_read REAL, disk_write REAL, net_rx REAL, net_tx REAL"""
_VM = """cpu_percent REAL, ram_used REAL, ram_total REAL,
    disk_read REAL, disk_write REAL, net_rx REAL, net_tx REAL"""
_AUTOMATION = "triggers_count REAL, errors_count REAL"


def _time_ordered(kind: str, figures: str, extremes: str) -> str:
    """Migration 4's tables of one kind: raw samples and recent roll-ups, two tables each."""
    return "".join(
        f"""
    CREATE TABLE {kind}_raw_{half} (
        ts INTEGER NOT NULL,
        series_id INTEGER NOT NULL REFERENCES series (id),
        {figures},
        PRIMARY KEY (ts, series_id)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE {kind}_recent_{half} (
        tier INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        series_id INTEGER NOT NULL REFERENCES series (id),
        n INTEGER NOT NULL,
        {figures}{extremes},
        PRIMARY KEY (tier, ts, series_id)
    ) STRICT, WITHOUT ROWID;"""
        for half in (0, 1)
    )


_EXTREMES = ", cpu_min REAL, cpu_max REAL"


def device_point(ts_ms: str, state: str) -> str:
    """SQL building a device state's point as the API sends it, from SQL giving its integer
    millisecond stamp and its state's JSON: `{"timestamp":<seconds>,"state":<state>}`, the
    seconds written as Python writes the float `ts_ms / 1000` (1700000000.0, 1700000000.12).
    Stored points were built by it: a change to it needs a migration that rebuilds them."""
    ms = f"({ts_ms}) % 1000"
    fraction = f"CASE WHEN {ms} THEN rtrim(substr({ms} + 1000, 2), '0') ELSE '0' END"
    seconds = f"(({ts_ms}) / 1000) || '.' || {fraction}"
    return f"""CAST('{{"timestamp":' || {seconds} || ',"state":' || {state} || '}}' AS BLOB)"""


def _device_points(table: str, key: str) -> str:
    """Migration 6 for one of the device tables: its states' text replaced by their points."""
    return f"""
    CREATE TABLE {table}_6 (
        series_id INTEGER NOT NULL REFERENCES series (id),
        ts_ms INTEGER NOT NULL,
        point BLOB NOT NULL,
        PRIMARY KEY ({key})
    ) STRICT, WITHOUT ROWID;
    INSERT INTO {table}_6 (series_id, ts_ms, point)
        SELECT series_id, ts_ms, {device_point("ts_ms", "state")} FROM {table};
    DROP TABLE {table};
    ALTER TABLE {table}_6 RENAME TO {table};
    """


MIGRATIONS: list[str] = [
    """
    CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    """,
    f"""
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        UNIQUE (kind, name)
    ) STRICT;
    CREATE TABLE server_samples ({_SAMPLE_KEY}
        cpu_percent REAL, cpu_min REAL, cpu_max REAL,
        ram_used REAL, ram_total REAL, ram_percent REAL,
        disk_read REAL, disk_write REAL, net_rx REAL, net_tx REAL,
        PRIMARY KEY (series_id, tier, ts)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE vm_samples ({_SAMPLE_KEY}
        cpu_percent REAL, cpu_min REAL, cpu_max REAL,
        ram_used REAL, ram_total REAL,
        disk_read REAL, disk_write REAL, net_rx REAL, net_tx REAL,
        PRIMARY KEY (series_id, tier, ts)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE automation_samples ({_SAMPLE_KEY}
        triggers_count REAL, errors_count REAL,
        PRIMARY KEY (series_id, tier, ts)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE rollups (
        kind TEXT NOT NULL,
        tier INTEGER NOT NULL,
        done_until INTEGER NOT NULL,
        PRIMARY KEY (kind, tier)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE device_states (
        series_id INTEGER NOT NULL REFERENCES series (id),
        ts_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (series_id, ts_ms)
    ) STRICT, WITHOUT ROWID;
    """,
    """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        client_ip TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_log_ts ON audit_log (ts);
    """,
    # 4: SSD wear. A commit writes every page it touched to the WAL, and the checkpoint writes
    # it again. Keyed by series, each commit touched a page per series (and per tier), and
    # deleting expired rows rewrote every page they were on. New rows now land in tables keyed
    # by time, so a commit's rows share a few pages; those tables come in pairs that take turns
    # by period, so expiry empties a whole table at once, which frees its pages unwritten.
    # Existing rows stay where they are: every read also reads the archive.
    _time_ordered("server", _SERVER, _EXTREMES)
    + _time_ordered("vm", _VM, _EXTREMES)
    + _time_ordered("automation", _AUTOMATION, "")
    + """
    CREATE TABLE device_log (
        ts_ms INTEGER NOT NULL,
        series_id INTEGER NOT NULL REFERENCES series (id),
        state TEXT NOT NULL,
        PRIMARY KEY (ts_ms, series_id)
    ) STRICT, WITHOUT ROWID;
    """,
    # 5: a year of hourly points is too many to build as JSON per request (8,760 per series, on
    # a cold cache). Archived hourly rows keep their JSON in `point`, with `point_look`, which
    # names the SQL that built it: a text made by another version of it is built anew.
    "".join(
        f"ALTER TABLE {kind}_samples ADD COLUMN point BLOB; "
        f"ALTER TABLE {kind}_samples ADD COLUMN point_look INTEGER;"
        for kind in ("server", "vm", "automation")
    ),
    # 6: a device's 12,960 states of 90 days took some 8 ms to wrap as points in Python per
    # cold request, after about as long to fetch. A state is now stored as its point, whose
    # `state` is the state's JSON as it was: about 35 bytes more a state.
    _device_points("device_states", "series_id, ts_ms")
    + _device_points("device_log", "ts_ms, series_id"),
]
