"""Serving a simulator's aiohttp app on a real socket, for the simulator tests."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

from aiohttp import web


class Served(NamedTuple):
    url: str  # the base URL, e.g. "http://127.0.0.1:41234"
    runner: web.AppRunner  # for tests that stop the server early: `await runner.cleanup()`


@asynccontextmanager
async def served(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Served]:
    """Serve `app` on a free 127.0.0.1 port (HTTPS with `ssl_context`); clean up on exit."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        scheme = "http" if ssl_context is None else "https"
        yield Served(f"{scheme}://127.0.0.1:{runner.addresses[0][1]}", runner)
    finally:
        await runner.cleanup()
