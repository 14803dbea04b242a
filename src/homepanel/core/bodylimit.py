"""Refuse request bodies over `MAX_BODY_BYTES` with a 413, before they fill memory.

A declared `Content-Length` that is too large is refused before a byte is read. Otherwise the
body is read here, up to the limit (the API has no streaming uploads, and the route would read
it whole anyway), then handed to the app; later `receive` calls go straight through, so event
streams still hear the browser disconnect.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homepanel.core.errors import error_response

MAX_BODY_BYTES = 1 << 20  # the largest legitimate body (an AI prompt) is far below this


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _too_large(scope, receive, send)
            return
        first = await receive()
        body = first.get("body", b"")
        while first["type"] == "http.request" and first.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-body
                first = message
                break
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _too_large(scope, receive, send)
                return
            first = {**message, "body": body}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return (
                {**first, "body": body, "more_body": False}
                if first["type"] == "http.request"
                else first
            )

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    detail = f"The request body is larger than {MAX_BODY_BYTES} bytes"
    await error_response(413, detail, "PAYLOAD_TOO_LARGE")(scope, receive, send)
