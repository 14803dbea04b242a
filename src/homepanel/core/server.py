"""uvicorn, told to end the app's hub streams as soon as it begins to shut down.

uvicorn waits for open connections to finish before it runs the app's lifespan shutdown, and
an event stream never finishes by itself: without this the hubs' browsers would hold every
shutdown up until `timeout_graceful_shutdown` and then be cut off. (Relay streams end on
their own: sse-starlette watches for the shutdown.)

When it has stopped, the log lines still queued for the logging thread are written: uvicorn
then re-raises the SIGTERM or SIGINT it caught, which ends the process before exit hooks run.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

from homepanel.core.logging import end_log_thread


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for hub in self.app.state.hubs:
            await hub.close()
        await super().shutdown(sockets)

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super()._serve(sockets)
        finally:
            end_log_thread()


def config(app: FastAPI, **options: Any) -> uvicorn.Config:
    """Our uvicorn settings; `options` add the listening address and may override them."""
    ours: dict[str, Any] = {
        "log_config": None,  # ours, set up by setup_logging, with redaction
        "proxy_headers": False,  # X-Forwarded-For is read only from TRUSTED_PROXIES, by us
        "server_header": False,
        "timeout_graceful_shutdown": 5,
    }
    return uvicorn.Config(app, **(ours | options))
