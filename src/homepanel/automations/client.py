"""Talks to the Automation API (Docker-hosted automations) with Basic auth."""

from __future__ import annotations

from homepanel.automations.schemas import Automation, AutomationList, ControlAction, ControlResult
from homepanel.core.config import Settings
from homepanel.core.http import UpstreamClient, basic_auth, path_segments

TIMEOUT = 5.0


class AutomationClient:
    def __init__(self, settings: Settings) -> None:
        assert settings.automation_api_url is not None
        self._http = UpstreamClient(
            "Automation API",
            settings.automation_api_url,
            timeout=TIMEOUT,
            auth=basic_auth(settings.automation_api_username, settings.automation_api_password),
            credentials="AUTOMATION_API_USERNAME / AUTOMATION_API_PASSWORD",
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


def _unknown(name: str) -> str:
    return f"Unknown automation {name!r}"
