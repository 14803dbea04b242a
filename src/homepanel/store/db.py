"""The SQLite store: one writer connection, one reader, a versioned schema.

WAL lets the reader run while the writer commits, and with a single writer SQLite never hits the
read-to-write upgrade `SQLITE_BUSY` that `busy_timeout` cannot resolve. `PRAGMA user_version`
records which migrations have run, so a later release can upgrade an existing file in place.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

logger = logging.getLogger(__name__)

# Append only: migration N brings a database from user_version N to N+1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    """,
]

_PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;"


class Database:
    """Async access to the SQLite file. Open with `await Database.open(path)`."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader

    @classmethod
    async def open(cls, path: Path) -> Database:
        if sqlite3.sqlite_version_info < (3, 37):
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old; 3.37+ is needed")
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path)
        # Must precede the first table, or it silently stays off until a full VACUUM.
        await writer.execute("PRAGMA auto_vacuum=INCREMENTAL")
        await writer.executescript(_PRAGMAS)
        await _migrate(writer)
        reader = await aiosqlite.connect(path)
        await reader.executescript(_PRAGMAS + "PRAGMA query_only=ON;")
        return cls(path, writer, reader)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        await self._writer.execute(sql, parameters)
        await self._writer.commit()

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._writer.executemany(sql, rows)
        await self._writer.commit()

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._reader.execute(sql, parameters) as cursor:
            return list(await cursor.fetchall())

    async def ping(self) -> bool:
        try:
            await self.fetchall("SELECT 1")
        except (sqlite3.Error, ValueError):
            return False
        return True

    async def close(self) -> None:
        for connection in (self._reader, self._writer):
            try:
                await connection.close()
            except (sqlite3.Error, ValueError):
                connection.stop()


async def _migrate(connection: aiosqlite.Connection) -> None:
    async with connection.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"The database schema is version {version}, newer than this release knows "
            f"({len(MIGRATIONS)}); upgrade Home Panel or use another DATABASE_PATH"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await connection.executescript(f"BEGIN; {script} PRAGMA user_version={number}; COMMIT;")
        logger.info("Database migrated to schema version %d", number)
