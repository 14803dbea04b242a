"""A simulated Frigate NVR: the HTTP API behind its nginx, quirks of 0.13, 0.14 and 0.15 included.

The panel has to survive what real Frigate instances send (see
shared/reference/upstream-behaviour.md, section 2): nulls in 0.13's config and missing keys
in 0.14's, slow stats on 0.13, int-only event filters that are silently ignored or answered
with 422 depending on the version, latest.jpg sized by ``h`` or by ``height``, JPEGs gzipped
by nginx, a CSRF check that rejects GETs carrying an ``Origin``, and JWT login on the
authenticated port. Events and figures are derived from the seed and the wall clock when
asked for, so the NVR looks alive without background tasks.

The shared fault knobs (`simulator.faults`) emulate an NVR that is down or broken.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import io
import json
import math
import random
import re
import secrets
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import Any, Literal, NamedTuple, overload

import jwt
from aiohttp import web
from PIL import Image, ImageDraw, ImageFont, ImageOps

from homepanel.simulator.faults import SimulatedService

Version = Literal["0.13", "0.14", "0.15"]

_CAMERA_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_COOKIE = "frigate_token"
_SESSION_LENGTH = 86_400  # auth.session_length default
_STATS_INTERVAL = 15  # 0.14+ serve the emitter's snapshot, taken every 15 s
_HISTORY = 48 * 3600  # how far back the simulated event list reaches
_PRE_CAPTURE = 5  # record.events.pre_capture: start_time is this much before detection
_POST_CAPTURE = 5
_ERROR_FRAME = (1280, 720)  # native size of the stock "camera error" image
_MAX_SIDE = 8192  # a simulator guard, not Frigate's: refuse absurd sizes instead of OOM
_THUMBNAIL = (160, 90)
_LABELS = ("person", "car", "dog", "cat", "package")
_LABEL_WEIGHTS = (45, 25, 10, 10, 10)
_SUB_LABELS = ("Alice", "Bob", "Postman")
_ZONE_POOL = ("entry", "porch", "driveway", "lawn", "street", "path")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

# Werkzeug's stock error pages, which Flask (0.13/0.14) sends for unmatched routes and crashes.
_WERKZEUG_PAGES = {
    404: (
        "Not Found",
        "The requested URL was not found on the server. If you entered the URL manually "
        "please check your spelling and try again.",
    ),
    405: ("Method Not Allowed", "The method is not allowed for the requested URL."),
    500: (
        "Internal Server Error",
        "The server encountered an internal error and was unable to complete your request. "
        "Either the server is overloaded or there is an error in the application.",
    ),
}
_NGINX_401 = (
    "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    "<center><h1>401 Authorization Required</h1></center>\r\n"
    "<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n"
)
# pydantic's messages for the two query parameter types FastAPI (0.15) validates here.
_PARSE_ERRORS: dict[type, tuple[str, str]] = {
    int: ("int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
    float: ("float_parsing", "Input should be a valid number, unable to parse string as a number"),
}


@dataclass(frozen=True)
class _Release:
    """What differs between the simulated Frigate versions."""

    version: str  # service.version and /api/version: "<version>-<commit>"
    latest_version: str  # what the update check reported
    flask: bool  # 0.13/0.14: CSRF trap on GETs, lax int params, `h`, Werkzeug HTML errors
    exclude_none: bool  # 0.14+: the config is dumped without null-valued keys
    stats_emitter: bool  # 0.14+: stats are a cached 15 s snapshot, detection_enabled a bool


_RELEASES: dict[str, _Release] = {
    "0.13": _Release(
        version="0.13.2-6476f8a",
        latest_version="0.14.1",
        flask=True,
        exclude_none=False,
        stats_emitter=False,
    ),
    "0.14": _Release(
        version="0.14.1-f4f3cfa",
        latest_version="0.14.1",
        flask=True,
        exclude_none=True,
        stats_emitter=True,
    ),
    "0.15": _Release(
        version="0.15.0-5b8e8b6",
        latest_version="disabled",
        flask=False,
        exclude_none=True,
        stats_emitter=True,
    ),
}


@dataclass
class Camera:
    """One camera as configured in Frigate, plus whether its stream currently delivers frames."""

    name: str
    width: int = 1920
    height: int = 1080
    fps: int = 5
    enabled: bool = True
    detect: bool = True
    record: bool = True
    snapshots: bool = True
    online: bool = True  # False: latest.jpg serves the stock "camera error" image

    def __post_init__(self) -> None:
        if not _CAMERA_NAME.fullmatch(self.name):
            raise ValueError(f"invalid Frigate camera name {self.name!r}")


class _Source(NamedTuple):
    """A camera as it was when the simulator started; events were recorded under this config."""

    name: str
    record: bool
    snapshots: bool


@dataclass(frozen=True)
class _Event:
    """One tracked object, as drawn from the seed. ``end_time`` is hidden while in progress."""

    id: str
    camera: str
    label: str
    sub_label: str | None
    zones: tuple[str, ...]
    detected_at: float  # the frame time in the id; the event is visible from then on
    start_time: float
    end_time: float
    has_clip: bool
    has_snapshot: bool
    box: tuple[float, float, float, float]
    region: tuple[float, float, float, float]
    score: float
    top_score: float
    # Rows written by Frigate < 0.12 keep the score in the old top-level column.
    legacy: Literal["no_top_score", "no_score"] | None

    def to_json(self, *, in_progress: bool, thumbnail: bool) -> dict[str, Any]:
        legacy = self.legacy is not None
        data: dict[str, Any] = {"box": list(self.box), "region": list(self.region)}
        if self.legacy != "no_score":
            data["score"] = self.score
        if not legacy:
            data["top_score"] = self.top_score
        data |= {"attributes": [], "type": "object"}
        if self.sub_label is not None:
            data["sub_label_score"] = 0.91
        event: dict[str, Any] = {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "sub_label": self.sub_label,
            "zones": list(self.zones),
            "start_time": self.start_time,
            "end_time": None if in_progress else self.end_time,
            "has_clip": self.has_clip,
            "has_snapshot": self.has_snapshot,
            "plus_id": None,
            "retain_indefinitely": False,
            "top_score": self.top_score if legacy else None,
            "false_positive": False if legacy else None,
            "box": None,
            "data": data,
        }
        if thumbnail:
            event["thumbnail"] = _thumbnail(self.camera, self.label)
        return event


@dataclass(frozen=True)
class _EventFilter:
    """The /api/events query, applied the way Frigate's SQL clauses apply it."""

    cameras: frozenset[str] | None
    labels: frozenset[str] | None
    before: float | None
    after: float | None
    has_clip: int | None
    has_snapshot: int | None
    in_progress: int | None

    def accepts(self, event: _Event, in_progress: bool) -> bool:
        return (
            (self.cameras is None or event.camera in self.cameras)
            and (self.labels is None or event.label in self.labels)
            and (self.before is None or event.start_time < self.before)
            and (self.after is None or event.start_time > self.after)
            and _flag_matches(self.has_clip, event.has_clip)
            and _flag_matches(self.has_snapshot, event.has_snapshot)
            and _flag_matches(self.in_progress, in_progress)
        )


