"""`/api/ai/...`: running processes and cancelling a chat."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from homepanel.ai.client import AiClient
from homepanel.ai.schemas import PROCESS_ID, CancelResult, ProcessList
from homepanel.core.auth import require_session
from homepanel.core.deps import upstream
from homepanel.core.errors import ErrorResponse

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/ai",
    tags=["ai"],
    dependencies=[Depends(require_session)],
    responses={code: {"model": ErrorResponse} for code in (401, 404, 422, 502, 503, 504)},
)
Ai = Annotated[AiClient, Depends(upstream("ai", "The AI hub", "AI_HUB_URL"))]


@router.get("/processes")
async def list_processes(ai: Ai) -> ProcessList:
    return await ai.processes()


@router.delete("/chat/{process_id}")
async def cancel_chat(ai: Ai, process_id: Annotated[str, Path(pattern=PROCESS_ID)]) -> CancelResult:
    """Cancel a running chat. The Claude session survives and can be continued."""
    result = await ai.cancel(process_id)
    logger.info("AI process %s cancelled", process_id)
    return result
