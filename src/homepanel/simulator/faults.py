"""What every simulated upstream shares: request counting, fault knobs and Basic auth.

A test makes an upstream slow, dead or broken by setting `service.faults`, and checks what
reached it with `service.requests`. The knobs act before anything else, as a dead host or the
reverse proxy in front of it would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hmac
from dataclasses import dataclass, fields
from http import HTTPStatus
from typing import Any

from aiohttp import web

HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Login required</title></head>"
    "<body><h1>Login required</h1><p>Please sign in to continue.</p></body></html>\n"
)
GARBAGE = b'{"data": [ not json'
_HANG_POLL = 0.05  # how often a hanging request or idle stream checks for its client
KEEPALIVE = 15.0  # seconds of silence before an event stream sends a comment line
Frames = asyncio.Queue[bytes | None]  # Server-Sent Events frames for one stream; None ends it
_STOPPING = web.AppKey("homepanel_sim_stopping", asyncio.Event)


@dataclass
class Faults:
    """Chaos switches, applied to every request before authentication."""

    latency: float = 0.0  # seconds added before every answer
    # None | "drop" | "hang" | "html" | "garbage" | "status" | "json"
    mode: str | None = None
    status: int = 502  # the status sent in "status" mode
    body: bytes = b"{}"  # the 200 application/json body sent in "json" mode
    auth_delay: float = 3.0  # Proxmox delays every 401 by 3 s; the others do not use it

    def reset(self) -> None:
        """Back to a healthy service."""
        for spec in fields(self):
            setattr(self, spec.name, spec.default)


class SimulatedService:
    """Base of every simulator: `faults`, `requests` and an app factory that applies them."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: collections.Counter[str] = collections.Counter()

    def new_app(self, *middlewares: Any) -> web.Application:
        """An aiohttp app that counts requests and applies the faults before `middlewares`."""
        app = web.Application(middlewares=[self._inject_faults, *middlewares])
        app[_STOPPING] = asyncio.Event()
        app.on_shutdown.append(_release_hung_requests)
        return app

    def reset(self) -> None:
        self.faults.reset()
        self.requests.clear()

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests[f"{request.method} {request.path}"] += 1
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        match self.faults.mode:
            case None:
                return await handler(request)
            case "drop":
                return drop(request)
            case "hang":
                await _hang(request)
                return drop(request)
            case "html":
                return web.Response(text=HTML_PAGE, content_type="text/html")
            case "garbage":
                return web.Response(body=GARBAGE, content_type="application/json")
            case "status":
                return nginx_error(self.faults.status)
            case "json":
                return web.Response(body=self.faults.body, content_type="application/json")
            case mode:
                raise ValueError(f"unknown fault mode {mode!r}")


def basic_auth(username: str, password: str) -> Any:
    """Middleware refusing requests without these Basic credentials (401, JSON body)."""
    expected = f"{username}:{password}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"detail": "Invalid credentials"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="api"'},
            )
        return await handler(request)

    return check


def drop(request: web.Request) -> web.Response:
    """Close the connection without an answer; aiohttp then silently discards the response."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


def nginx_error(status: int) -> web.Response:
    """What a reverse proxy in front of a dead service answers."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(
        status=status,
        reason=phrase,
        text=body,
        content_type="text/html",
        headers={"Server": "nginx"},
    )


async def open_event_stream(request: web.Request) -> web.StreamResponse:
    """Start a Server-Sent Events answer: headers go out now, frames follow."""
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    return response


async def pump_events(request: web.Request, response: web.StreamResponse, frames: Frames) -> None:
    """Send queued frames until a None arrives or the client has gone; comment while idle.

    aiohttp does not cancel a handler whose client left, so an idle stream looks for itself.
    """
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while _connected(request):
        try:
            frame = await asyncio.wait_for(frames.get(), _HANG_POLL)
        except TimeoutError:
            if loop.time() - quiet_since < KEEPALIVE:
                continue
            frame = b": keepalive\n\n"
        if frame is None:
            return
        with contextlib.suppress(ConnectionResetError):  # the client left mid-write
            await response.write(frame)
        quiet_since = loop.time()


def _connected(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def _hang(request: web.Request) -> None:
    """Never answer, but stop waiting once the client has gone or the server shuts down."""
    stopping = request.app[_STOPPING]
    while _connected(request) and not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), _HANG_POLL)


async def _release_hung_requests(app: web.Application) -> None:
    app[_STOPPING].set()
