"""`/api/automations/...`: list, detail and start/stop/restart.

`name` is an automation name, which contains `/` (`main/kitchen/motion_light`), or a container
name; both are matched by one strict pattern before any upstream URL is built.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from homepanel.audit.log import audited
from homepanel.automations.client import AutomationClient
from homepanel.automations.schemas import (
    NAME_PATTERN,
    Automation,
    AutomationList,
    ControlAction,
    ControlResult,
)
from homepanel.core.deps import API_DEPENDENCIES, upstream
from homepanel.core.errors import ErrorResponse
from homepanel.streams.sse import RelayResponse

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/automations",
    tags=["automations"],
    dependencies=API_DEPENDENCIES,
    responses={code: {"model": ErrorResponse} for code in (401, 404, 422, 502, 503, 504)},
)
Automations = Annotated[
    AutomationClient,
    Depends(upstream("automations", "The Automation API", "AUTOMATION_API_URL")),
]
Name = Annotated[
    str, Path(pattern=NAME_PATTERN, description="automation name (may contain /) or container")
]


@router.get("")
async def list_automations(automations: Automations) -> AutomationList:
    return await automations.automations()


@router.get(
    "/{name:path}/logs",
    response_class=RelayResponse,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`event: log`"}},
)
async def automation_logs(
    automations: Automations,
    name: Name,
    lines: Annotated[int, Query(ge=1, le=10000, description="lines of history first")] = 100,
) -> RelayResponse:
    """The automation's log, live: the Automation API's stream passed through unmodified."""
    upstream = await automations.open_logs(name, lines)
    return RelayResponse(upstream, "Automation API")


@router.post("/{name:path}/{action}")
async def control_automation(
    request: Request, automations: Automations, name: Name, action: ControlAction
) -> ControlResult:
    """Start, stop or restart an automation's container."""
    async with audited(request, f"automation.{action.value}", name):
        result = await automations.control(name, action)
    logger.info("Automation %s: %s -> %s", name, action.value, result.new_status)
    return result


@router.get("/{name:path}")
async def automation_detail(automations: Automations, name: Name) -> Automation:
    return await automations.automation(name)
