"""A simulated MQTT API: the owner's HTTP wrapper around the broker that zigbee2mqtt talks to.

The panel reads topic states, publishes commands and keeps one Server-Sent Events stream open
to it, so this fake offers exactly those three things over Basic auth. It is alive: a background
task makes a device report every `event_interval` seconds, mostly the same state again with only
`linkquality` and `last_seen` changed (as real Zigbee devices re-report), sometimes a real change
(a door opens, the temperature drifts). Publishing to `<device>/set` changes that device the way
zigbee2mqtt would. `cut_streams()` drops every open stream so tests can exercise reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from homepanel.simulator.faults import (
    Frames,
    SimulatedService,
    basic_auth,
    open_event_stream,
    pump_events,
)

PREFIX = "zigbee2mqtt"
BRIDGE_STATE = f"{PREFIX}/bridge/state"
_REAL_CHANGE = 0.3  # share of reports that change state rather than just re-report it
_REPORTER = web.AppKey("mqtt_reporter", asyncio.Task)

State = dict[str, Any]
Coerce = Callable[[Any, Any], Any]  # (requested value, current value) -> new value or None


def _on_off(value: Any, current: Any) -> str | None:
    """zigbee2mqtt takes ON, OFF or TOGGLE in any case and ignores anything else."""
    if not isinstance(value, str):
        return None
    value = value.upper()
    if value == "TOGGLE":
        return "OFF" if current == "ON" else "ON"
    return value if value in ("ON", "OFF") else None


def _within(low: int, high: int) -> Coerce:
    """A numeric attribute: clamped to the device's range, non-numbers ignored."""

    def coerce(value: Any, current: Any) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return max(low, min(high, round(value)))

    return coerce


def _flip(state: State, key: str) -> None:
    state[key] = "OFF" if state[key] == "ON" else "ON"


def _drift(value: float, rng: random.Random, step: float, low: float, high: float) -> float:
    return round(max(low, min(high, value + rng.uniform(-step, step))), 1)


@dataclass(frozen=True)
class _Kind:
    """A type of Zigbee device: its initial state, what a real change does, what `/set` takes."""

    initial: Callable[[random.Random], State]
    change: Callable[[State, random.Random], None]
    settable: dict[str, Coerce] = field(default_factory=dict)


def _battery(rng: random.Random) -> State:
    return {"battery": rng.randint(35, 100), "voltage": rng.randint(2800, 3100)}


def _contact_initial(rng: random.Random) -> State:
    return {"contact": rng.random() < 0.8, **_battery(rng)}  # contact true = closed


def _contact_change(state: State, rng: random.Random) -> None:
    state["contact"] = not state["contact"]


def _switch_initial(rng: random.Random) -> State:
    return {"state_left": rng.choice(["ON", "OFF"]), "state_right": rng.choice(["ON", "OFF"])}


def _switch_change(state: State, rng: random.Random) -> None:
    _flip(state, rng.choice(["state_left", "state_right"]))


def _climate_initial(rng: random.Random) -> State:
    return {
        "temperature": round(rng.uniform(19.0, 24.5), 1),
        "humidity": round(rng.uniform(35, 60), 1),
        **_battery(rng),
    }


def _climate_change(state: State, rng: random.Random) -> None:
    state["temperature"] = _drift(state["temperature"], rng, 0.3, -30, 45)
    state["humidity"] = _drift(state["humidity"], rng, 1.0, 0, 100)


def _motion_initial(rng: random.Random) -> State:
    return {"occupancy": rng.random() < 0.2, "illuminance": rng.randint(0, 400), **_battery(rng)}


def _motion_change(state: State, rng: random.Random) -> None:
    state["occupancy"] = not state["occupancy"]
    state["illuminance"] = max(0, state["illuminance"] + rng.randint(-40, 40))


def _light_initial(rng: random.Random) -> State:
    return {
        "state": rng.choice(["ON", "OFF"]),
        "brightness": rng.randint(30, 254),
        "color_temp": rng.randint(153, 454),
    }


def _light_change(state: State, rng: random.Random) -> None:
    _flip(state, "state")  # someone used the wall switch


def _plug_initial(rng: random.Random) -> State:
    on = rng.random() < 0.6
    return {
        "state": "ON" if on else "OFF",
        "power": round(rng.uniform(3, 150), 1) if on else 0.0,
        "energy": round(rng.uniform(1, 400), 2),
    }


def _plug_change(state: State, rng: random.Random) -> None:
    """The load moves and the meter counts while on; a plug switched off soon reports 0 W."""
    if state["state"] == "OFF":
        state["power"] = 0.0
        return
    state["power"] = _drift(max(state["power"], 5.0), rng, 20.0, 0.5, 2300)
    state["energy"] = round(state["energy"] + state["power"] / 1000 * rng.uniform(0.01, 0.1), 2)


