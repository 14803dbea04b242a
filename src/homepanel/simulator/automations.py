"""A simulated Automation API: the owner's monitor of automations running in Docker containers.

The panel lists the automations, controls their containers, follows their logs over
Server-Sent Events and stores their trigger counts as metrics, so this fake keeps all of that
consistent. Uptime grows in real time; while the app runs, each running automation writes a log
line every `log_interval` seconds or so, and those lines are its triggers and errors, so the
counters and the log tell the same story. The counters live in the automation's process: a
restart, or a start after a stop, sets them back to 0, which metrics collectors have to survive.
One automation hangs (its container runs, its MQTT client no longer answers) until restarted.
A log stream ends when its container stops, as `docker logs --follow` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from homepanel.simulator.faults import (
    Frames,
    SimulatedService,
    basic_auth,
    open_event_stream,
    pump_events,
)

DEFAULT_LINES = 100
_HISTORY = 200  # log lines each automation has written before the simulator starts
_LOG_LIMIT = 1000  # log lines kept per automation
_ERROR_RATE = 0.03  # share of an automation's steps that fail
_BROKER = "mosquitto:1883"
_RUNNER = web.AppKey("automation_runner", asyncio.Task)
_MESSAGES = {
    "start": "Контейнер запущен",
    "stop": "Контейнер остановлен",
    "restart": "Контейнер перезапущен",
}

Entry = tuple[str, str]  # (level, message) of one log line


@dataclass(frozen=True)
class _Spec:
    """One automation as deployed: what it logs when it triggers, idles or fails."""

    name: str
    logger: str
    activity: float  # share of its steps that are triggers
    triggers: tuple[str, ...]
    idle: str
    error: str
    running: bool = True
    hangs: bool = False  # its MQTT client stopped answering a while ago

    @property
    def container_name(self) -> str:
        return "automation-" + self.name.replace("/", "-")


_SPECS = (
    _Spec(
        "monitor",
        "monitor",
        0.5,
        ("Status request received", "Published status of 11 automations"),
        "Heartbeat sent",
        "Docker API timeout while listing containers",
    ),
    _Spec(
        "main/kitchen/motion_light",
        "kitchen",
        0.3,
        ("Motion detected", "Light turned ON"),
        "No motion for 120 s, light stays OFF",
        "Timeout waiting for zigbee2mqtt/kitchen-light/set confirmation",
    ),
    _Spec(
        "main/hallway/night_light",
        "hallway",
        0.2,
        ("Motion detected at night", "Night light turned ON at 10%"),
        "Daytime, night light disabled",
        "Timeout waiting for zigbee2mqtt/hallway-light/set confirmation",
    ),
    _Spec(
        "main/eduard/wardrobe_light",
        "eduard",
        0.25,
        ("Wardrobe door opened", "Wardrobe light turned ON"),
        "Wardrobe doors closed",
        "Unexpected payload on zigbee2mqtt/main-eduard-big-wardrobe-left-door",
    ),
    _Spec(
        "main/bathroom/fan",
        "bathroom",
        0.1,
        ("Humidity 72% above 65%", "Fan turned ON"),
        "Humidity 48%, fan OFF",
        "Timeout waiting for zigbee2mqtt/bathroom-switch/set confirmation",
    ),
    _Spec(
        "main/living_room/tv_scene",
        "living_room",
        0.05,
        ("TV power above 40 W", "Scene 'movie' applied"),
        "TV is off",
        "Scene 'movie' failed: living-room-light unavailable",
    ),
    _Spec(
        "outdoor/garden/irrigation",
        "garden",
        0.05,
        ("Soil moisture 21% below 30%", "Pump turned ON for 10 min"),
        "Soil moisture OK",
        "Timeout waiting for zigbee2mqtt/garden-pump-plug/set confirmation",
        running=False,
    ),
    _Spec(
        "outdoor/entrance/doorbell",
        "entrance",
        0.05,
        ("Doorbell pressed", "Notification sent"),
        "Waiting for the doorbell",
        "Notification failed: Telegram API returned 502",
    ),
    _Spec(
        "climate/bedroom/heating",
        "bedroom",
        0.15,
        ("Temperature 19.2°C below 20.5°C", "Heater plug turned ON"),
        "Temperature within target",
        "Timeout waiting for zigbee2mqtt/bedroom-heater-plug/set confirmation",
        hangs=True,
    ),
    _Spec(
        "climate/kitchen/ventilation",
        "kitchen",
        0.1,
        ("CO2 above 1000 ppm", "Window reminder sent"),
        "Air quality OK",
        "Sensor kitchen-co2 unavailable",
        running=False,
    ),
    _Spec(
        "energy/washing_machine/notify",
        "washing_machine",
        0.05,
        ("Washing machine power dropped below 5 W", "Notification sent: laundry is done"),
        "Washing machine idle",
        "Notification failed: Telegram API returned 502",
    ),
)


@dataclass
class _Automation:
    """The container and the automation process inside it, with the process's counters."""

    spec: _Spec
    container_id: str
    running: bool
    started_at: float  # wall clock when the container (last) started
    mqtt_delay: float  # seconds from container start until its MQTT client connected
    hung_since: float | None  # when its MQTT client stopped answering
    triggers: int
    errors: int
    last_trigger: float | None
    log: deque[str]

    def detail(self, now: float) -> dict[str, Any]:
        """The monitor's view of this automation, as both of its endpoints return it."""
        uptime = int(now - self.started_at) if self.running else 0
        responding = self.running and self.hung_since is None
        status_at = now if self.hung_since is None else self.hung_since  # a hung one is stale
        mqtt_uptime = int(max(0.0, status_at - self.started_at - self.mqtt_delay))
        return {
            "container_name": self.spec.container_name,
            "automation_name": self.spec.name,
            "container": {
                "id": self.container_id,
                "status": self.status,
                "uptime_seconds": uptime,
            },
            "mqtt": {
                "status": {
                    "status": "running" if self.running else "stopped",
                    "uptime": mqtt_uptime if self.running else 0,
                    "triggers_count": self.triggers,
                    "errors_count": self.errors,
                    "last_trigger": _naive_iso(self.last_trigger),
                }
            },
            "health": {
                "overall": _overall(self.running, responding),
                "docker_running": self.running,
                "mqtt_responding": responding,
            },
        }

    @property
    def status(self) -> str:
        return "running" if self.running else "exited"


