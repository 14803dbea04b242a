"""`/api/mqtt/...`: topic states and publishing."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends

from homepanel.core.auth import require_session
from homepanel.core.deps import upstream
from homepanel.core.errors import ErrorResponse
from homepanel.mqtt.client import MqttClient
from homepanel.mqtt.schemas import PublishRequest, PublishResult, TopicList

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/mqtt",
    tags=["mqtt"],
    dependencies=[Depends(require_session)],
    responses={code: {"model": ErrorResponse} for code in (401, 422, 502, 503, 504)},
)
Mqtt = Annotated[MqttClient, Depends(upstream("mqtt", "The MQTT API", "MQTT_API_URL"))]


@router.get("/topics")
async def list_topics(mqtt: Mqtt) -> TopicList:
    """Every topic's last payload, as the MQTT API reports them."""
    return await mqtt.topics()


@router.post("/publish")
async def publish(mqtt: Mqtt, body: PublishRequest) -> PublishResult:
    """Publish to a topic (control a device via its `.../set` topic)."""
    await mqtt.publish(body.topic, body.payload)
    logger.info("Published to %s", body.topic)  # never the payload: it may be sensitive
    return PublishResult(success=True, message="Сообщение опубликовано")
