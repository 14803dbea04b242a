"""The simulated home lab: every simulator on a free loopback port, started and stopped together.

Demo mode and the test suite both use it. It hands out ordinary configuration (the same
`PROXMOX_<KEY>_*` variables an owner writes), so the app talks to it through its real clients.
"""

from __future__ import annotations

import secrets
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from homepanel.core.config import ProxmoxServer, proxmox_servers_from
from homepanel.simulator.proxmox import ProxmoxHost, demo_hosts
from homepanel.simulator.tls import TlsFiles, make_tls_files, server_ssl_context

LOOPBACK = "127.0.0.1"
# Server id -> (variable key, display name), as the spec's example lab has them.
_PROXMOX_NAMES = {"nas": ("NAS", "NAS Server"), "smart-home": ("SMART", "Smart Home Server")}


def _token() -> str:
    return f"root@pam!homepanel={uuid.UUID(bytes=secrets.token_bytes(16))}"


class Lab:
    """`async with Lab() as lab:` runs the simulators until the block ends."""

    def __init__(self) -> None:
        self.proxmox: dict[str, ProxmoxHost] = {}
        self.proxmox_urls: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="homepanel-lab-")
        self.tls: TlsFiles | None = None

    async def __aenter__(self) -> Lab:
        self.tls = make_tls_files(Path(self._tmp.name))
        tls = server_ssl_context(self.tls)
        self.proxmox = demo_hosts(nas_token=_token(), smart_token=_token())
        for server_id, host in self.proxmox.items():
            self.proxmox_urls[server_id] = await self._serve(host.app(), tls)
        return self

    async def _serve(self, app: web.Application, tls: object) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=tls)  # type: ignore[arg-type]
        await site.start()
        port = runner.addresses[0][1]
        return f"{'https' if tls else 'http'}://{LOOPBACK}:{port}"

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._tmp.cleanup()

    def proxmox_env(self) -> dict[str, str]:
        """The `PROXMOX_*` variables an owner would write for this lab (CA pinned)."""
        assert self.tls is not None, "the lab is not running"
        variables = {}
        for server_id, host in self.proxmox.items():
            key, name = _PROXMOX_NAMES[server_id]
            variables |= {
                f"PROXMOX_{key}_URL": self.proxmox_urls[server_id],
                f"PROXMOX_{key}_ID": server_id,
                f"PROXMOX_{key}_NAME": name,
                f"PROXMOX_{key}_NODE": host.node,
                f"PROXMOX_{key}_TOKEN": host.token,
                f"PROXMOX_{key}_VERIFY_SSL": str(self.tls.ca),
            }
        return variables

    def proxmox_servers(self) -> list[ProxmoxServer]:
        return proxmox_servers_from(self.proxmox_env())

    def settings_update(self) -> dict[str, Any]:
        """What demo mode changes in the settings: every upstream is the lab's, or none."""
        return {
            "proxmox_servers": self.proxmox_servers(),
            # Not simulated yet: "not configured" (503), never the owner's real services.
            "frigate_url": None,
            "mqtt_api_url": None,
            "automation_api_url": None,
            "ai_hub_url": None,
        }