def _overall(running: bool, responding: bool) -> str:
    if not running:
        return "stopped"
    return "healthy" if responding else "unhealthy"


def _naive_iso(moment: float | None) -> str | None:
    """The monitor's timestamps: local time, no offset, always with microseconds."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment).isoformat(timespec="microseconds")


def _docker_time(ns: int) -> str:
    """Docker's log timestamp: RFC 3339 in UTC with nanoseconds, trailing zeros trimmed (Go)."""
    seconds, fraction = divmod(ns, 10**9)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def _log_line(ns: int, logger: str, level: str, message: str) -> str:
    """A line as `docker logs --timestamps` prints a Python logging line of the automation."""
    local = datetime.fromtimestamp(ns / 10**9).strftime("%Y-%m-%d %H:%M:%S")
    return f"{_docker_time(ns)} {local} - {logger} - {level} - {message}"


def _frame(line: str) -> bytes:
    return f"event: log\ndata: {line}\n\n".encode()


def _startup(spec: _Spec) -> list[Entry]:
    return [
        ("INFO", f"Starting automation {spec.name}"),
        ("INFO", f"Connected to MQTT broker at {_BROKER}"),
    ]


def _shutdown() -> list[Entry]:
    return [("INFO", "Received SIGTERM, shutting down"), ("INFO", "Disconnected from MQTT broker")]


def _step(spec: _Spec, rng: random.Random, responding: bool) -> tuple[str, list[Entry]]:
    """What one step of the automation does: ("trigger" | "error" | "idle" | "stale", lines)."""
    if not responding:
        return "stale", [("WARNING", f"No PINGRESP from {_BROKER}, reconnecting")]
    if rng.random() < _ERROR_RATE:
        return "error", [("ERROR", spec.error)]
    if rng.random() < spec.activity:
        return "trigger", [("INFO", message) for message in spec.triggers]
    return "idle", [("DEBUG", spec.idle)]


