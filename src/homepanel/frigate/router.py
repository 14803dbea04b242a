"""`/api/frigate/...`: cameras, snapshots, detection events, stats."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from homepanel.core.deps import API_DEPENDENCIES, upstream
from homepanel.core.errors import ErrorResponse
from homepanel.frigate.client import FrigateClient
from homepanel.frigate.schemas import Camera, CameraList, Event, EventList, Stats

CAMERA_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # Frigate's own rule for camera names
LABEL = r"^[A-Za-z0-9_ -]{1,64}$"

router = APIRouter(
    prefix="/api/frigate",
    tags=["frigate"],
    dependencies=API_DEPENDENCIES,
    responses={code: {"model": ErrorResponse} for code in (401, 404, 422, 502, 503, 504)},
)
Frigate = Annotated[FrigateClient, Depends(upstream("frigate", "Frigate", "FRIGATE_URL"))]
CameraName = Annotated[str, Path(pattern=CAMERA_NAME, description="Frigate camera name")]


@router.get("/cameras")
async def list_cameras(frigate: Frigate) -> CameraList:
    config = await frigate.config()
    return CameraList(cameras=[Camera.of(name, cam) for name, cam in config.cameras.items()])


@router.get(
    "/camera/{name}/snapshot",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The latest frame"}},
)
async def camera_snapshot(
    frigate: Frigate,
    name: CameraName,
    h: Annotated[int, Query(ge=1, le=4320, description="height in pixels")] = 360,
) -> Response:
    """The camera's latest frame as JPEG; usable as `<img src>` thanks to the login cookie.

    An offline camera gives Frigate's stock "camera error" picture, as Frigate itself shows.
    """
    jpeg = await frigate.snapshot(name, h)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/events")
async def list_events(
    frigate: Frigate,
    camera: Annotated[str | None, Query(pattern=CAMERA_NAME)] = None,
    label: Annotated[str | None, Query(pattern=LABEL, description="person, car, dog, ...")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    has_snapshot: bool | None = None,
) -> EventList:
    """Detection events, newest first; `end_time` is null while one is in progress."""
    params: dict[str, str | int] = {"limit": limit}
    if camera is not None:
        params["camera"] = camera
    if label is not None:
        params["label"] = label
    if has_snapshot is not None:
        params["has_snapshot"] = int(has_snapshot)  # 0.13/0.14 ignore "true", 0.15 rejects it
    return EventList(events=[Event.of(event) for event in await frigate.events(params)])


@router.get("/stats")
async def frigate_stats(frigate: Frigate) -> Stats:
    return Stats.of(await frigate.stats())
