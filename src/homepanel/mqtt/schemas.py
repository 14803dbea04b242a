"""MQTT topics as the MQTT API reports them, and the publish request."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

MAX_TOPIC_BYTES = 65535  # MQTT's limit for a UTF-8 topic name


class Topic(BaseModel):
    model_config = ConfigDict(extra="allow")  # passed through: the MQTT API owns this shape

    path: str
    payload: JsonValue = None
    timestamp: str | None = None


class TopicList(BaseModel):
    model_config = ConfigDict(extra="allow")

    topics: list[Topic]


class PublishRequest(BaseModel):
    topic: str = Field(description="an MQTT publish topic: no wildcards, at most 65535 bytes")
    payload: JsonValue = Field(description="any JSON value, sent to the MQTT API as it is")

    @field_validator("topic")
    @classmethod
    def _publishable(cls, topic: str) -> str:
        if not topic:
            raise ValueError("must not be empty")
        if "+" in topic or "#" in topic:
            raise ValueError("wildcards + and # are for subscribing, not publishing")
        if "\x00" in topic:
            raise ValueError("must not contain NUL")
        if len(topic.encode()) > MAX_TOPIC_BYTES:
            raise ValueError("must be at most 65535 bytes")
        return topic


class PublishResult(BaseModel):
    success: bool
    message: str
