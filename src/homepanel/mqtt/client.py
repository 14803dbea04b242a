"""Talks to the MQTT API (an HTTP wrapper around the broker) with Basic auth.

Its live stream is read by one hub for the whole backend; the hub's subscribers are every
browser tab (and, later, the device-state tracker).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import JsonValue

from homepanel.core.config import Settings
from homepanel.core.http import OnCall, UpstreamClient, basic_auth
from homepanel.mqtt.schemas import TopicList
from homepanel.streams.hub import StreamHub

logger = logging.getLogger(__name__)

TIMEOUT = 5.0
# The MQTT API sends a keep-alive every 15 s: three missed ones mean the stream is dead.
STREAM_SILENCE = 45.0


class MqttClient:
    def __init__(self, settings: Settings, on_call: OnCall | None = None) -> None:
        assert settings.mqtt_api_url is not None
        self._http = UpstreamClient(
            "MQTT API",
            settings.mqtt_api_url,
            timeout=TIMEOUT,
            auth=basic_auth(settings.mqtt_api_username, settings.mqtt_api_password),
            credentials="MQTT_API_USERNAME / MQTT_API_PASSWORD",
            on_call=on_call,
        )
        self.hub = StreamHub("MQTT API", self.messages, event="mqtt")

    async def aclose(self) -> None:
        await self.hub.close()
        await self._http.aclose()

    async def topics(self) -> TopicList:
        return await self._http.get_json(TopicList, "/api/v1/topics")

    async def publish(self, topic: str, payload: JsonValue) -> None:
        """`POST /api/v1/topic?path=<topic>` with the payload as the body, as it is.

        The body is serialised here: httpx2 takes `json=None` as "no body", but `null` is a
        payload too. The topic travels as a query value, encoded, so `?`, `&` or `/` in it
        cannot change which path or parameter the MQTT API sees.
        """
        await self._http.send_json(
            object,  # the answer's shape is not ours to check; its status is
            "POST",
            "/api/v1/topic",
            params={"path": topic},
            content=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """One connection to `/api/v1/stream`, as `{"topic", "payload", "timestamp"}` dicts.

        Any event name is accepted; an event without a usable topic is skipped.
        """
        async with self._http.events("/api/v1/stream", read_timeout=STREAM_SILENCE) as events:
            logger.info("MQTT API stream connected")
            async for event in events:
                message = _message(event.data)
                if message is None:
                    logger.debug("Skipped an MQTT API event without a topic")
                    continue
                yield message


def _message(data: str) -> dict[str, Any] | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("topic"), str):
        return None
    return {
        "topic": body["topic"],
        "payload": _payload(body.get("payload")),
        "timestamp": body.get("timestamp") or datetime.now().isoformat(),
    }


def _payload(value: Any) -> Any:
    """A payload that arrives as a JSON text is decoded; any other string stays a string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