def _history(automation: _Automation, rng: random.Random, until: float) -> None:
    """Fill the log with what the current (or last) run wrote up to `until`."""
    spec = automation.spec
    start = automation.started_at
    steps = sorted(rng.uniform(start + 1, until - 1) for _ in range(_HISTORY))
    timeline = [(start, entry) for entry in _startup(spec)]
    for moment in steps:
        responding = automation.hung_since is None or moment < automation.hung_since
        timeline += [(moment, entry) for entry in _step(spec, rng, responding)[1]]
    if not automation.running:
        timeline += [(until, entry) for entry in _shutdown()]
    for moment, (level, message) in timeline:
        automation.log.append(_log_line(int(moment * 10**9), spec.logger, level, message))


def _deploy(spec: _Spec, rng: random.Random, now: float) -> _Automation:
    """The automation as found when the simulator starts, with a log to match."""
    run_ends = now if spec.running else now - rng.uniform(3_600, 3 * 86_400)
    started_at = run_ends - rng.uniform(3_600, 10 * 86_400)
    hung_since = now - rng.uniform(600, 3_600) if spec.hangs else None
    automation = _Automation(
        spec=spec,
        container_id=f"{rng.getrandbits(48):012x}",
        running=spec.running,
        started_at=started_at,
        mqtt_delay=rng.uniform(2, 25),
        hung_since=hung_since,
        triggers=int((run_ends - started_at) * rng.uniform(0.002, 0.05)),
        errors=rng.choice((0, 0, 0, 1, 2, 7)),
        last_trigger=(hung_since or run_ends) - rng.uniform(5, 900),
        log=deque(maxlen=_LOG_LIMIT),
    )
    _history(automation, rng, run_ends)
    return automation


def _lines_wanted(request: web.Request) -> int | None:
    """The `lines` query parameter, or None when it is not a non-negative integer."""
    try:
        lines = int(request.query.get("lines", DEFAULT_LINES))
    except ValueError:
        return None
    return lines if lines >= 0 else None


def _not_found() -> web.Response:
    return web.json_response({"detail": "Automation not found"}, status=404)


