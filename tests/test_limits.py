"""The API rate limit per client IP and the request body limit."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx2

from homepanel.core.bodylimit import MAX_BODY_BYTES
from homepanel.simulator.lab import Lab
from tests.harness import AppServer, assert_error, authed

AppFactory = Callable[..., AppServer]


def test_api_rate_limit_counts_a_stream_once(custom_app: AppFactory, lab: Lab) -> None:
    with authed(custom_app(RATE_LIMIT_API="4/minute")) as api:
        assert api.get("/api/proxmox/servers").status_code == 200
        with api.stream("GET", "/api/mqtt/stream") as stream:  # one request, however long
            lines = stream.iter_lines()
            for _ in range(4):
                next(lines)
        assert api.get("/api/automations").status_code == 200
        assert api.get("/api/frigate/cameras").status_code == 200
        limited = api.get("/api/proxmox/servers")
        assert_error(limited, 429, "RATE_LIMITED")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        with api.stream("GET", "/api/mqtt/stream") as refused:
            assert refused.status_code == 429
        assert api.get("/health").status_code == 200  # never limited
        assert api.get("/metrics").status_code == 200


def test_oversized_bodies_are_413(api: httpx2.Client, lab: Lab) -> None:
    big = {"topic": "home/x", "payload": "x" * (MAX_BODY_BYTES + 10)}
    before = lab.mqtt.requests.total()
    assert_error(api.post("/api/mqtt/publish", json=big), 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"topic": "home/x", "payload": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = api.post(
        "/api/mqtt/publish", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert_error(api.post("/api/auth/login", content=b"x" * (MAX_BODY_BYTES + 1)), 413)
    assert lab.mqtt.requests.total() == before
    assert (
        api.post("/api/mqtt/publish", json={"topic": "home/x", "payload": "x" * 1000}).status_code
        == 200
    )
