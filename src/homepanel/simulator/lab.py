"""The simulated home lab: every simulator on a free loopback port, started and stopped together.

Demo mode and the test suite both use it. It hands out ordinary configuration (the same
variables an owner writes), so the app talks to it through its real clients.
"""

from __future__ import annotations

import secrets
import ssl
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from homepanel.core.config import ProxmoxServer, proxmox_servers_from
from homepanel.simulator.ai_hub import AiHub
from homepanel.simulator.automations import AutomationApi
from homepanel.simulator.faults import SimulatedService
from homepanel.simulator.frigate import FrigateServer, demo_cameras
from homepanel.simulator.mqtt import MqttApi
from homepanel.simulator.proxmox import ProxmoxHost, demo_hosts
from homepanel.simulator.tls import TlsFiles, make_tls_files, server_ssl_context

LOOPBACK = "127.0.0.1"
# Server id -> (variable key, display name), as the spec's example lab has them.
_PROXMOX_NAMES = {"nas": ("NAS", "NAS Server"), "smart-home": ("SMART", "Smart Home Server")}
# Upstream -> the prefix of its variables; each has _URL, _USERNAME and _PASSWORD.
_PREFIXES = {
    "frigate": "FRIGATE",
    "mqtt": "MQTT_API",
    "automations": "AUTOMATION_API",
    "ai": "AI_HUB",
}


def _token() -> str:
    return f"root@pam!homepanel={uuid.UUID(bytes=secrets.token_bytes(16))}"


class Lab:
    """`async with Lab() as lab:` runs the simulators until the block ends.

    Frigate runs twice: `frigate` is 0.14-style (HTTPS, login required, like port 8971) and the
    one the lab's configuration names; `frigate_legacy` is 0.13-style (plain HTTP, no login).
    """

    def __init__(self) -> None:
        self.proxmox: dict[str, ProxmoxHost] = {}
        self.proxmox_urls: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        self.users = {name: ("admin", secrets.token_urlsafe(12)) for name in _PREFIXES}
        user, password = self.users["frigate"]
        self.frigate = FrigateServer(
            version="0.14", cameras=demo_cameras(), username=user, password=password, seed=14
        )
        self.frigate_legacy = FrigateServer(version="0.13", cameras=demo_cameras(), seed=13)
        self.mqtt = MqttApi(username=self.users["mqtt"][0], password=self.users["mqtt"][1])
        self.automations = AutomationApi(
            username=self.users["automations"][0], password=self.users["automations"][1]
        )
        self.ai = AiHub(username=self.users["ai"][0], password=self.users["ai"][1])
        self.frigate_legacy_url = ""
        self._runners: list[web.AppRunner] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="homepanel-lab-")
        self.tls: TlsFiles | None = None

    @property
    def services(self) -> list[SimulatedService]:
        """Every simulator, for resetting them all."""
        return [
            *self.proxmox.values(),
            self.frigate,
            self.frigate_legacy,
            self.mqtt,
            self.automations,
            self.ai,
        ]

    async def __aenter__(self) -> Lab:
        self.tls = make_tls_files(Path(self._tmp.name))
        tls = server_ssl_context(self.tls)
        self.proxmox = demo_hosts(nas_token=_token(), smart_token=_token())
        for server_id, host in self.proxmox.items():
            self.proxmox_urls[server_id] = await self._serve(host.app(), tls)
        self.urls["frigate"] = await self._serve(self.frigate.app(), tls)
        self.frigate_legacy_url = await self._serve(self.frigate_legacy.app(), None)
        self.urls["mqtt"] = await self._serve(self.mqtt.app(), None)
        self.urls["automations"] = await self._serve(self.automations.app(), None)
        self.urls["ai"] = await self._serve(self.ai.app(), None)
        return self

    async def _serve(self, app: web.Application, tls: ssl.SSLContext | None) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, LOOPBACK, 0, ssl_context=tls).start()
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

    def reset(self) -> None:
        """Every simulator healthy and in its initial state (call on the lab's loop)."""
        for service in self.services:
            service.reset()

    def env(self) -> dict[str, str]:
        """The variables an owner would write for this lab (TLS pinned to the lab's CA)."""
        assert self.tls is not None, "the lab is not running"
        variables = {"FRIGATE_VERIFY_SSL": str(self.tls.ca)}
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
        for name, prefix in _PREFIXES.items():
            user, password = self.users[name]
            variables |= {
                f"{prefix}_URL": self.urls[name],
                f"{prefix}_USERNAME": user,
                f"{prefix}_PASSWORD": password,
            }
        return variables

    def proxmox_servers(self) -> list[ProxmoxServer]:
        return proxmox_servers_from(self.env())

    def settings_update(self) -> dict[str, Any]:
        """What demo mode changes in the settings: every upstream is the lab's."""
        assert self.tls is not None, "the lab is not running"
        update: dict[str, Any] = {
            "proxmox_servers": self.proxmox_servers(),
            "frigate_verify_ssl": self.tls.ca,
        }
        for name, prefix in _PREFIXES.items():
            user, password = self.users[name]
            update |= {
                f"{prefix.lower()}_url": self.urls[name],
                f"{prefix.lower()}_username": user,
                f"{prefix.lower()}_password": SecretStr(password),
            }
        return update
