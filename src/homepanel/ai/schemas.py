"""The AI hub's process list and cancel answer, passed through."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

PROCESS_ID = r"^[A-Za-z0-9_-]{1,64}$"


class _PassThrough(BaseModel):
    model_config = ConfigDict(extra="allow")


class Process(_PassThrough):
    process_id: str
    cwd: str | None = None
    model: str | None = None
    started_at: str | None = None
    session_id: str | None = None


class ProcessList(_PassThrough):
    processes: list[Process]
    count: int


class CancelResult(_PassThrough):
    status: str
    process_id: str
