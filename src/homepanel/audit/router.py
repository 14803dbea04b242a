"""`GET /api/audit`: the audit log, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from homepanel.audit.log import AuditLog
from homepanel.core.deps import API_DEPENDENCIES
from homepanel.core.errors import ErrorResponse

router = APIRouter(
    prefix="/api/audit",
    tags=["audit"],
    dependencies=API_DEPENDENCIES,
    responses={code: {"model": ErrorResponse} for code in (401, 422, 429)},
)


class AuditEntry(BaseModel):
    id: int
    time: datetime
    client_ip: str
    action: str
    target: str
    outcome: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before: int | None


@router.get("")
async def audit_log(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="an entry id: older entries")
    ] = None,
) -> AuditPage:
    """VM power, automation control, MQTT publish, AI chat and cancel, logins and logouts."""
    log: AuditLog = request.app.state.audit
    rows = await log.entries(limit, before)
    entries = [AuditEntry(time=datetime.fromtimestamp(row.pop("ts"), UTC), **row) for row in rows]
    return AuditPage(entries=entries, next_before=entries[-1].id if len(entries) == limit else None)
