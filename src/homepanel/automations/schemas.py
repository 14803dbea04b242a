"""Automations as the Automation API reports them; passed through, extra fields included."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

# An automation name (`main/kitchen/motion_light`) or a container name
# (`automation-main-kitchen-motion_light`): segments that cannot be `.`/`..`, hold no `\`,
# `%`, `?`, `#`, spaces or control characters.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}){0,7}$"


class _PassThrough(BaseModel):
    model_config = ConfigDict(extra="allow")


class Container(_PassThrough):
    id: str | None = None
    status: str
    uptime_seconds: int | None = None


class MqttStatus(_PassThrough):
    status: str | None = None
    uptime: int | None = None
    triggers_count: int | None = None
    errors_count: int | None = None
    last_trigger: str | None = None


class AutomationMqtt(_PassThrough):
    status: MqttStatus | None = None


class Health(_PassThrough):
    overall: str
    docker_running: bool
    mqtt_responding: bool


class Automation(_PassThrough):
    container_name: str
    automation_name: str
    container: Container
    mqtt: AutomationMqtt
    health: Health


class AutomationList(_PassThrough):
    total: int
    running: int
    stopped: int
    automations: list[Automation]


class ControlAction(StrEnum):
    start = "start"
    stop = "stop"
    restart = "restart"


class ControlResult(_PassThrough):
    success: bool
    action: str
    container_name: str
    message: str
    new_status: str
