"""`GET /health`: liveness for Docker and monitoring; no login, no upstream calls."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from homepanel import __version__

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["healthy", "unhealthy"]
    version: str
    database: Literal["ok", "error"]
    uptime_seconds: int


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    """200 while the database answers, 503 when it does not (then restarting may help)."""
    database_ok = await request.app.state.db.ping()
    body = Health(
        status="healthy" if database_ok else "unhealthy",
        version=__version__,
        database="ok" if database_ok else "error",
        uptime_seconds=int(time.monotonic() - request.app.state.started_at),
    )
    return JSONResponse(body.model_dump(), status_code=200 if database_ok else 503)
