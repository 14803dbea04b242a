"""`/api/proxmox/...`: servers, guests, power actions and task status."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from homepanel.audit.log import audited
from homepanel.core.deps import API_DEPENDENCIES
from homepanel.core.errors import ApiError, ErrorResponse, NotConfigured, NotFound
from homepanel.proxmox.client import ProxmoxClient
from homepanel.proxmox.schemas import (
    UPID_PATTERN,
    ActionResult,
    GuestDetail,
    GuestList,
    GuestSummary,
    PowerAction,
    ServerList,
    ServerStatus,
    ServerSummary,
    TaskStatus,
)

logger = logging.getLogger(__name__)

SERVER_LIST_TIMEOUT = 5.0

_errors = {code: {"model": ErrorResponse} for code in (401, 404, 422, 502, 503, 504)}
router = APIRouter(
    prefix="/api/proxmox",
    tags=["proxmox"],
    dependencies=API_DEPENDENCIES,
    responses=_errors,
)


async def proxmox_clients(request: Request) -> dict[str, ProxmoxClient]:
    clients: dict[str, ProxmoxClient] = request.app.state.proxmox
    if not clients:
        raise NotConfigured("No Proxmox server is configured: set PROXMOX_<KEY>_URL")
    return clients


Clients = Annotated[dict[str, ProxmoxClient], Depends(proxmox_clients)]


async def proxmox_client(request: Request, server_id: Annotated[str, Path()]) -> ProxmoxClient:
    client = (await proxmox_clients(request)).get(server_id)
    if client is None:
        raise NotFound(f"Unknown Proxmox server {server_id[:64]!r}", error_code="SERVER_NOT_FOUND")
    return client


Client = Annotated[ProxmoxClient, Depends(proxmox_client)]
VmId = Annotated[int, Path(ge=100, le=999_999_999, description="Proxmox guest id, 100..999999999")]


async def _summary(client: ProxmoxClient) -> ServerSummary:
    """A server that is down, slow or misconfigured is listed as offline, never an error."""
    try:
        async with asyncio.timeout(SERVER_LIST_TIMEOUT):
            status = await client.node_status()
    except (ApiError, TimeoutError) as exc:
        reason = exc.detail if isinstance(exc, ApiError) else "no answer within 5 s"
        logger.warning("%s is offline in the server list: %s", client.label, reason)
        return ServerSummary.offline(client.server)
    return ServerSummary.from_status(client.server, status)


@router.get("/servers")
async def list_servers(clients: Clients) -> ServerList:
    """Every configured server with its headline figures, polled in parallel."""
    summaries = await asyncio.gather(*(_summary(c) for c in clients.values()))
    return ServerList(servers=sorted(summaries, key=lambda s: s.id))


@router.get("/{server_id}/status")
async def server_status(client: Client) -> ServerStatus:
    return ServerStatus.from_status(client.server, await client.node_status())


@router.get("/{server_id}/vms")
async def list_guests(client: Client) -> GuestList:
    """VMs and containers together, sorted by vmid, with counts."""
    guests = [GuestSummary.of(kind, guest) for kind, guest in await client.guests()]
    return GuestList.of(client.server.id, guests)


@router.get("/{server_id}/vm/{vmid}")
async def guest_detail(client: Client, vmid: VmId) -> GuestDetail:
    guest_type, guest = await client.guest_status(vmid)
    return GuestDetail.of(client.server.node, guest_type, guest)


@router.post("/{server_id}/vm/{vmid}/{action}", responses={409: {"model": ErrorResponse}})
async def power_action(
    request: Request, client: Client, vmid: VmId, action: PowerAction
) -> ActionResult:
    """Start, stop (hard), shutdown (graceful) or restart (Proxmox `reboot`) a guest.

    Proxmox accepts most actions at once and runs them as a task; the task can still fail
    (starting a running VM, say). Poll `/tasks/{upid}` for the outcome.
    """
    async with audited(request, f"vm.{action.value}", f"{client.server.id}/{vmid}"):
        upid = await client.power(vmid, action)
    logger.info("%s: %s %d -> task %s", client.label, action.value, vmid, upid)
    return ActionResult(success=True, task=upid, message=action.message(vmid))


@router.get("/{server_id}/tasks/{upid}")
async def task_status(
    client: Client, upid: Annotated[str, Path(pattern=UPID_PATTERN, max_length=300)]
) -> TaskStatus:
    return TaskStatus.of(client.server.id, await client.task(upid))
