"""Talks to the AI hub (Claude Code behind HTTP) with Basic auth."""

from __future__ import annotations

from homepanel.ai.schemas import CancelResult, ProcessList
from homepanel.core.config import Settings
from homepanel.core.http import UpstreamClient, basic_auth, path_segments

# The spec's 300 s is the gap allowed between chat events; the REST calls here answer at once.
TIMEOUT = 10.0


class AiClient:
    def __init__(self, settings: Settings) -> None:
        assert settings.ai_hub_url is not None
        self._http = UpstreamClient(
            "AI hub",
            settings.ai_hub_url,
            timeout=TIMEOUT,
            auth=basic_auth(settings.ai_hub_username, settings.ai_hub_password),
            credentials="AI_HUB_USERNAME / AI_HUB_PASSWORD",
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def processes(self) -> ProcessList:
        return await self._http.get_json(ProcessList, "/processes")

    async def cancel(self, process_id: str) -> CancelResult:
        """Stop a running chat; its Claude session stays and can be continued later."""
        return await self._http.send_json(
            CancelResult,
            "DELETE",
            f"/chat/{path_segments(process_id)}",
            not_found=f"No running AI process {process_id!r}",
        )