class AutomationApi(SimulatedService):
    """The Automation API with 11 automations. Serve :meth:`app` over HTTP to use it."""

    def __init__(
        self, *, username: str, password: str, seed: int = 0, log_interval: float = 1.0
    ) -> None:
        super().__init__()
        self.username = username
        self.password = password
        self.seed = seed
        self.log_interval = log_interval
        self._tails: dict[str, set[Frames]] = {spec.name: set() for spec in _SPECS}
        rng = random.Random(f"{seed}:automations")
        now = time.time()
        self._initial = [_deploy(spec, rng, now) for spec in _SPECS]
        self.reset()

    @property
    def open_log_streams(self) -> int:
        """How many `/api/logs/...` streams are open right now."""
        return sum(len(tails) for tails in self._tails.values())

    # -- lifecycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this API; automations run while it runs."""
        app = self.new_app(basic_auth(self.username, self.password))
        app.router.add_get("/api/automations", self._get_list)
        app.router.add_get("/api/automations/{name:.+}", self._get_detail)
        app.router.add_post("/api/control/{name:.+}/{action:[^/]+}", self._post_control)
        app.router.add_get("/api/logs/{name:.+}", self._get_logs)
        app.on_startup.append(self._start_running)
        app.on_shutdown.append(self._end_streams)
        app.on_cleanup.append(self._stop_running)
        return app

    def reset(self) -> None:
        """Healthy again, every automation as initially deployed, the step sequence restarted."""
        super().reset()
        self._rng = random.Random(f"{self.seed}:steps")
        self._automations = {
            automation.spec.name: replace(automation, log=automation.log.copy())
            for automation in self._initial
        }

    def automation(self, name: str) -> dict[str, Any] | None:
        """The current detail of an automation, by automation name or container name."""
        automation = self._find(name)
        return None if automation is None else automation.detail(time.time())

    def _find(self, name: str) -> _Automation | None:
        for automation in self._automations.values():
            if name in (automation.spec.name, automation.spec.container_name):
                return automation
        return None

    async def _start_running(self, app: web.Application) -> None:
        app[_RUNNER] = asyncio.create_task(self._run_forever())

    async def _stop_running(self, app: web.Application) -> None:
        app[_RUNNER].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[_RUNNER]

    async def _end_streams(self, app: web.Application) -> None:
        """Let open log streams finish cleanly so that the server can stop without waiting."""
        for name in self._tails:
            self._end_tails(name)

    # -- living automations --------------------------------------------------------------

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.log_interval * self._rng.uniform(0.5, 1.5))
            for automation in self._automations.values():
                if automation.running:
                    self._advance(automation)

    def _advance(self, automation: _Automation) -> None:
        """One step of a running automation: its counters move and its log says why."""
        outcome, entries = _step(automation.spec, self._rng, automation.hung_since is None)
        if outcome == "trigger":
            automation.triggers += 1
            automation.last_trigger = time.time()
        elif outcome == "error":
            automation.errors += 1
        self._log(automation, entries)

    def _log(self, automation: _Automation, entries: list[Entry]) -> None:
        for level, message in entries:
            line = _log_line(time.time_ns(), automation.spec.logger, level, message)
            automation.log.append(line)
            for frames in self._tails[automation.spec.name]:
                frames.put_nowait(_frame(line))

    def _end_tails(self, name: str) -> None:
        for frames in self._tails[name]:
            frames.put_nowait(None)

    # -- control -------------------------------------------------------------------------

    def _stop(self, automation: _Automation) -> None:
        """`docker stop`: the process exits, its followers' log streams end."""
        if not automation.running:
            return
        self._log(automation, _shutdown())
        automation.running = False
        self._end_tails(automation.spec.name)

    def _start(self, automation: _Automation) -> None:
        """`docker start`: a new process, so uptime and counters begin again from zero."""
        if automation.running:
            return
        automation.running = True
        automation.started_at = time.time()
        automation.hung_since = None
        automation.triggers = automation.errors = 0
        automation.last_trigger = None
        self._log(automation, _startup(automation.spec))

    # -- handlers ------------------------------------------------------------------------

    async def _get_list(self, request: web.Request) -> web.Response:
        now = time.time()
        automations = [automation.detail(now) for automation in self._automations.values()]
        running = sum(automation.running for automation in self._automations.values())
        return web.json_response(
            {
                "total": len(automations),
                "running": running,
                "stopped": len(automations) - running,
                "automations": automations,
            }
        )

    async def _get_detail(self, request: web.Request) -> web.Response:
        detail = self.automation(request.match_info["name"])
        return _not_found() if detail is None else web.json_response(detail)

    async def _post_control(self, request: web.Request) -> web.Response:
        automation = self._find(request.match_info["name"])
        if automation is None:
            return _not_found()
        action = request.match_info["action"]
        if action not in _MESSAGES:
            detail = f"Unknown action '{action}': use start, stop or restart"
            return web.json_response({"detail": detail}, status=400)
        if action in ("stop", "restart"):
            self._stop(automation)
        if action in ("start", "restart"):
            self._start(automation)
        return web.json_response(
            {
                "success": True,
                "action": action,
                "container_name": automation.spec.container_name,
                "message": _MESSAGES[action],
                "new_status": automation.status,
            }
        )

    async def _get_logs(self, request: web.Request) -> web.StreamResponse:
        """The last `lines` lines, then new ones as they are written, until the container
        stops or the client leaves (`docker logs --follow --tail`)."""
        automation = self._find(request.match_info["name"])
        if automation is None:
            return _not_found()
        lines = _lines_wanted(request)
        if lines is None:
            return web.json_response({"detail": "lines must be a non-negative integer"}, status=400)
        frames: Frames = asyncio.Queue()
        for line in itertools.islice(automation.log, max(0, len(automation.log) - lines), None):
            frames.put_nowait(_frame(line))
        tails = self._tails[automation.spec.name]
        if automation.running:
            tails.add(frames)
        else:
            frames.put_nowait(None)
        try:
            response = await open_event_stream(request)
            await pump_events(request, response, frames)
            return response
        finally:
            tails.discard(frames)
