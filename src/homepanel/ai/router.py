"""`/api/ai/...`: running processes and cancelling a chat."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from homepanel.ai.client import AiClient
from homepanel.ai.schemas import PROCESS_ID, CancelResult, ChatRequest, ProcessList
from homepanel.audit.log import audited
from homepanel.core.deps import API_DEPENDENCIES, ClientIp, SettingsDep, upstream
from homepanel.core.errors import ErrorResponse
from homepanel.core.ratelimit import RateLimiter
from homepanel.streams.sse import RelayResponse

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/ai",
    tags=["ai"],
    dependencies=API_DEPENDENCIES,
    responses={code: {"model": ErrorResponse} for code in (401, 404, 422, 429, 502, 503, 504)},
)
Ai = Annotated[AiClient, Depends(upstream("ai", "The AI hub", "AI_HUB_URL"))]


@router.post(
    "/chat",
    response_class=RelayResponse,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}, "description": "stream-json events"}},
)
async def chat(
    ai: Ai, body: ChatRequest, request: Request, ip: ClientIp, settings: SettingsDep
) -> RelayResponse:
    """Send a message; the hub's `stream-json` events come back unmodified as `event: message`,
    then `event: done` with the `process_id` (use it to cancel). Keep the `session_id` of the
    first `system`/`init` event to continue the conversation."""
    async with audited(request, "ai.chat", body.session_id or "new session"):
        limiter: RateLimiter = request.app.state.rate_limiter
        await limiter.hit(settings.rate_limit_ai, "ai", ip)
        upstream_response = await ai.open_chat(body)
    logger.info("AI chat started (session %s)", body.session_id or "new")
    return RelayResponse(upstream_response, "AI hub")


@router.get("/processes")
async def list_processes(ai: Ai) -> ProcessList:
    return await ai.processes()


@router.delete("/chat/{process_id}")
async def cancel_chat(
    request: Request, ai: Ai, process_id: Annotated[str, Path(pattern=PROCESS_ID)]
) -> CancelResult:
    """Cancel a running chat. The Claude session survives and can be continued."""
    async with audited(request, "ai.cancel", process_id):
        result = await ai.cancel(process_id)
    logger.info("AI process %s cancelled", process_id)
    return result
