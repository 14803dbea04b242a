"""The SQLite store: a writer task, a reader and a checkpoint connection, a versioned schema.

WAL lets the reader run while the writer commits, and with a single writer SQLite never hits the
read-to-write upgrade `SQLITE_BUSY` that `busy_timeout` cannot resolve. Writes are jobs queued
to the writer task, which commits everything queued together in one transaction: one commit
for a whole collection cycle, not one per row. Each job
gets its own savepoint, so a failing job is rolled back alone. `PRAGMA user_version` records
which migrations have run, so a later release can upgrade an existing file in place.

Three settings keep disk writes down (SSD wear; bench/README.md). `secure_delete=FAST`: a freed
page is not zeroed on disk when nothing else would write it (Debian's SQLite zeroes them all,
which made every expired page one more write). `temp_store=MEMORY`: a job's savepoint journal
(the pages it changed, as they were) stays in memory instead of spilling to a temporary file
past 64 KB. A checkpoint every `CHECKPOINT_PAGES` rather than SQLite's 1,000: the checkpoint
writes each page changed since the last one once, however often it changed, and those writes
land all over the file, where Linux writes back whole cached folios (often 64 KiB or more)
for a 4 KiB page. The WAL itself is only ever appended to.

That checkpoint copies some 40 MB, 60-100 ms on a small machine, so it runs on a connection of
its own: SQLite's automatic one ran inside the commit that filled the WAL, and held the writer
(and a metrics cycle waiting for its flush) as long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from homepanel.store.schema import MIGRATIONS

logger = logging.getLogger(__name__)
# Of 4 KiB: the WAL grows to about 40 MB between checkpoints, about a day for the spec's fleet.
CHECKPOINT_PAGES = 10_000
_FRAME = 24 + 4096  # bytes of WAL per page: a frame header and the page
# No automatic checkpoint: see `_checkpoint_when_due`. The WAL file is cut back when it starts
# over after a checkpoint, so its size tells how much it holds.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; "
    "PRAGMA secure_delete=FAST; PRAGMA temp_store=MEMORY; "
    "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=0;"
)

Job = Callable[[aiosqlite.Connection], Awaitable[Any]]


class Database:
    """Async access to the SQLite file. Open with `await Database.open(path)`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        checkpointer: aiosqlite.Connection,
    ):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._checkpointer = checkpointer
        self._wal = path.with_name(f"{path.name}-wal")
        self._checkpoint: asyncio.Task[None] | None = None
        self._jobs: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] = asyncio.Queue()
        self._task = asyncio.create_task(self._write_loop(), name="database writer")

    @classmethod
    async def open(cls, path: Path) -> Database:
        if sqlite3.sqlite_version_info < (3, 37):
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old; 3.37+ is needed")
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            # Must precede the first table, or it silently stays off until a full VACUUM.
            await writer.execute("PRAGMA auto_vacuum=INCREMENTAL")
            await writer.executescript(_PRAGMAS)
            await _migrate(writer)
        except BaseException:
            await writer.close()  # its worker thread would otherwise outlive the error
            raise
        reader = await aiosqlite.connect(path, isolation_level=None)
        await reader.executescript(_PRAGMAS + "PRAGMA query_only=ON;")
        checkpointer = await aiosqlite.connect(path, isolation_level=None)
        await checkpointer.executescript(_PRAGMAS)
        return cls(path, writer, reader, checkpointer)

    async def write(self, job: Job) -> Any:
        """Run `job` in the writer's next transaction and return its result once committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((job, future))
        return await future

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        async def job(connection: aiosqlite.Connection) -> None:
            await connection.execute(sql, parameters)

        await self.write(job)

    async def fetchall(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[sqlite3.Row]:
        # One hop to the reader's thread, not three (execute, fetch, close): 1-2 ms less for
        # a year of points on a small machine.
        return list(await self._reader.execute_fetchall(sql, parameters))

    async def ping(self) -> bool:
        try:
            await self.fetchall("SELECT 1")
        except (sqlite3.Error, ValueError):
            return False
        return True

    async def size_bytes(self) -> int:
        rows = await self.fetchall(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        )
        return int(rows[0][0])

    async def close(self) -> None:
        """Commit what is queued, let a checkpoint under way end, then close the connections:
        the writer last, which checkpoints what is left."""
        self._jobs.put_nowait((_stop, asyncio.get_running_loop().create_future()))
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._checkpoint is not None:
            await self._checkpoint
        for connection in (self._reader, self._checkpointer, self._writer):
            try:
                await connection.close()
            except (sqlite3.Error, ValueError):
                connection.stop()

    async def _write_loop(self) -> None:
        while True:
            # Group commit: whatever was queued while the last commit ran goes in this one.
            # The collectors and the device tracker already hand in whole batches.
            batch = [await self._jobs.get()]
            while not self._jobs.empty():
                batch.append(self._jobs.get_nowait())
            stop = any(job is _stop for job, _ in batch)
            await self._commit([(job, future) for job, future in batch if job is not _stop])
            if stop:
                return

    async def _commit(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        if not batch:
            return
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            await self._writer.execute("BEGIN IMMEDIATE")
            for index, (job, future) in enumerate(batch):
                results.append((future, *await self._run_job(job, index)))
            await self._writer.execute("COMMIT")
            self._checkpoint_when_due()
        except sqlite3.Error as exc:
            logger.error("Database write failed, batch of %d rolled back: %s", len(batch), exc)
            with contextlib.suppress(sqlite3.Error):
                await self._writer.execute("ROLLBACK")
            results = [(future, None, exc) for _, future in batch]
        for future, result, error in results:
            if future.done():  # its caller went away
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _checkpoint_when_due(self) -> None:
        """Once the WAL holds CHECKPOINT_PAGES, copy them into the database file, on the
        checkpointer's connection: the writer goes on meanwhile (PASSIVE waits for no one)."""
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        with contextlib.suppress(FileNotFoundError):
            if self._wal.stat().st_size >= CHECKPOINT_PAGES * _FRAME:
                self._checkpoint = asyncio.create_task(self._run_checkpoint(), name="checkpoint")

    async def _run_checkpoint(self) -> None:
        try:
            await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # tried again after a later commit
            logger.warning("WAL checkpoint failed: %s", exc)

    async def _run_job(self, job: Job, index: int) -> tuple[Any, BaseException | None]:
        await self._writer.execute(f"SAVEPOINT job{index}")
        try:
            result = await job(self._writer)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            await self._writer.execute(f"ROLLBACK TO job{index}")
            await self._writer.execute(f"RELEASE job{index}")
            return None, exc
        await self._writer.execute(f"RELEASE job{index}")
        return result, None


async def _stop(connection: aiosqlite.Connection) -> None:
    """The marker that tells the writer to commit what it has and end."""


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
