"""Operations endpoints: `/health` for Docker, `/api/health/upstreams` for the owner,
`/metrics` for Prometheus. None of them calls an upstream."""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from homepanel import __version__
from homepanel.core.deps import API_DEPENDENCIES, SettingsDep
from homepanel.core.errors import ErrorResponse, Unauthorized
from homepanel.core.observability import Observability

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["healthy", "unhealthy"]
    version: str
    database: Literal["ok", "error"]
    uptime_seconds: int


class Upstream(BaseModel):
    state: Literal["up", "down", "unknown", "not_configured"]
    since: str | None
    last_latency_ms: float | None
    last_error: str | None
    consecutive_failures: int


class Upstreams(BaseModel):
    upstreams: dict[str, Upstream]


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


@router.get(
    "/api/health/upstreams",
    dependencies=API_DEPENDENCIES,
    responses={401: {"model": ErrorResponse}},
)
async def upstream_health(request: Request) -> Upstreams:
    """Each upstream (each Proxmox server apart) as the latest calls to it left it: `unknown`
    until it is first used, then `up` or `down` with the last error and how many failed in a
    row. No extra polling: browser requests and collector rounds keep it current."""
    observability: Observability = request.app.state.observability
    return Upstreams(
        upstreams={
            key: Upstream.model_validate(state, from_attributes=True)
            for key, state in sorted(observability.upstreams.items())
        }
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"model": ErrorResponse}},
)
async def prometheus_metrics(
    request: Request,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Prometheus exposition. Needs `Authorization: Bearer <METRICS_TOKEN>` when that is set."""
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise Unauthorized()
    observability: Observability = request.app.state.observability
    observability.database_size.set(await request.app.state.db.size_bytes())
    return Response(generate_latest(observability.registry), media_type=CONTENT_TYPE_LATEST)