class _Query:
    """Typed query parameters, read the way the release's web framework reads them.

    Flask's ``args.get(name, default, type=int)`` quietly falls back to the default on a bad
    value; FastAPI answers 422 listing every bad parameter. Clients must send real numbers.
    """

    def __init__(self, request: web.Request, *, strict: bool) -> None:
        self._query = request.query
        self._strict = strict
        self._errors: list[dict[str, Any]] = []

    @overload
    def integer(self, name: str) -> int | None: ...
    @overload
    def integer(self, name: str, default: int) -> int: ...
    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self._parse(name, int)
        return default if value is None else int(value)

    def number(self, name: str) -> float | None:
        return self._parse(name, float)

    def validate(self) -> None:
        """FastAPI validates before the handler runs: 422 if any parameter was bad."""
        if self._errors:
            raise web.HTTPUnprocessableEntity(
                text=json.dumps({"detail": self._errors}), content_type="application/json"
            )

    def _parse(self, name: str, kind: type[int] | type[float]) -> float | None:
        raw = self._query.get(name)
        if raw is None:
            return None
        try:
            return kind(raw)
        except ValueError:
            if self._strict:
                error_type, message = _PARSE_ERRORS[kind]
                self._errors.append(
                    {"type": error_type, "loc": ["query", name], "msg": message, "input": raw}
                )
            return None


