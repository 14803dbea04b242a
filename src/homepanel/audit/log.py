"""Who changed what: every state-changing action with its time, client IP, target and outcome.

Kept `RETENTION` (a year). Payloads are never recorded, only what was acted on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request

from homepanel.core.errors import ApiError
from homepanel.core.ratelimit import client_ip
from homepanel.store.db import Database

RETENTION = 365 * 86400


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, client: str, action: str, target: str, outcome: str) -> None:
        await self._db.execute(
            "INSERT INTO audit_log (ts, client_ip, action, target, outcome) VALUES (?, ?, ?, ?, ?)",
            (time.time(), client, action, target[:512], outcome),
        )

    async def entries(self, limit: int, before: int | None) -> list[dict[str, Any]]:
        """Newest first; `before` (an entry id) pages back in time."""
        rows = await self._db.fetchall(
            "SELECT id, ts, client_ip, action, target, outcome FROM audit_log "
            "WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        )
        keys = ("id", "ts", "client_ip", "action", "target", "outcome")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def expire(self, now: float) -> None:
        await self._db.execute("DELETE FROM audit_log WHERE ts < ?", (now - RETENTION,))


@asynccontextmanager
async def audited(request: Request, action: str, target: str) -> AsyncIterator[None]:
    """Record `action` on `target` with its outcome: `ok`, or the error code it failed with."""
    log: AuditLog = request.app.state.audit
    client = client_ip(request, request.app.state.trusted_networks)
    try:
        yield
    except ApiError as exc:
        await log.record(client, action, target, exc.error_code)
        raise
    except Exception:
        await log.record(client, action, target, "INTERNAL_ERROR")
        raise
    await log.record(client, action, target, "ok")
