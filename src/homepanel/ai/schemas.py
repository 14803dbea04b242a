"""The AI hub's process list and cancel answer, passed through."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PROCESS_ID = r"^[A-Za-z0-9_-]{1,64}$"


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=100_000)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    cwd: str | None = Field(default=None, max_length=4096, pattern=r"^[^\x00]*$")
    session_id: str | None = Field(
        default=None, pattern=PROCESS_ID, description="continue this Claude session"
    )


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