def _flag_matches(wanted: int | None, actual: bool) -> bool:
    """``has_clip=1`` compares with SQLite's 0/1, so ``2`` matches nothing."""
    return wanted is None or wanted == int(actual)


def _choice(query: Mapping[str, str], singular: str, plural: str) -> frozenset[str] | None:
    """``cameras=a,b`` wins over the older ``camera=a``; "all" (the default) means no filter."""
    value = query.get(plural, "all")
    if value == "all":
        value = query.get(singular, "all")
    return None if value == "all" else frozenset(value.split(","))


def _failure(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "message": message}, status=status)


def _werkzeug_page(status: int) -> str:
    title, description = _WERKZEUG_PAGES[status]
    return (
        f"<!doctype html>\n<html lang=en>\n<title>{status} {title}</title>\n"
        f"<h1>{title}</h1>\n<p>{description}</p>\n"
    )


def _nginx_gzip(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """nginx's gzip_types list image/jpeg in 0.13-0.15: compressed, chunked, no length."""
    accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    if accepts_gzip and response.content_type == "image/jpeg":
        response.enable_compression(web.ContentCoding.gzip)
        response.enable_chunked_encoding()
    return response


def _without_nulls(value: Any) -> Any:
    """pydantic's ``exclude_none``: null-valued keys vanish at every depth."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _wave(now: float, key: str) -> float:
    """Smooth, deterministic noise in [-1, 1] per key, so figures drift rather than jump."""
    phase = zlib.crc32(key.encode()) / 2**32 * math.tau
    return (math.sin(now / 23 + phase) + 0.5 * math.sin(now / 7 + 2 * phase)) / 1.5


def _score(rng: random.Random, low: float, high: float) -> float:
    """Detector scores are multiples of 1/256 (a uint8 output tensor), e.g. 0.84765625."""
    return round(rng.uniform(low, high) * 256) / 256


@functools.cache
def _zone_names(camera: str) -> tuple[str, ...]:
    """Each camera gets one or two zones, always the same ones for the same name."""
    rng = random.Random(f"zones:{camera}")
    return tuple(rng.sample(_ZONE_POOL, rng.randint(1, 2)))


def _colour(camera: str) -> str:
    return f"hsl({zlib.crc32(camera.encode()) % 360}, 55%, 55%)"


@functools.lru_cache(maxsize=64)
def _render_jpeg(size: tuple[int, int], colour: str, lines: tuple[str, ...], quality: int) -> bytes:
    """A gradient in `colour` with `lines` of text: cheap, recognisable, a real JPEG."""
    width, height = size
    gradient = Image.linear_gradient("L").resize(size)
    image = ImageOps.colorize(gradient, black="#101418", white=colour)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(8, height // 14))
    y = height / 20
    for line in lines:
        draw.text(
            (width / 30, y), line, fill="white", font=font, stroke_width=1, stroke_fill="black"
        )
        y += font.size * 1.3
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@functools.cache
def _thumbnail(camera: str, label: str) -> str:
    """The base64 JPEG that ``include_thumbnails=1`` embeds in every event."""
    return base64.b64encode(_render_jpeg(_THUMBNAIL, _colour(camera), (label,), 60)).decode()


def _legacy_kind(draw: float) -> Literal["no_top_score", "no_score"] | None:
    """About 5 % of the rows predate 0.12: half lack data.top_score, half any data score."""
    if draw < 0.025:
        return "no_score"
    if draw < 0.05:
        return "no_top_score"
    return None


@functools.lru_cache(maxsize=16_384)
def _draw_event(seed: int, slot: int, slot_length: float, sources: tuple[_Source, ...]) -> _Event:
    """The event of one time slot: the same seed and slot always give the same event."""
    rng = random.Random(f"{seed}:event:{slot}")
    detected_at = round((slot + rng.random()) * slot_length, 6)
    source = rng.choice(sources)
    label = rng.choices(_LABELS, weights=_LABEL_WEIGHTS)[0]
    zones = _zone_names(source.name)
    x, y = rng.uniform(0, 0.8), rng.uniform(0, 0.7)
    w, h = rng.uniform(0.03, 0.2), rng.uniform(0.05, 0.3)
    pad = rng.uniform(0.05, 0.15)
    score = _score(rng, 0.55, 0.97)
    return _Event(
        id=f"{detected_at:.6f}-{''.join(rng.choices(_ID_ALPHABET, k=6))}",
        camera=source.name,
        label=label,
        sub_label=rng.choice(_SUB_LABELS) if label == "person" and rng.random() < 0.1 else None,
        zones=tuple(zone for zone in zones if rng.random() < 0.6),
        detected_at=detected_at,
        start_time=round(detected_at - _PRE_CAPTURE, 6),
        end_time=round(detected_at + rng.uniform(4, 120) + _POST_CAPTURE, 6),
        has_clip=source.record,
        has_snapshot=source.snapshots and rng.random() < 0.9,
        box=(round(x, 3), round(y, 3), round(w, 3), round(h, 3)),
        region=(
            round(max(0.0, x - pad), 3),
            round(max(0.0, y - pad), 3),
            round(min(1.0, w + 2 * pad), 3),
            round(min(1.0, h + 2 * pad), 3),
        ),
        score=score,
        top_score=min(1.0, _score(rng, score - 0.05, score + 0.05)),
        legacy=_legacy_kind(rng.random()),
    )


class FrigateServer(SimulatedService):
    """One simulated Frigate instance. Serve :meth:`app` over HTTP to use it.

    With ``username``/``password`` it is the authenticated port (8971 on 0.14+): every path
    but ``POST /api/login`` needs the JWT. Without, it is the open port 5000.
    """

    def __init__(
        self,
        *,
        version: Version,
        cameras: list[Camera],
        username: str | None = None,
        password: str | None = None,
        stats_delay: float = 0.0,
        seed: int = 0,
        events_per_hour: float = 60.0,
    ) -> None:
        super().__init__()
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.version = version
        self.username = username
        self.password = password
        self.stats_delay = stats_delay
        self.seed = seed
        self.events_per_hour = events_per_hour
        self.logins = 0

        self._release = _RELEASES[version]
        self._initial = [replace(camera) for camera in cameras]
        self.cameras: dict[str, Camera] = {}
        self._restore_cameras()
        # Events were recorded by the cameras that detected when the simulation began.
        self._sources = tuple(
            _Source(camera.name, camera.record, camera.snapshots)
            for camera in cameras
            if camera.enabled and camera.detect and camera.online
        )
        rng = random.Random(f"{seed}:frigate")
        self._started_at = time.time() - rng.randint(3_600, 30 * 86_400)
        self._key = secrets.token_bytes(32)
        self._stats_snapshot: tuple[float, dict[str, Any]] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this NVR's API."""
        app = self.new_app(self._frontend)
        app.router.add_get("/api/version", self._get_version)
        app.router.add_get("/api/config", self._get_config)
        app.router.add_get("/api/stats", self._get_stats)
        app.router.add_get("/api/events", self._get_events)
        app.router.add_get("/api/{camera}/latest.jpg", self._get_latest_frame)
        if self.username is not None:
            app.router.add_post("/api/login", self._post_login)
        return app

    def reset(self) -> None:
        """Healthy again: no faults or history, cameras as given, no valid tokens, 0 logins."""
        super().reset()
        self._restore_cameras()
        self._stats_snapshot = None
        self.expire_tokens()
        self.logins = 0

    def expire_tokens(self) -> None:
        """Every token issued so far is refused from now on, as after a secret rotation."""
        self._key = secrets.token_bytes(32)

    def _restore_cameras(self) -> None:
        self.cameras.clear()
        self.cameras.update({camera.name: replace(camera) for camera in self._initial})

    # -- request pipeline ----------------------------------------------------------------

    @web.middleware
    async def _frontend(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """After the shared fault knobs: nginx's auth_request, the backend's CSRF check, the
        framework's error pages for unmatched routes, and nginx's gzip on the way out."""
        needs_login = self.username is not None and request.path != "/api/login"
        if needs_login and not self._authenticated(request):
            return web.Response(
                status=401, text=_NGINX_401, content_type="text/html", headers={"Server": "nginx"}
            )
        headers = request.headers
        if self._release.flask and "Origin" in headers and "X-CSRF-TOKEN" not in headers:
            return _failure(401, "Missing CSRF header")
        unmatched = request.match_info.http_exception
        if unmatched is not None:
            return self._framework_error(unmatched.status)
        return _nginx_gzip(request, await handler(request))

    def _authenticated(self, request: web.Request) -> bool:
        """A bearer header if there is one, else the cookie; signed by the current key."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        token = credentials if scheme.lower() == "bearer" else request.cookies.get(_COOKIE)
        if not token:
            return False
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            return False
        return claims.get("sub") == self.username

    def _framework_error(self, status: int) -> web.Response:
        if self._release.flask:
            return web.Response(
                status=status, text=_werkzeug_page(status), content_type="text/html"
            )
        return web.json_response({"detail": _WERKZEUG_PAGES[status][0]}, status=status)

    # -- handlers ------------------------------------------------------------------------

    async def _post_login(self, request: web.Request) -> web.Response:
        """0.14's ``/api/login``: the JWT comes back only as the ``frigate_token`` cookie."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not self._credentials_match(body):
            return web.json_response({"message": "Login failed"}, status=400)
        expires = int(time.time()) + _SESSION_LENGTH
        token = jwt.encode({"sub": self.username, "exp": expires}, self._key, algorithm="HS256")
        response = web.json_response({})
        response.set_cookie(
            _COOKIE, token, httponly=True, path="/", expires=formatdate(expires, usegmt=True)
        )
        self.logins += 1
        return response

    def _credentials_match(self, body: dict[str, Any]) -> bool:
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            return False
        given = f"{user}\0{password}".encode()
        return hmac.compare_digest(given, f"{self.username}\0{self.password}".encode())

    async def _get_version(self, request: web.Request) -> web.Response:
        return web.Response(text=self._release.version)

    async def _get_config(self, request: web.Request) -> web.Response:
        config = self._config()
        if self._release.exclude_none:
            config = _without_nulls(config)
        return web.json_response(config)

    async def _get_stats(self, request: web.Request) -> web.Response:
        """0.13 gathers stats on every request (slow); 0.14+ serve the last 15 s snapshot."""
        now = time.time()
        if not self._release.stats_emitter:
            await asyncio.sleep(self.stats_delay)
            return web.json_response(self._stats(now))
        taken_at = math.floor(now / _STATS_INTERVAL) * _STATS_INTERVAL
        if self._stats_snapshot is None or self._stats_snapshot[0] != taken_at:
            self._stats_snapshot = (taken_at, self._stats(taken_at))
        return web.json_response(self._stats_snapshot[1])

    async def _get_events(self, request: web.Request) -> web.Response:
        query = _Query(request, strict=not self._release.flask)
        limit = query.integer("limit", 100)
        wanted = _EventFilter(
            cameras=_choice(request.query, "camera", "cameras"),
            labels=_choice(request.query, "label", "labels"),
            before=query.number("before"),
            after=query.number("after"),
            has_clip=query.integer("has_clip"),
            has_snapshot=query.integer("has_snapshot"),
            in_progress=query.integer("in_progress"),
        )
        thumbnails = bool(query.integer("include_thumbnails", 1))
        query.validate()
        now = time.time()
        # The newest event is still being tracked, and so is any whose end is yet to come.
        events = [
            (event, index == 0 or event.end_time > now)
            for index, event in enumerate(self._events(now))
        ]
        selected = [pair for pair in events if wanted.accepts(*pair)]
        if limit >= 0:  # SQLite: a negative LIMIT means no limit
            selected = selected[:limit]
        return web.json_response(
            [
                event.to_json(in_progress=in_progress, thumbnail=thumbnails)
                for event, in_progress in selected
            ]
        )

    async def _get_latest_frame(self, request: web.Request) -> web.Response:
        """The current frame (or the stock error image) scaled to the requested height.

        FastAPI (0.15) validates ``height`` before anything else; Flask (0.13/0.14) looks the
        camera up first and only then trips over a bad ``h``.
        """
        flask = self._release.flask
        query = _Query(request, strict=not flask)
        requested = None if flask else query.integer("height")
        quality = min(max(query.integer("quality", 70), 1), 100)
        query.validate()
        camera = self.cameras.get(request.match_info["camera"])
        if camera is None:
            return _failure(404, "Camera not found")
        if flask:
            requested = _flask_height(request)
        live = camera.enabled and camera.online
        native = (camera.width, camera.height) if live else _ERROR_FRAME
        height = native[1] if requested is None else requested
        width = int(height * native[0] / native[1])
        if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
            return self._invalid_size(height, width)
        if live:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time()))
            jpeg = _render_jpeg(
                (width, height), _colour(camera.name), (camera.name, stamp), quality
            )
        else:
            jpeg = _render_jpeg((width, height), "#8b1a1a", ("camera error",), quality)
        return web.Response(
            body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"}
        )

    def _invalid_size(self, height: int, width: int) -> web.Response:
        """Flask answers plain text; FastAPI wraps the same text in a JSON string."""
        message = f"Invalid height / width requested :: {height} / {width}"
        if self._release.flask:
            return web.Response(status=400, text=message)
        return web.json_response(message, status=400)

    # -- payloads ------------------------------------------------------------------------

    def _events(self, now: float) -> list[_Event]:
        """Every event of the last 48 h, newest first: one per slot of 1/events_per_hour."""
        if self.events_per_hour <= 0 or not self._sources:
            return []
        length = 3600 / self.events_per_hour
        newest, oldest = math.floor(now / length), math.floor((now - _HISTORY) / length)
        drawn = (
            _draw_event(self.seed, slot, length, self._sources)
            for slot in range(newest, oldest - 1, -1)
        )
        return [event for event in drawn if now - _HISTORY < event.detected_at <= now]

    def _config(self) -> dict[str, Any]:
        """GET /api/config (section 2.3), with 0.13's nulls; the caller drops them for 0.14+."""
        cameras = list(self.cameras.values())
        return {
            "mqtt": {
                "enabled": True,
                "host": "192.0.2.102",  # a documentation address: display data only
                "port": 1883,
                "topic_prefix": "frigate",
                "client_id": "frigate",
                "stats_interval": 60,
                "user": "frigate",
                "tls_ca_certs": None,
                "tls_client_cert": None,
                "tls_client_key": None,
                "tls_insecure": None,
            },
            "detectors": {
                "coral": {
                    "type": "edgetpu",
                    "device": "usb",
                    "model_path": None,
                    "model": {
                        "path": "/edgetpu_model.tflite",
                        "labelmap_path": None,
                        "width": 320,
                        "height": 320,
                        "labelmap": {"0": "person", "2": "car", "15": "cat", "16": "dog"},
                    },
                }
            },
            "cameras": {
                camera.name: self._camera_config(
                    camera,
                    index,
                    # 0.14+ keep a probed size out of the config: one camera lacks it there.
                    probed=self._release.exclude_none and index == len(cameras) - 1,
                )
                for index, camera in enumerate(cameras)
            },
            "ui": {"timezone": None, "time_format": "browser", "strftime_fmt": None},
            "plus": {"enabled": False},
        }

    def _camera_config(self, camera: Camera, index: int, *, probed: bool) -> dict[str, Any]:
        source = f"rtsp://*:*@192.168.10.{21 + index}:554/cam/realmonitor?channel=1&subtype=0"
        retain = {"default": 10, "mode": "motion", "objects": {}}
        return {
            "name": camera.name,
            "enabled": camera.enabled,
            "ffmpeg": {
                "inputs": [
                    {
                        "path": source,
                        "roles": ["detect", "record"],
                        "global_args": [],
                        "hwaccel_args": [],
                        "input_args": "preset-rtsp-restream",
                    }
                ],
                "global_args": ["-hide_banner", "-loglevel", "warning", "-threads", "2"],
                "hwaccel_args": "preset-vaapi",
                "input_args": "preset-rtsp-generic",
                "output_args": {
                    "detect": ["-threads", "2", "-f", "rawvideo", "-pix_fmt", "yuv420p"],
                    "record": "preset-record-generic",
                },
                "retry_interval": 10,
            },
            "detect": {
                "enabled": camera.detect,
                "fps": camera.fps,
                "width": None if probed else camera.width,
                "height": None if probed else camera.height,
                "min_initialized": 2,
                "max_disappeared": 25,
                "annotation_offset": 0,
                "stationary": {
                    "interval": 50,
                    "threshold": 50,
                    "max_frames": {"default": None, "objects": {}},
                },
            },
            "record": {
                "enabled": camera.record,
                "enabled_in_config": camera.record,
                "sync_recordings": False,
                "expire_interval": 60,
                "retain": {"days": 3, "mode": "all"},
                "events": {
                    "pre_capture": _PRE_CAPTURE,
                    "post_capture": _POST_CAPTURE,
                    "objects": None,
                    "required_zones": [],
                    "retain": retain,
                },
            },
            "snapshots": {
                "enabled": camera.snapshots,
                "clean_copy": True,
                "timestamp": False,
                "bounding_box": True,
                "crop": False,
                "required_zones": [],
                "height": None,
                "quality": 70,
                "retain": retain,
            },
            "zones": {
                zone: {
                    "coordinates": _zone_polygon(camera, position),
                    "objects": [],
                    "filters": {},
                    "inertia": 3,
                }
                for position, zone in enumerate(_zone_names(camera.name))
            },
            "objects": {
                "track": list(_LABELS),
                "filters": {
                    "person": {
                        "min_area": 0,
                        "max_area": 24_000_000,
                        "threshold": 0.7,
                        "min_score": 0.5,
                    }
                },
            },
            "ui": {"order": index, "dashboard": True},
            "ffmpeg_cmds": [
                {
                    "roles": ["detect", "record"],
                    "cmd": (
                        "ffmpeg -hide_banner -loglevel warning -threads 2 -rtsp_transport tcp "
                        f"-timeout 5000000 -i {source} -threads 2 -f rawvideo "
                        "-pix_fmt yuv420p pipe:"
                    ),
                }
            ],
        }

    def _pid(self, key: str) -> int:
        return 100 + zlib.crc32(f"{self.seed}:{key}".encode()) % 30_000

    def _stats(self, now: float) -> dict[str, Any]:
        """GET /api/stats (section 2.4) as measured at `now`."""
        cameras = {name: self._camera_stats(camera, now) for name, camera in self.cameras.items()}
        detector_pid = self._pid("detector:coral")
        inferring = _wave(now, "inference") > 0.3
        return {
            "cameras": cameras,
            "detectors": {
                "coral": {
                    "inference_speed": round(11 + 3 * _wave(now, "coral"), 2),
                    "detection_start": round(now - 0.004, 6) if inferring else 0.0,
                    "pid": detector_pid,
                }
            },
            "detection_fps": round(sum(stats["detection_fps"] for stats in cameras.values()), 2),
            "cpu_usages": self._cpu_usages(now, detector_pid),
            "gpu_usages": {
                "intel-vaapi": {"gpu": f"{6 + 4 * _wave(now, 'gpu'):.1f}%", "mem": "-%"}
            },
            "processes": {
                name: {"pid": self._pid(f"process:{name}")}
                for name in ("go2rtc", "recording", "logger")
            },
            "service": {
                "uptime": int(now - self._started_at),
                "version": self._release.version,
                "latest_version": self._release.latest_version,
                "last_updated": int(now),
                "temperatures": {"apex_0": round(44 + 2 * _wave(now, "apex_0"), 1)},
                "storage": _storage(now),
            },
        }

    def _camera_stats(self, camera: Camera, now: float) -> dict[str, Any]:
        """An offline or disabled camera reads 0 fps; detection follows simulated activity."""
        live = camera.enabled and camera.online
        camera_fps = round(camera.fps + 0.15 * _wave(now, camera.name), 2) if live else 0.0
        activity = max(0.0, _wave(now, f"{camera.name}:motion"))
        detecting = live and camera.detect
        return {
            "camera_fps": camera_fps,
            "process_fps": round(camera_fps * 0.98, 2),
            "skipped_fps": 0.0,
            "detection_fps": round(activity * camera.fps * 0.8, 2) if detecting else 0.0,
            "detection_enabled": (
                camera.detect if self._release.stats_emitter else int(camera.detect)
            ),
            "pid": self._pid(f"process:{camera.name}"),
            "capture_pid": self._pid(f"capture:{camera.name}"),
            "ffmpeg_pid": self._pid(f"ffmpeg:{camera.name}") if live else None,
            "audio_rms": 0.0,
            "audio_dBFS": 0.0,
        }

    def _cpu_usages(self, now: float, detector_pid: int) -> dict[str, dict[str, str]]:
        """psutil figures keyed by pid as a string, and every value a string too."""
        processes = {"1": ("/init", 0.0), str(detector_pid): ("frigate.detector.coral", 9.0)}
        for name in self.cameras:
            processes[str(self._pid(f"process:{name}"))] = (f"frigate.process:{name}", 6.0)
            processes[str(self._pid(f"capture:{name}"))] = (f"frigate.capture:{name}", 2.0)
        return {
            pid: {
                "cpu": f"{load * (1 + 0.3 * _wave(now, pid)):.1f}",
                "cpu_average": f"{load:.1f}",
                "mem": f"{0.1 + load / 5:.1f}",
                "cmdline": cmdline,
            }
            for pid, (cmdline, load) in processes.items()
        }