_KINDS = {
    "door": _Kind(_contact_initial, _contact_change),
    "switch": _Kind(
        _switch_initial, _switch_change, {"state_left": _on_off, "state_right": _on_off}
    ),
    "climate": _Kind(_climate_initial, _climate_change),
    "motion": _Kind(_motion_initial, _motion_change),
    "light": _Kind(
        _light_initial,
        _light_change,
        {"state": _on_off, "brightness": _within(0, 254), "color_temp": _within(153, 500)},
    ),
    "plug": _Kind(_plug_initial, _plug_change, {"state": _on_off}),
}

# zigbee2mqtt friendly names of the owner's flat: <room>-<thing>, as the spec's examples are.
DEVICES: dict[str, str] = {
    "main-eduard-big-wardrobe-left-door": "door",
    "main-eduard-big-wardrobe-right-door": "door",
    "main-eduard-small-wardrobe-door": "door",
    "main-entrance-door": "door",
    "kitchen-window": "door",
    "living-room-window-left": "door",
    "living-room-window-right": "door",
    "bathroom-window": "door",
    "main-eduard-big-wardrobe-switch": "switch",
    "main-eduard-switch": "switch",
    "kitchen-switch": "switch",
    "hallway-switch": "switch",
    "living-room-switch": "switch",
    "bathroom-switch": "switch",
    "kitchen-temperature": "climate",
    "main-eduard-temperature": "climate",
    "living-room-temperature": "climate",
    "bathroom-temperature": "climate",
    "bedroom-temperature": "climate",
    "office-temperature": "climate",
    "balcony-temperature": "climate",
    "kitchen-motion": "motion",
    "hallway-motion": "motion",
    "main-eduard-motion": "motion",
    "bathroom-motion": "motion",
    "living-room-motion": "motion",
    "entrance-motion": "motion",
    "kitchen-light": "light",
    "hallway-light": "light",
    "main-eduard-big-wardrobe-light": "light",
    "living-room-light": "light",
    "bedroom-light": "light",
    "office-light": "light",
    "balcony-light": "light",
    "kitchen-kettle-plug": "plug",
    "office-desk-plug": "plug",
    "living-room-tv-plug": "plug",
    "washing-machine-plug": "plug",
    "bedroom-heater-plug": "plug",
    "garden-pump-plug": "plug",
}
_DEVICE_KINDS = {f"{PREFIX}/{name}": _KINDS[kind] for name, kind in DEVICES.items()}


def _naive_iso(moment: datetime) -> str:
    """The API's timestamps: local time, no offset, always with microseconds."""
    return moment.astimezone().replace(tzinfo=None).isoformat(timespec="microseconds")


def _last_seen(moment: datetime) -> str:
    """zigbee2mqtt's `last_seen: ISO_8601`, which is JavaScript's toISOString()."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_linkquality(rng: random.Random, previous: int | None) -> int:
    """Signal quality differs on every message, as it does between real reports."""
    value = rng.randint(30, 254)
    return value + 1 if value == previous else value


def _parse_json(body: bytes) -> Any:
    """The body as JSON; NaN and Infinity are refused so that every answer stays valid JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(body, parse_constant=refuse)


def _bad_request(detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=400)


def _device_of_set_topic(path: str) -> str | None:
    """`zigbee2mqtt/<device>/set` -> the device's topic, for devices that exist."""
    device = path.removesuffix("/set")
    return device if device != path and device in _DEVICE_KINDS else None


