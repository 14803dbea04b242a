"""Talks to the Automation API (Docker-hosted automations) with Basic auth."""

from __future__ import annotations

import httpx2

from homepanel.automations.schemas import Automation, AutomationList, ControlAction, ControlResult
from homepanel.core.config import Settings
from homepanel.core.http import OnCall, UpstreamClient, basic_auth, path_segments

TIMEOUT = 5.0
LOG_SILENCE = 60.0  # the Automation API sends a keep-alive every 15 s


class AutomationClient:
    def __init__(self, settings: Settings, on_call: OnCall | None = None) -> None:
        assert settings.automation_api_url is not None
        self._http = UpstreamClient(
            "Automation API",
            settings.automation_api_url,
            timeout=TIMEOUT,
            auth=basic_auth(settings.automation_api_username, settings.automation_api_password),
            credentials="AUTOMATION_API_USERNAME / AUTOMATION_API_PASSWORD",
            on_call=on_call,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def automations(self) -> AutomationList:
        return await self._http.get_json(AutomationList, "/api/automations")

    async def automation(self, name: str) -> Automation:
        return await self._http.get_json(
            Automation, f"/api/automations/{path_segments(name)}", not_found=_unknown(name)
        )

    async def control(self, name: str, action: ControlAction) -> ControlResult:
        return await self._http.send_json(
            ControlResult,
            "POST",
            f"/api/control/{path_segments(name)}/{action.value}",
            not_found=_unknown(name),
        )

    async def open_logs(self, name: str, lines: int) -> httpx2.Response:
        """The upstream log stream (SSE), open; the caller relays and closes it."""
        return await self._http.open_stream(
            "GET",
            f"/api/logs/{path_segments(name)}",
            params={"lines": lines},
            read_timeout=LOG_SILENCE,
            not_found=_unknown(name),
        )


def _unknown(name: str) -> str:
    return f"Unknown automation {name!r}"