def _storage(now: float) -> dict[str, dict[str, Any]]:
    """Sizes in MiB as floats, recordings filling up and being pruned around a level."""
    usage = {
        "/media/frigate/recordings": (1907599.4, 812344.1 + 900 * _wave(now, "rec"), "ext4"),
        "/media/frigate/clips": (1907599.4, 812344.1 + 900 * _wave(now, "rec"), "ext4"),
        "/tmp/cache": (1000.0, 12.2 + 8 * _wave(now, "cache"), "tmpfs"),  # noqa: S108
        "/dev/shm": (512.0, 45.3, "tmpfs"),  # noqa: S108
    }
    return {
        path: {
            "total": total,
            "used": round(used, 1),
            "free": round(total - used, 1),
            "mount_type": mount,
        }
        for path, (total, used, mount) in usage.items()
    }


def _zone_polygon(camera: Camera, position: int) -> str:
    """A band across the lower part of the frame, in pixels, one band per zone."""
    w, h = camera.width, camera.height
    top, bottom = h * (2 + position) // 4, h * (3 + position) // 4
    return f"0,{bottom},{w},{bottom},{w},{top},0,{top}"


def _flask_height(request: web.Request) -> int | None:
    """0.13/0.14 read ``h`` with a bare ``int()``: a non-number crashes into Flask's 500."""
    raw = request.query.get("h")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPInternalServerError(
            text=_werkzeug_page(500), content_type="text/html"
        ) from None


def demo_cameras() -> list[Camera]:
    """The example lab's cameras: mixed resolutions, one offline, some without clips/snapshots."""
    return [
        Camera("cam-doorbell", 1920, 1080),
        Camera("cam-driveway", 2560, 1440),
        Camera("cam-garden", 1280, 720, record=False),
        Camera("cam-garage", 1920, 1080, online=False),
        Camera("cam-backyard", 1280, 720, fps=10, snapshots=False),
    ]
