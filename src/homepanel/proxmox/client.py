"""Talks to one Proxmox VE host over its API, with an API token.

Turns Proxmox's answers into ours: the `{"data": ...}` envelope unwrapped, the 500 "does not
exist" into a 404, 401/403 into a 502 that tells the owner what the token lacks, a refused power
action (500 "not running") into a 409 with Proxmox's own words.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any
from urllib.parse import quote

from homepanel.core.config import ProxmoxServer
from homepanel.core.errors import Conflict, NotFound, UpstreamError
from homepanel.core.http import OnCall, Params, UpstreamClient, UpstreamResponse, parse_as
from homepanel.proxmox.schemas import (
    GuestType,
    PowerAction,
    PveGuest,
    PveNodeStatus,
    PveResource,
    PveRrdPoint,
    PveTask,
)

TIMEOUT = 10.0
# A guest or task that is not there: 500 "...conf' does not exist" for guests, 400 with
# errors.upid "no such task" for tasks.
_MISSING = re.compile(r"does not exist|no such task|unable to find configuration", re.IGNORECASE)
_PERMISSION = re.compile(r"Permission check failed \((?P<path>[^,]+), (?P<privilege>[^)]+)\)")


def _message(response: UpstreamResponse) -> str:
    """Proxmox's error text: in the JSON body on PVE 8.3+, only in the reason phrase before.

    Parameter errors say only "Parameter verification failed."; the details are in `errors`.
    """
    body: Any = None
    if "json" in response.headers.get("content-type", ""):
        with contextlib.suppress(UpstreamError):
            body = response.json()
    body = body if isinstance(body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else ""
    lines = (message or response.reason or "").strip().splitlines()
    text = lines[0].strip() if lines else f"HTTP {response.status_code}"
    errors = body.get("errors")
    if isinstance(errors, dict) and errors:
        text += (
            " (" + "; ".join(f"{key}: {str(value).strip()}" for key, value in errors.items()) + ")"
        )
    return text[:300]


class ProxmoxClient:
    """One Proxmox host. All paths are relative to `/api2/json`."""

    def __init__(self, server: ProxmoxServer, on_call: OnCall | None = None) -> None:
        self.server = server
        self.label = f"Proxmox '{server.id}'"
        headers = {}
        if server.token is not None:
            headers["Authorization"] = f"PVEAPIToken={server.token.get_secret_value()}"
        self._http = UpstreamClient(
            self.label,
            f"{server.url}/api2/json",
            timeout=TIMEOUT,
            headers=headers,
            verify=server.verify_ssl,
            on_call=on_call,
        )
        self._node_path = f"/nodes/{quote(server.node, safe='')}"

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- reads -----------------------------------------------------------------------------

    async def node_status(self) -> PveNodeStatus:
        return parse_as(PveNodeStatus, await self._get(f"{self._node_path}/status"), self.label)

    async def guests(self) -> list[tuple[GuestType, PveGuest]]:
        """qemu and lxc guests, merged and sorted by vmid (two calls, made in parallel)."""
        qemu, lxc = await asyncio.gather(
            self._get(f"{self._node_path}/qemu"), self._get(f"{self._node_path}/lxc")
        )
        merged: list[tuple[GuestType, PveGuest]] = [
            *(("qemu", g) for g in parse_as(list[PveGuest], qemu, self.label)),
            *(("lxc", g) for g in parse_as(list[PveGuest], lxc, self.label)),
        ]
        return sorted(merged, key=lambda item: item[1].vmid)

    async def guest_type(self, vmid: int) -> GuestType:
        """Which API a guest lives under: asking `/qemu/` about a container is a 500."""
        for guest_type, guest in await self.guests():
            if guest.vmid == vmid:
                return guest_type
        raise NotFound(f"No VM or container {vmid} on {self.label}", error_code="GUEST_NOT_FOUND")

    async def guest_status(self, vmid: int) -> tuple[GuestType, PveGuest]:
        guest_type = await self.guest_type(vmid)
        data = await self._get(f"{self._node_path}/{guest_type}/{vmid}/status/current")
        return guest_type, parse_as(PveGuest, data, self.label)

    async def net_rates(self) -> tuple[float, float] | None:
        """The node's latest network rates (rx, tx bytes/s) from its RRD; None if it has none.

        Proxmox keeps no node disk I/O, so there is no such figure to fetch.
        """
        data = await self._get(f"{self._node_path}/rrddata", {"timeframe": "hour"})
        points = parse_as(list[PveRrdPoint], data, self.label)
        # The newest row is often a gap with only `time` in it.
        for point in reversed(points):
            if point.netin is not None and point.netout is not None:
                return point.netin, point.netout
        return None

    async def guest_resources(self) -> list[PveResource]:
        """Every guest of this node with its counters, in one call (for the collector)."""
        data = await self._get("/cluster/resources", {"type": "vm"})
        resources = parse_as(list[PveResource], data, self.label)
        return [guest for guest in resources if guest.node == self.server.node]

    async def task(self, upid: str) -> PveTask:
        data = await self._get(f"{self._node_path}/tasks/{quote(upid, safe='')}/status")
        return parse_as(PveTask, data, self.label)

    async def version(self) -> dict[str, Any]:
        """`{"release", "version", "repoid"}`; it needs a valid token like every other call."""
        return parse_as(dict[str, Any], await self._get("/version"), self.label)

    async def permissions(self) -> dict[str, dict[str, bool]]:
        """The token's effective privileges: ACL path -> {privilege: propagates to sub-paths}."""
        data = await self._get("/access/permissions")
        return parse_as(dict[str, dict[str, bool]], data, self.label)

    # --- actions ---------------------------------------------------------------------------

    async def power(self, vmid: int, action: PowerAction) -> str:
        """Start, stop, shut down or reboot a guest; returns the task's UPID."""
        guest_type = await self.guest_type(vmid)
        path = f"{self._node_path}/{guest_type}/{vmid}/status/{action.proxmox_command}"
        response = await self._http.request("POST", path)
        refusal = _message(response) if response.status_code == 500 else ""
        if refusal and not _MISSING.search(refusal):
            # "CT 105 already running", "VM 999 not running": the request was fine, the
            # guest's state refused it.
            raise Conflict(
                f"{self.label} refused to {action.value} {vmid}: {refusal}",
                error_code="ACTION_REFUSED",
            )
        upid = self._unwrap(response, privilege="VM.PowerMgmt")
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            raise UpstreamError(
                f"{self.label} did not return a task id", error_code="UPSTREAM_BAD_RESPONSE"
            )
        return upid

    # --- plumbing --------------------------------------------------------------------------

    async def _get(self, path: str, params: Params | None = None) -> Any:
        response = await self._http.get(path, params)
        return self._unwrap(response, privilege="Sys.Audit / VM.Audit")

    def _unwrap(self, response: UpstreamResponse, *, privilege: str) -> Any:
        if response.ok:
            body = response.json()
            if not isinstance(body, dict) or "data" not in body:
                raise UpstreamError(
                    f"{self.label} answered without a data envelope",
                    error_code="UPSTREAM_BAD_RESPONSE",
                )
            return body["data"]
        message = _message(response)
        if response.status_code == 401:
            raise UpstreamError(self._token_rejected(message), error_code="UPSTREAM_AUTH_FAILED")
        if response.status_code == 403:
            raise UpstreamError(
                self._permission_denied(message, privilege), error_code="UPSTREAM_FORBIDDEN"
            )
        if response.status_code in (400, 500) and _MISSING.search(message):
            raise NotFound(f"{self.label}: {message}")
        if response.headers.get("content-type", "").startswith("text/html"):
            message = f"HTTP {response.status_code} with an HTML page"
        raise UpstreamError(f"{self.label} answered {response.status_code}: {message}")

    def _token_rejected(self, message: str) -> str:
        variable = f"{self.server.env_prefix}TOKEN"
        if self.server.token is None:
            return f"{self.label} needs an API token: set {variable} (user@realm!tokenid=secret)"
        return f"{self.label} rejected the API token ({message}): check {variable}"

    def _permission_denied(self, message: str, privilege: str) -> str:
        match = _PERMISSION.search(message)
        if match:
            privilege, where = match["privilege"], f" on {match['path']}"
        else:
            where = ""
        return (
            f"The API token of {self.label} lacks the {privilege} privilege{where}. Grant it to "
            f"the token in Datacenter > Permissions (a token with privilege separation has no "
            f"rights of its own)"
        )