class MqttApi(SimulatedService):
    """The MQTT API with ~40 zigbee2mqtt devices. Serve :meth:`app` over HTTP to use it."""

    def __init__(
        self, *, username: str, password: str, seed: int = 0, event_interval: float = 1.0
    ) -> None:
        super().__init__()
        self.username = username
        self.password = password
        self.seed = seed
        self.event_interval = event_interval
        self.topics: dict[str, Any] = {}
        self.stream_connects = 0
        self._streams: dict[Frames, web.Request] = {}
        self._initial = self._initial_messages(datetime.now(UTC))
        self.reset()

    @property
    def stream_connections(self) -> int:
        return len(self._streams)

    # -- lifecycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this API; devices report while it runs."""
        app = self.new_app(basic_auth(self.username, self.password))
        app.router.add_get("/api/v1/topics", self._get_topics)
        app.router.add_post("/api/v1/topic", self._post_topic)
        app.router.add_get("/api/v1/stream", self._get_stream)
        app.router.add_post("/_sim/cut-streams", self._post_cut_streams)
        app.on_startup.append(self._start_reporting)
        app.on_shutdown.append(self._end_streams)
        app.on_cleanup.append(self._stop_reporting)
        return app

    def reset(self) -> None:
        """Healthy again, every device in its initial state, the report sequence restarted."""
        super().reset()
        self.stream_connects = 0
        self._rng = random.Random(f"{self.seed}:reports")
        self._states: dict[str, State] = {}
        self._stamps: dict[str, datetime] = {}
        self.topics.clear()
        for topic, (payload, moment) in self._initial.items():
            self._store(topic, dict(payload), moment)
            if topic != BRIDGE_STATE:
                self._states[topic] = dict(payload)

    def cut_streams(self) -> None:
        """Drop every open stream mid-body, as a restarting service or a dead link would."""
        for frames, request in list(self._streams.items()):
            if request.transport is not None:
                request.transport.close()
            frames.put_nowait(None)

    async def _post_cut_streams(self, request: web.Request) -> web.Response:
        """The demo's handle on `cut_streams()`: `curl -u user:pass -X POST <url>`."""
        cut = self.stream_connections
        self.cut_streams()
        return web.json_response({"cut": cut})

    def _initial_messages(self, now: datetime) -> dict[str, tuple[Any, datetime]]:
        """Each device's last report, some seconds to minutes ago; the bridge is online."""
        rng = random.Random(f"{self.seed}:devices")
        messages: dict[str, tuple[Any, datetime]] = {
            BRIDGE_STATE: ({"state": "online"}, now - timedelta(hours=rng.uniform(2, 72)))
        }
        for topic, kind in _DEVICE_KINDS.items():
            moment = now - timedelta(seconds=rng.uniform(1, 900))
            state = kind.initial(rng)
            state["linkquality"] = _new_linkquality(rng, None)
            state["last_seen"] = _last_seen(moment)
            messages[topic] = (state, moment)
        return messages

    async def _start_reporting(self, app: web.Application) -> None:
        app[_REPORTER] = asyncio.create_task(self._report_forever())

    async def _stop_reporting(self, app: web.Application) -> None:
        app[_REPORTER].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[_REPORTER]

    async def _end_streams(self, app: web.Application) -> None:
        """Let open streams finish cleanly so that the server can stop without waiting."""
        for frames in self._streams:
            frames.put_nowait(None)

    # -- living devices ------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.event_interval * self._rng.uniform(0.5, 1.5))
            self._report(self._rng.choice(list(self._states)))

    def _report(self, topic: str) -> None:
        """One device reports: usually its unchanged state, sometimes after a real change."""
        state = self._states[topic]
        if self._rng.random() < _REAL_CHANGE:
            _DEVICE_KINDS[topic].change(state, self._rng)
        self._publish_device(topic)

    def _apply_set(self, topic: str, command: Any) -> None:
        """What zigbee2mqtt does with `<device>/set`: known, valid attributes change, then the
        device publishes its full state. Anything else it ignores, and so does this."""
        if not isinstance(command, dict):
            return
        state = self._states[topic]
        settable = _DEVICE_KINDS[topic].settable
        for key, value in command.items():
            if key in settable and (new := settable[key](value, state[key])) is not None:
                state[key] = new
        self._publish_device(topic)

    def _publish_device(self, topic: str) -> None:
        state = self._states[topic]
        now = datetime.now(UTC)
        state["linkquality"] = _new_linkquality(self._rng, state["linkquality"])
        state["last_seen"] = _last_seen(now)
        self._publish(topic, dict(state), now)

    # -- messages ------------------------------------------------------------------------

    def _store(self, topic: str, payload: Any, moment: datetime) -> None:
        self.topics[topic] = payload
        self._stamps[topic] = moment

    def _publish(self, topic: str, payload: Any, moment: datetime) -> None:
        """A message on the broker: it becomes the topic's state and goes to every stream."""
        self._store(topic, payload, moment)
        event = {"topic": topic, "payload": payload, "timestamp": _naive_iso(moment)}
        frame = f"event: message\ndata: {json.dumps(event)}\n\n".encode()
        for frames in self._streams:
            frames.put_nowait(frame)

    # -- handlers ------------------------------------------------------------------------

    async def _get_topics(self, request: web.Request) -> web.Response:
        topics = [
            {"path": topic, "payload": payload, "timestamp": _naive_iso(self._stamps[topic])}
            for topic, payload in self.topics.items()
        ]
        return web.json_response({"topics": topics})

    async def _post_topic(self, request: web.Request) -> web.Response:
        path = request.query.get("path", "")
        if not path:
            return _bad_request("Query parameter 'path' is required")
        if "+" in path or "#" in path:
            return _bad_request("Wildcards '+' and '#' are not allowed in a topic to publish to")
        try:
            payload = _parse_json(await request.read())
        except ValueError:
            return _bad_request("Body must be a JSON value")
        device = _device_of_set_topic(path)
        if device is None:
            self._publish(path, payload, datetime.now(UTC))
        else:
            self._apply_set(device, payload)
        return web.json_response({"success": True, "topic": path})

    async def _get_stream(self, request: web.Request) -> web.StreamResponse:
        """Every message from now on, until the client leaves, the stream is cut or we stop."""
        frames: Frames = asyncio.Queue()
        self._streams[frames] = request  # counted before the client sees the headers
        self.stream_connects += 1
        try:
            response = await open_event_stream(request)
            await pump_events(request, response, frames)
            return response
        finally:
            del self._streams[frames]
