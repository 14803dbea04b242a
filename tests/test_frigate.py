"""Frigate end to end: the app -> 0.14-style Frigate with login (HTTPS) or 0.13-style (HTTP)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import httpx2
import pytest
from PIL import Image

from homepanel.core.auth import COOKIE_NAME
from homepanel.frigate import client as frigate_client
from homepanel.simulator.lab import Lab
from tests.harness import AppServer, assert_error, authed

CAMERA_KEYS = {
    "name",
    "enabled",
    "fps",
    "width",
    "height",
    "detect_enabled",
    "record_enabled",
    "snapshots_enabled",
}
EVENT_KEYS = {
    "id",
    "camera",
    "label",
    "score",
    "start_time",
    "end_time",
    "has_snapshot",
    "has_clip",
    "zones",
}

AppFactory = Callable[..., AppServer]


def legacy(custom_app: AppFactory, lab: Lab, **variables: str) -> AppServer:
    """An app configured for the 0.13-style Frigate: plain HTTP, no login."""
    return custom_app(
        FRIGATE_URL=lab.frigate_legacy_url, FRIGATE_USERNAME="", FRIGATE_PASSWORD="", **variables
    )


def test_cameras(api: httpx2.Client, lab: Lab) -> None:
    cameras = api.get("/api/frigate/cameras").json()["cameras"]
    assert {c["name"] for c in cameras} == set(lab.frigate.cameras)
    assert all(set(c) == CAMERA_KEYS for c in cameras)
    doorbell = next(c for c in cameras if c["name"] == "cam-doorbell")
    assert (doorbell["width"], doorbell["height"], doorbell["enabled"]) == (1920, 1080, True)


def test_cameras_tolerate_missing_and_null_fields(
    api: httpx2.Client, custom_app: AppFactory, lab: Lab
) -> None:
    """0.14+ drops null keys (some cameras have no configured size); 0.13 sends nulls."""
    new = api.get("/api/frigate/cameras").json()["cameras"]
    assert any(c["width"] is None for c in new)  # auto-probed size, absent from config
    with authed(legacy(custom_app, lab)) as old_api:
        old = old_api.get("/api/frigate/cameras").json()["cameras"]
    assert {c["name"] for c in old} == {c["name"] for c in new}


def jpeg_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image.size


def test_snapshot_is_a_jpeg_of_the_asked_height(api: httpx2.Client) -> None:
    response = api.get("/api/frigate/camera/cam-doorbell/snapshot", params={"h": 240})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert "content-encoding" not in response.headers  # decoded, not a copied gzip header
    assert response.headers["cache-control"] == "no-store"
    assert jpeg_size(response.content)[1] == 240
    default = api.get("/api/frigate/camera/cam-doorbell/snapshot")
    assert jpeg_size(default.content)[1] == 360  # the spec's default


def test_snapshot_height_on_old_frigate_and_gzip(custom_app: AppFactory, lab: Lab) -> None:
    raw = httpx2.get(
        f"{lab.frigate_legacy_url}/api/cam-driveway/latest.jpg",
        params={"h": 180},
        headers={"Accept-Encoding": "gzip"},
    )
    assert raw.headers["content-encoding"] == "gzip"  # nginx's quirk is really there...
    with authed(legacy(custom_app, lab)) as api:
        response = api.get("/api/frigate/camera/cam-driveway/snapshot", params={"h": 180})
    assert response.status_code == 200 and jpeg_size(response.content)[1] == 180  # ...and undone
    assert "content-encoding" not in response.headers


def test_snapshot_works_as_img_src_with_the_cookie(app_server: AppServer, lab: Lab) -> None:
    with httpx2.Client(
        base_url=app_server.url, cookies={COOKIE_NAME: app_server.login()}
    ) as browser:
        response = browser.get("/api/frigate/camera/cam-doorbell/snapshot")
    assert response.status_code == 200 and response.content[:2] == b"\xff\xd8"


def test_offline_camera_gives_the_error_picture(api: httpx2.Client, lab: Lab) -> None:
    offline = next(name for name, camera in lab.frigate.cameras.items() if not camera.online)
    response = api.get(f"/api/frigate/camera/{offline}/snapshot")
    assert response.status_code == 200 and jpeg_size(response.content)


def test_snapshot_errors(api: httpx2.Client, lab: Lab) -> None:
    assert_error(api.get("/api/frigate/camera/no-such-cam/snapshot"), 404, "NOT_FOUND")
    for h in ("0", "-1", "abc", "99999"):
        assert_error(api.get("/api/frigate/camera/cam-doorbell/snapshot", params={"h": h}), 422)


def test_events(api: httpx2.Client) -> None:
    events = api.get("/api/frigate/events").json()["events"]
    assert len(events) == 10  # the spec's default limit
    assert all(set(e) == EVENT_KEYS for e in events)
    assert [e["start_time"] for e in events] == sorted(
        (e["start_time"] for e in events), reverse=True
    )
    assert all(e["score"] is None or 0 < e["score"] <= 1 for e in events)
    assert any(e["end_time"] is None for e in events)  # in progress, kept


def test_event_filters(api: httpx2.Client) -> None:
    events = api.get("/api/frigate/events", params={"camera": "cam-doorbell", "limit": 50}).json()[
        "events"
    ]
    assert events and all(e["camera"] == "cam-doorbell" for e in events)
    people = api.get("/api/frigate/events", params={"label": "person", "limit": 50}).json()[
        "events"
    ]
    assert people and all(e["label"] == "person" for e in people)
    # "true" would be silently ignored by Frigate 0.13/0.14: the backend sends 1.
    with_snapshot = api.get(
        "/api/frigate/events", params={"has_snapshot": "true", "limit": 100}
    ).json()["events"]
    assert with_snapshot and all(e["has_snapshot"] for e in with_snapshot)
    without = api.get("/api/frigate/events", params={"has_snapshot": "false", "limit": 100}).json()[
        "events"
    ]
    assert without and not any(e["has_snapshot"] for e in without)
    assert len(api.get("/api/frigate/events", params={"limit": 3}).json()["events"]) == 3


def test_event_scores_fall_back_to_legacy_fields(custom_app: AppFactory, lab: Lab) -> None:
    """Each event's score comes from data.top_score, else data.score, else the legacy top-level
    top_score: checked against what the (0.13-style) Frigate really sent."""
    raw = httpx2.get(
        f"{lab.frigate_legacy_url}/api/events", params={"limit": 1000, "include_thumbnails": 0}
    ).json()
    legacy_ids = [e["id"] for e in raw if "top_score" not in e["data"] and "score" not in e["data"]]
    assert legacy_ids, "the simulator sends no legacy events to check"
    expected = {
        e["id"]: e["data"].get("top_score", e["data"].get("score", e["top_score"])) for e in raw
    }
    with authed(legacy(custom_app, lab)) as api:
        events = api.get("/api/frigate/events", params={"limit": 1000}).json()["events"]
    scores = {e["id"]: e["score"] for e in events}
    assert all(scores[event_id] == expected[event_id] for event_id in scores)
    assert all(scores[event_id] is not None for event_id in legacy_ids if event_id in scores)
    assert any(event_id in scores for event_id in legacy_ids)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"camera": "../config"},
        {"camera": "a&b=c"},
        {"label": "x" * 65},
        {"has_snapshot": "maybe"},
    ],
)
def test_event_filter_validation(api: httpx2.Client, params: dict[str, str]) -> None:
    assert_error(api.get("/api/frigate/events", params=params), 422, "VALIDATION_ERROR")


def test_stats(api: httpx2.Client, lab: Lab) -> None:
    stats = api.get("/api/frigate/stats").json()
    assert set(stats) == {"service", "cameras", "detectors"}
    assert stats["service"]["uptime"] > 0 and stats["service"]["version"].startswith("0.14")
    assert set(stats["cameras"]) == set(lab.frigate.cameras)
    assert all(
        set(c) == {"fps", "detection_fps", "process_fps", "skipped_fps"}
        for c in stats["cameras"].values()
    )
    assert all(
        set(d) == {"inference_speed", "detection_start"} for d in stats["detectors"].values()
    )


def test_login_is_reused_and_renewed(custom_app: AppFactory, lab: Lab) -> None:
    with authed(custom_app()) as api:
        for _ in range(3):
            assert api.get("/api/frigate/cameras").status_code == 200
        assert lab.frigate.logins == 1
        lab.frigate.expire_tokens()
        assert api.get("/api/frigate/stats").status_code == 200  # a 401, a new login, a retry
        assert lab.frigate.logins == 2


def test_wrong_frigate_password(custom_app: AppFactory) -> None:
    with authed(custom_app(FRIGATE_PASSWORD="not-the-password")) as api:
        body = assert_error(api.get("/api/frigate/cameras"), 502, "UPSTREAM_AUTH_FAILED")
    assert "FRIGATE_USERNAME / FRIGATE_PASSWORD" in body["detail"]
    assert "not-the-password" not in body["detail"]


def test_login_required_when_no_user_is_configured(custom_app: AppFactory) -> None:
    with authed(custom_app(FRIGATE_USERNAME="", FRIGATE_PASSWORD="")) as api:
        assert_error(api.get("/api/frigate/cameras"), 502, "UPSTREAM_AUTH_FAILED")


def test_browser_origin_is_never_forwarded(custom_app: AppFactory, lab: Lab) -> None:
    """Frigate 0.13/0.14 answer 401 "Missing CSRF header" to any request with an Origin."""
    with authed(legacy(custom_app, lab)) as api:
        response = api.get("/api/frigate/cameras", headers={"Origin": "http://localhost:3000"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("drop", "UPSTREAM_UNREACHABLE"),
        ("html", "UPSTREAM_BAD_RESPONSE"),
        ("status", "UPSTREAM_ERROR"),
        ("garbage", "UPSTREAM_BAD_RESPONSE"),
    ],
)
def test_broken_frigate(api: httpx2.Client, lab: Lab, mode: str, code: str) -> None:
    lab.frigate.faults.mode = mode
    for path in ("/cameras", "/events", "/stats", "/camera/cam-doorbell/snapshot"):
        body = assert_error(api.get(f"/api/frigate{path}"), 502)
        assert "<html" not in body["detail"]
    assert_error(api.get("/api/frigate/cameras"), 502, code)


def test_slow_frigate_is_504(
    custom_app: AppFactory, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frigate_client, "TIMEOUT", 0.5)
    with authed(custom_app()) as api:
        api.get("/api/frigate/cameras")  # logged in before the slowdown
        lab.frigate.faults.latency = 2
        started = time.monotonic()
        assert_error(api.get("/api/frigate/stats"), 504, "UPSTREAM_TIMEOUT")
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "..%2Fconfig",
        "cam%2Fdoorbell",
        "cam%3Fx=1",
        "cam%23frag",
        "c" * 300,
        "kam%C3%A9ra",
        "cam%00",
    ],
)
def test_camera_name_injection(api: httpx2.Client, lab: Lab, name: str) -> None:
    before = lab.frigate.requests.total()
    response = api.get(f"/api/frigate/camera/{name}/snapshot")
    assert response.status_code in (404, 422), response.text
    assert_error(response, response.status_code)
    assert lab.frigate.requests.total() == before
