"""Talks to the MQTT API (an HTTP wrapper around the broker) with Basic auth."""

from __future__ import annotations

import json

from pydantic import JsonValue

from homepanel.core.config import Settings
from homepanel.core.http import UpstreamClient, basic_auth
from homepanel.mqtt.schemas import TopicList

TIMEOUT = 5.0


class MqttClient:
    def __init__(self, settings: Settings) -> None:
        assert settings.mqtt_api_url is not None
        self._http = UpstreamClient(
            "MQTT API",
            settings.mqtt_api_url,
            timeout=TIMEOUT,
            auth=basic_auth(settings.mqtt_api_username, settings.mqtt_api_password),
            credentials="MQTT_API_USERNAME / MQTT_API_PASSWORD",
        )

    async def aclose(self) -> None:
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
