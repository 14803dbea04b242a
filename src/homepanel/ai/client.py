"""Talks to the AI hub (Claude Code behind HTTP) with Basic auth."""

from __future__ import annotations

import httpx2

from homepanel.ai.schemas import CancelResult, ChatRequest, ProcessList
from homepanel.core.config import Settings
from homepanel.core.http import OnCall, UpstreamClient, basic_auth, path_segments

# The REST calls answer at once; a chat may think for the spec's 300 s between two events.
TIMEOUT = 10.0
CHAT_SILENCE = 300.0


class AiClient:
    def __init__(self, settings: Settings, on_call: OnCall | None = None) -> None:
        assert settings.ai_hub_url is not None
        self._http = UpstreamClient(
            "AI hub",
            settings.ai_hub_url,
            timeout=TIMEOUT,
            auth=basic_auth(settings.ai_hub_username, settings.ai_hub_password),
            credentials="AI_HUB_USERNAME / AI_HUB_PASSWORD",
            on_call=on_call,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def processes(self) -> ProcessList:
        return await self._http.get_json(ProcessList, "/processes")

    async def open_chat(self, chat: ChatRequest) -> httpx2.Response:
        """The hub's `stream-json` SSE answer to one message, open; the caller relays it."""
        return await self._http.open_stream(
            "POST", "/chat", json=chat.model_dump(), read_timeout=CHAT_SILENCE
        )

    async def cancel(self, process_id: str) -> CancelResult:
        """Stop a running chat; its Claude session stays and can be continued later."""
        return await self._http.send_json(
            CancelResult,
            "DELETE",
            f"/chat/{path_segments(process_id)}",
            not_found=f"No running AI process {process_id!r}",
        )
