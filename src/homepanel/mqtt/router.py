"""`/api/mqtt/...`: topic states and publishing."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from homepanel.audit.log import audited
from homepanel.core.deps import API_DEPENDENCIES, upstream
from homepanel.core.errors import ErrorResponse
from homepanel.mqtt.client import MqttClient
from homepanel.mqtt.schemas import PublishRequest, PublishResult, TopicList
from homepanel.streams.sse import HubStreamResponse

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/mqtt",
    tags=["mqtt"],
    dependencies=API_DEPENDENCIES,
    responses={code: {"model": ErrorResponse} for code in (401, 422, 502, 503, 504)},
)
Mqtt = Annotated[MqttClient, Depends(upstream("mqtt", "The MQTT API", "MQTT_API_URL"))]


@router.get("/topics")
async def list_topics(mqtt: Mqtt) -> TopicList:
    """Every topic's last payload, as the MQTT API reports them."""
    return await mqtt.topics()


@router.get(
    "/stream",
    response_class=HubStreamResponse,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`event: mqtt`"}},
)
async def mqtt_stream(
    mqtt: Mqtt,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> HubStreamResponse:
    """Every MQTT message as `event: mqtt`, data `{"topic", "payload", "timestamp"}`.

    All tabs share one upstream connection. Events carry `id:`; a reconnecting `EventSource`
    sends `Last-Event-ID` and gets what it missed, or `event: resync` when that is too old
    (then reload `/api/mqtt/topics`). A client too slow to keep up gets `resync` and is
    disconnected.
    """
    return HubStreamResponse(mqtt.hub, last_event_id)


@router.post("/publish")
async def publish(request: Request, mqtt: Mqtt, body: PublishRequest) -> PublishResult:
    """Publish to a topic (control a device via its `.../set` topic)."""
    async with audited(request, "mqtt.publish", body.topic):
        await mqtt.publish(body.topic, body.payload)
    logger.info("Published to %s", body.topic)  # never the payload: it may be sensitive
    return PublishResult(success=True, message="Сообщение опубликовано")
