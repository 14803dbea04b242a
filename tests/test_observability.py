"""Prometheus `/metrics` and `/api/health/upstreams`, fed by real traffic over real sockets."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from homepanel.simulator.lab import Lab
from tests.harness import AppServer, assert_error, authed

AppFactory = Callable[..., AppServer]


def scrape(client: httpx2.Client, **kwargs: object) -> dict[str, list]:
    response = client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: list, **labels: str) -> float:
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_requests_by_route_template(api: httpx2.Client, lab: Lab) -> None:
    before = scrape(api)
    for _ in range(3):
        assert api.get("/api/proxmox/nas/status").status_code == 200
    api.get("/api/proxmox/nope/status")
    after = scrape(api)
    route = "/api/proxmox/{server_id}/status"
    requests = "homepanel_http_requests"
    grew = value(after[requests], route=route, status="200") - value(
        before.get(requests, []), route=route, status="200"
    )
    assert grew == 3
    assert value(after[requests], route=route, status="404") >= 1
    assert not any("nope" in s.labels.get("route", "") for s in after[requests])  # no raw paths
    assert value(after["homepanel_http_request_duration_seconds"], route=route) > 0
    assert value(after["homepanel_upstream_requests"], service="proxmox:nas", outcome="ok") >= 1
    durations = after["homepanel_upstream_request_duration_seconds"]
    assert value(durations, service="proxmox:nas", outcome="ok") > 0
    assert value(after["homepanel_database_size_bytes"]) > 0


def test_streams_are_counted_not_timed(api: httpx2.Client, app_server: AppServer, lab: Lab) -> None:
    route = "/api/mqtt/stream"
    with api.stream("GET", route) as response:
        lines = response.iter_lines()  # kept: a dropped line iterator closes the stream
        next(lines)
        during = scrape(api)
        assert value(during["homepanel_sse_streams"], route=route) == 1
        assert value(during["homepanel_hub_subscribers"], hub="MQTT API") >= 1
    deadline = time.monotonic() + 5
    while value(scrape(api)["homepanel_sse_streams"], route=route) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    after = scrape(api)
    assert value(after["homepanel_http_request_duration_seconds"], route=route) == 0
    assert "homepanel_hub_reconnects" in after


def test_metrics_token(custom_app: AppFactory) -> None:
    server = custom_app(METRICS_TOKEN="scrape-me-please-0123456789")
    with server.client() as client:
        assert_error(client.get("/metrics"), 401)
        assert_error(client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
        scrape(client, headers={"Authorization": "Bearer scrape-me-please-0123456789"})
    with custom_app().client() as open_client:  # without a token, no login needed
        scrape(open_client)


def test_collector_runs_are_counted(custom_app: AppFactory, lab: Lab) -> None:
    server = custom_app(METRICS_ENABLED="true", METRICS_INTERVAL_SERVERS="1")
    lab.proxmox["nas"].faults.mode = "status"
    with server.client() as client:
        deadline = time.monotonic() + 20
        while True:
            runs = scrape(client).get("homepanel_collector_runs", [])
            if value(runs, job="servers", result="failed") >= 1:
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.3)


def test_upstream_health(custom_app: AppFactory, lab: Lab) -> None:
    server = custom_app(FRIGATE_URL="")
    with authed(server) as api:
        initial = api.get("/api/health/upstreams").json()["upstreams"]
        assert initial["frigate"]["state"] == "not_configured"
        assert initial["proxmox:nas"]["state"] == "unknown"
        assert set(initial) == {
            "proxmox:nas",
            "proxmox:smart-home",
            "frigate",
            "mqtt",
            "automations",
            "ai",
        }
        api.get("/api/proxmox/nas/status")
        nas = api.get("/api/health/upstreams").json()["upstreams"]["proxmox:nas"]
        assert nas["state"] == "up" and nas["consecutive_failures"] == 0
        assert nas["last_latency_ms"] > 0 and nas["since"]
        lab.proxmox["nas"].faults.mode = "drop"
        api.get("/api/proxmox/nas/status")
        api.get("/api/proxmox/nas/vms")
        nas = api.get("/api/health/upstreams").json()["upstreams"]["proxmox:nas"]
        assert nas["state"] == "down" and nas["consecutive_failures"] >= 2
        assert "unreachable" in nas["last_error"] or "closed the connection" in nas["last_error"]
        assert lab.proxmox["nas"].token not in str(nas)
        assert_error(server.client().get("/api/health/upstreams"), 401)
