"""The database schema, as migrations. Append only: migration N takes user_version N to N+1.

Metrics in five lines:
- `series` names every time series once: (kind, name) -> a small integer id.
- One table per kind of series (server, vm, automation), a column per figure.
- Primary key (series_id, tier, ts): a period query is one range scan, no sort.
- `tier` is the bucket length: 0 raw, then 60, 300, 1800, 3600 s; `n` counts raw samples.
- `device_states` keeps each topic's state when it changed, keyed by millisecond.
"""

from __future__ import annotations

_SAMPLE_KEY = """
    series_id INTEGER NOT NULL REFERENCES series (id),
    tier INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    n INTEGER NOT NULL,
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
]
