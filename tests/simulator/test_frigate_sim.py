"""The simulated Frigate speaks 0.13/0.14/0.15's HTTP API over real HTTP, quirks included."""

from __future__ import annotations

import base64
import io
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx2
import jwt
import pytest
from PIL import Image

from homepanel.simulator import frigate
from homepanel.simulator.frigate import Camera, FrigateServer, Version, demo_cameras
from tests.simulator.serving import served

EVENT_ID = re.compile(r"^(\d+\.\d{6})-[a-z0-9]{6}$")
T0 = 1_733_184_000.0  # a multiple of 15 s, so stats snapshots start exactly here
VERSIONS = ["0.13", "0.14", "0.15"]


class Clock:
    """The simulator's wall clock, under the test's control."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock(T0 + 1)
    monkeypatch.setattr(
        frigate,
        "time",
        SimpleNamespace(time=fake.time, strftime=time.strftime, localtime=time.localtime),
    )
    yield fake


def make_server(version: Version = "0.13", **options: Any) -> FrigateServer:
    return FrigateServer(version=version, cameras=demo_cameras(), **options)


@asynccontextmanager
async def serving(server: FrigateServer, **client: Any) -> AsyncIterator[httpx2.AsyncClient]:
    """Serve the simulator on an ephemeral 127.0.0.1 port and hand out a client for it."""
    async with (
        served(server.app()) as (url, _),
        httpx2.AsyncClient(base_url=url, timeout=5, **client) as http,
    ):
        yield http


def decode_jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def has_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(item is None or has_null(item) for item in value.values())
    if isinstance(value, list):
        return any(has_null(item) for item in value)
    return False


# -- config, version -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.13", "0.13.2-6476f8a"), ("0.14", "0.14.1-f4f3cfa"), ("0.15", "0.15.0-")],
)
async def test_version_is_plain_text(version: Version, expected: str) -> None:
    async with serving(make_server(version)) as http:
        response = await http.get("/api/version")
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(expected)


async def test_config_013_emits_nulls_and_masks_credentials() -> None:
    async with serving(make_server("0.13")) as http:
        config = (await http.get("/api/config")).json()
    assert config["mqtt"]["tls_ca_certs"] is None
    assert "password" not in config["mqtt"]
    assert config["detectors"]["coral"]["type"] == "edgetpu"
    cameras = config["cameras"]
    assert list(cameras) == [camera.name for camera in demo_cameras()]
    doorbell = cameras["cam-doorbell"]
    assert doorbell["name"] == "cam-doorbell"
    assert doorbell["snapshots"]["height"] is None
    assert (
        doorbell["detect"].items()
        >= {"enabled": True, "fps": 5, "width": 1920, "height": 1080}.items()
    )
    assert cameras["cam-garden"]["record"]["enabled"] is False
    assert cameras["cam-backyard"]["snapshots"]["enabled"] is False
    assert all(camera["detect"]["height"] for camera in cameras.values())
    for camera in cameras.values():
        for source in camera["ffmpeg"]["inputs"]:
            assert source["path"].startswith("rtsp://*:*@")
        assert camera["zones"]
        assert "person" in camera["objects"]["track"]


@pytest.mark.parametrize("version", ["0.14", "0.15"])
async def test_config_014_drops_nulls_and_one_probed_size(version: Version) -> None:
    async with serving(make_server(version)) as http:
        config = (await http.get("/api/config")).json()
    assert not has_null(config)
    assert "tls_ca_certs" not in config["mqtt"]
    cameras = config["cameras"]
    assert "height" not in cameras["cam-doorbell"]["snapshots"]
    assert cameras["cam-doorbell"]["detect"]["width"] == 1920
    probed = cameras["cam-backyard"]["detect"]  # the last camera's size is auto-probed
    assert "width" not in probed
    assert "height" not in probed
    assert probed["fps"] == 10


# -- stats -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_stats_shape(version: Version) -> None:
    async with serving(make_server(version)) as http:
        stats = (await http.get("/api/stats")).json()
    doorbell = stats["cameras"]["cam-doorbell"]
    for key in ("camera_fps", "process_fps", "skipped_fps", "detection_fps"):
        assert isinstance(doorbell[key], float)
    assert doorbell["camera_fps"] > 4
    assert stats["cameras"]["cam-garage"]["camera_fps"] == 0.0  # offline
    enabled_type = int if version == "0.13" else bool
    assert type(doorbell["detection_enabled"]) is enabled_type
    total = sum(camera["detection_fps"] for camera in stats["cameras"].values())
    assert stats["detection_fps"] == pytest.approx(total, abs=0.011)
    coral = stats["detectors"]["coral"]
    assert isinstance(coral["inference_speed"], float)
    assert isinstance(coral["detection_start"], float)
    assert isinstance(coral["pid"], int)
    assert str(doorbell["pid"]) in stats["cpu_usages"]
    for pid, usage in stats["cpu_usages"].items():
        assert pid.isdigit()
        assert all(isinstance(value, str) for value in usage.values())
        float(usage["cpu"])
    assert all(usage["gpu"].endswith("%") for usage in stats["gpu_usages"].values())
    service = stats["service"]
    assert service["version"].startswith(version)
    assert isinstance(service["uptime"], int)
    assert isinstance(service["last_updated"], int)
    assert set(service["storage"]) >= {"/media/frigate/recordings", "/tmp/cache"}  # noqa: S108


async def test_stats_013_are_slow_every_time() -> None:
    async with serving(make_server("0.13", stats_delay=0.2)) as http:
        for _ in range(2):
            started = time.perf_counter()
            assert (await http.get("/api/stats")).status_code == 200
            assert time.perf_counter() - started >= 0.2


async def test_stats_014_are_a_15s_snapshot(clock: Clock) -> None:
    async with serving(make_server("0.14", stats_delay=5)) as http:
        first = (await http.get("/api/stats")).json()  # no delay: 0.14 serves its cache
        clock.now = T0 + 14
        assert (await http.get("/api/stats")).json() == first
        clock.now = T0 + 16
        later = (await http.get("/api/stats")).json()
    assert first["service"]["last_updated"] == T0
    assert later["service"]["last_updated"] == T0 + 15
    assert later["cameras"]["cam-doorbell"] != first["cameras"]["cam-doorbell"]


async def test_stats_follow_camera_state() -> None:
    server = make_server("0.13")
    server.cameras["cam-doorbell"].online = False
    async with serving(server) as http:
        stats = (await http.get("/api/stats")).json()
    assert stats["cameras"]["cam-doorbell"]["camera_fps"] == 0.0


# -- events ----------------------------------------------------------------------------


async def test_events_shape_newest_first_default_limit(clock: Clock) -> None:
    async with serving(make_server("0.13")) as http:
        events = (await http.get("/api/events")).json()
    assert len(events) == 100
    starts = [event["start_time"] for event in events]
    assert starts == sorted(starts, reverse=True)
    cameras = {camera.name for camera in demo_cameras()}
    for event in events:
        match = EVENT_ID.match(event["id"])
        assert match, event["id"]
        assert event["start_time"] < float(match.group(1))
        assert event["camera"] in cameras
        assert event["label"] in {"person", "car", "dog", "cat", "package"}
        assert isinstance(event["zones"], list)
        assert event["plus_id"] is None
        assert event["box"] is None
        data = event["data"]
        assert data["type"] == "object"
        assert len(data["box"]) == len(data["region"]) == 4
        assert all(0 <= value <= 1 for value in data["box"] + data["region"])
        decode_jpeg(base64.b64decode(event["thumbnail"]))
    assert {event["camera"] for event in events} <= cameras - {"cam-garage"}


async def test_events_thumbnails_can_be_left_out() -> None:
    async with serving(make_server("0.14")) as http:
        events = (await http.get("/api/events", params={"include_thumbnails": 0})).json()
    assert events
    assert all("thumbnail" not in event for event in events)


async def test_events_in_progress_have_no_end(clock: Clock) -> None:
    async with serving(make_server("0.13")) as http:
        newest = (await http.get("/api/events", params={"limit": 5})).json()
        running = (await http.get("/api/events", params={"in_progress": 1})).json()
        finished = (await http.get("/api/events", params={"in_progress": 0})).json()
    assert newest[0]["end_time"] is None
    assert running
    assert running[0]["id"] == newest[0]["id"]
    assert all(event["end_time"] is None for event in running)
    assert all(event["end_time"] > event["start_time"] for event in finished)


async def test_events_include_legacy_score_columns(clock: Clock) -> None:
    async with serving(make_server("0.13")) as http:
        events = (
            await http.get("/api/events", params={"limit": 10_000, "include_thumbnails": 0})
        ).json()
    assert len(events) > 2000  # about 60 an hour over 48 h
    modern = [event for event in events if event["top_score"] is None]
    legacy = [event for event in events if event["top_score"] is not None]
    assert all({"score", "top_score"} <= set(event["data"]) for event in modern)
    assert legacy
    assert all("top_score" not in event["data"] for event in legacy)
    assert any("score" not in event["data"] for event in legacy)
    assert any("score" in event["data"] for event in legacy)
    assert all(event["false_positive"] is False for event in legacy)


async def test_events_filters(clock: Clock) -> None:
    async with serving(make_server("0.13")) as http:

        async def events(**params: Any) -> list[dict[str, Any]]:
            params.setdefault("include_thumbnails", 0)
            return (await http.get("/api/events", params=params)).json()

        doorbell = await events(camera="cam-doorbell")
        two = await events(cameras="cam-doorbell,cam-garden", limit=300)
        people = await events(label="person")
        pets = await events(labels="dog,cat", limit=300)
        three = await events(limit=3)
        pivot = three[1]["start_time"]
        before = await events(before=pivot, limit=1)
        after = await events(after=three[2]["start_time"])
        assert await events(camera="cam-nowhere") == []
        assert await events(limit=0) == []
    assert doorbell
    assert {event["camera"] for event in doorbell} == {"cam-doorbell"}
    assert {event["camera"] for event in two} == {"cam-doorbell", "cam-garden"}
    assert {event["label"] for event in people} == {"person"}
    assert {event["label"] for event in pets} == {"dog", "cat"}
    assert len(three) == 3
    assert before[0]["id"] == three[2]["id"]  # start_time < before
    assert [event["id"] for event in after] == [three[0]["id"], three[1]["id"]]  # > after


@pytest.mark.parametrize("version", ["0.13", "0.14"])
async def test_events_flask_ignores_non_int_flags(version: Version, clock: Clock) -> None:
    async with serving(make_server(version)) as http:
        params = {"limit": 300, "include_thumbnails": 0}
        unfiltered = (await http.get("/api/events", params=params)).json()
        ignored = (await http.get("/api/events", params=params | {"has_snapshot": "true"})).json()
        with_snapshot = (await http.get("/api/events", params=params | {"has_snapshot": 1})).json()
        without_clip = (await http.get("/api/events", params=params | {"has_clip": 0})).json()
    assert ignored == unfiltered
    assert {event["has_snapshot"] for event in unfiltered} == {True, False}
    assert with_snapshot
    assert all(event["has_snapshot"] for event in with_snapshot)
    assert without_clip
    assert {event["camera"] for event in without_clip} == {"cam-garden"}


async def test_events_015_refuses_non_int_flags(clock: Clock) -> None:
    async with serving(make_server("0.15")) as http:
        response = await http.get("/api/events", params={"has_snapshot": "true"})
        fine = await http.get("/api/events", params={"has_snapshot": 0, "include_thumbnails": 0})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "int_parsing"
    assert error["loc"] == ["query", "has_snapshot"]
    assert error["input"] == "true"
    assert fine.status_code == 200
    assert all(not event["has_snapshot"] for event in fine.json())


async def test_events_appear_over_time(clock: Clock) -> None:
    params = {"include_thumbnails": 0, "after": T0 - 3600, "limit": 1000}
    async with serving(make_server("0.13", seed=7)) as http:
        earlier = (await http.get("/api/events", params=params)).json()
        clock.now += 2 * 3600
        later = (await http.get("/api/events", params=params)).json()
    newest_then = earlier[0]
    assert newest_then["end_time"] is None
    assert len(later) > len(earlier) + 100  # about 60 an hour
    ended = next(event for event in later if event["id"] == newest_then["id"])
    assert ended["end_time"] > ended["start_time"]
    assert later[0]["start_time"] > clock.now - 600


async def test_events_depend_on_the_seed(clock: Clock) -> None:
    params = {"include_thumbnails": 0, "limit": 20}
    async with serving(make_server("0.14", seed=1)) as first:
        one = (await first.get("/api/events", params=params)).json()
    async with serving(make_server("0.14", seed=1)) as second:
        again = (await second.get("/api/events", params=params)).json()
    async with serving(make_server("0.14", seed=2, events_per_hour=6)) as third:
        other = (await third.get("/api/events", params=params)).json()
    assert one == again
    assert {event["id"] for event in one}.isdisjoint(event["id"] for event in other)
    gaps = [a["start_time"] - b["start_time"] for a, b in itertools.pairwise(other)]
    assert sum(gaps) / len(gaps) > 300  # about 6 an hour


# -- latest.jpg ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "params", "height"),
    [
        ("0.13", {}, 1080),
        ("0.13", {"h": 360}, 360),
        ("0.14", {"h": 360}, 360),
        ("0.14", {"height": 360}, 1080),  # ignored before 0.15
        ("0.15", {"height": 360}, 360),
        ("0.15", {"h": 360}, 1080),  # ignored from 0.15 on
        ("0.15", {"h": "abc"}, 1080),
    ],
)
async def test_latest_jpg_size_parameter(
    version: Version, params: dict[str, Any], height: int
) -> None:
    async with serving(make_server(version)) as http:
        response = await http.get("/api/cam-doorbell/latest.jpg", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    assert decode_jpeg(response.content).size == (height * 16 // 9, height)


async def test_latest_jpg_keeps_aspect_ratio_and_quality() -> None:
    async with serving(make_server("0.13")) as http:
        wide = await http.get("/api/cam-driveway/latest.jpg", params={"h": 100})
        rough = await http.get("/api/cam-doorbell/latest.jpg", params={"h": 360, "quality": 5})
        fine = await http.get("/api/cam-doorbell/latest.jpg", params={"h": 360, "quality": 95})
    assert decode_jpeg(wide.content).size == (177, 100)
    assert len(rough.content) < len(fine.content)


async def test_latest_jpg_is_gzipped_by_nginx() -> None:
    async with serving(make_server("0.15")) as http:
        gzipped = await http.get("/api/cam-doorbell/latest.jpg", params={"height": 180})
        plain = await http.get(
            "/api/cam-doorbell/latest.jpg",
            params={"height": 180},
            headers={"Accept-Encoding": "identity"},
        )
    assert gzipped.headers["content-encoding"] == "gzip"
    assert "content-length" not in gzipped.headers
    assert gzipped.headers["transfer-encoding"] == "chunked"
    assert decode_jpeg(gzipped.content).size == (320, 180)
    assert "content-encoding" not in plain.headers
    assert int(plain.headers["content-length"]) == len(plain.content)
    decode_jpeg(plain.content)


async def test_offline_camera_serves_the_stock_error_image() -> None:
    server = make_server("0.13")
    async with serving(server) as http:
        live = await http.get("/api/cam-doorbell/latest.jpg", params={"h": 360})
        garage = await http.get("/api/cam-garage/latest.jpg", params={"h": 360})
        server.cameras["cam-doorbell"].online = False
        gone = await http.get("/api/cam-doorbell/latest.jpg", params={"h": 360})
        native = await http.get("/api/cam-garage/latest.jpg")
    assert garage.status_code == 200
    assert garage.headers["content-type"] == "image/jpeg"
    assert garage.content != live.content
    assert gone.content == garage.content  # one fixed image, whichever camera
    assert decode_jpeg(native.content).size == (1280, 720)


@pytest.mark.parametrize("version", VERSIONS)
async def test_unknown_camera_is_404_json(version: Version) -> None:
    async with serving(make_server(version)) as http:
        response = await http.get("/api/cam-nowhere/latest.jpg")
    assert response.status_code == 404
    assert response.json() == {"success": False, "message": "Camera not found"}


@pytest.mark.parametrize("version", ["0.13", "0.14"])
async def test_bad_h_on_flask(version: Version) -> None:
    async with serving(make_server(version)) as http:
        zero = await http.get("/api/cam-doorbell/latest.jpg", params={"h": 0})
        text = await http.get("/api/cam-doorbell/latest.jpg", params={"h": "abc"})
    assert zero.status_code == 400
    assert zero.headers["content-type"].startswith("text/plain")
    assert zero.text == "Invalid height / width requested :: 0 / 0"
    assert text.status_code == 500
    assert text.headers["content-type"].startswith("text/html")
    assert "Internal Server Error" in text.text


async def test_bad_height_on_fastapi() -> None:
    async with serving(make_server("0.15")) as http:
        zero = await http.get("/api/cam-doorbell/latest.jpg", params={"height": 0})
        text = await http.get("/api/cam-doorbell/latest.jpg", params={"height": "abc"})
    assert zero.status_code == 400
    assert zero.json() == "Invalid height / width requested :: 0 / 0"
    assert text.status_code == 422
    assert text.json()["detail"][0]["loc"] == ["query", "height"]


# -- CSRF, auth, faults ----------------------------------------------------------------


@pytest.mark.parametrize(("version", "trapped"), [("0.13", True), ("0.14", True), ("0.15", False)])
async def test_csrf_trap_catches_gets_with_origin(version: Version, trapped: bool) -> None:
    origin = {"Origin": "http://panel.local"}
    async with serving(make_server(version)) as http:
        bare = await http.get("/api/config", headers=origin)
        with_token = await http.get("/api/config", headers=origin | {"X-CSRF-TOKEN": "1"})
        image = await http.get("/api/cam-doorbell/latest.jpg", headers=origin)
    assert with_token.status_code == 200
    if trapped:
        assert bare.status_code == image.status_code == 401
        assert bare.json() == {"success": False, "message": "Missing CSRF header"}
    else:
        assert bare.status_code == image.status_code == 200


async def test_login_flow_and_token_expiry() -> None:
    server = make_server("0.14", username="admin", password="hunter2")
    async with serving(server) as http:
        refused = await http.get("/api/config")
        wrong = await http.post("/api/login", json={"user": "admin", "password": "nope"})
        assert server.logins == 0
        login = await http.post("/api/login", json={"user": "admin", "password": "hunter2"})
        token = login.cookies["frigate_token"]
        with_cookie = await http.get("/api/config")  # the client's cookie jar sends it back
        http.cookies.clear()
        without = await http.get("/api/events")
        bearer = await http.get("/api/stats", headers={"Authorization": f"Bearer {token}"})
        server.expire_tokens()
        expired = await http.get("/api/version", headers={"Authorization": f"Bearer {token}"})
        again = await http.post("/api/login", json={"user": "admin", "password": "hunter2"})
        renewed = await http.get("/api/version")
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("text/html")
    assert "401 Authorization Required" in refused.text
    assert "nginx" in refused.text
    assert wrong.status_code == 400
    assert wrong.json() == {"message": "Login failed"}
    assert login.status_code == 200
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "admin"
    assert claims["exp"] == pytest.approx(time.time() + 86_400, abs=60)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert with_cookie.status_code == 200
    assert bearer.status_code == 200
    assert without.status_code == 401
    assert expired.status_code == 401
    assert again.status_code == 200
    assert renewed.status_code == 200
    assert server.logins == 2


async def test_reset_restores_everything() -> None:
    server = make_server("0.14", username="admin", password="hunter2")
    async with serving(server) as http:
        await http.post("/api/login", json={"user": "admin", "password": "hunter2"})
        server.cameras["cam-doorbell"].online = False
        server.faults.latency = 0.01
        assert (await http.get("/api/config")).status_code == 200
        server.reset()
        after = await http.get("/api/config")
    assert after.status_code == 401
    assert server.logins == 0
    assert server.cameras["cam-doorbell"].online is True
    assert server.faults.latency == 0
    assert server.requests["GET /api/config"] == 1


async def test_open_port_needs_no_login() -> None:
    async with serving(make_server("0.14")) as http:
        config = await http.get("/api/config")
        login = await http.post("/api/login", json={"user": "admin", "password": "x"})
    assert config.status_code == 200
    assert login.status_code == 404


async def test_faults_act_before_auth_and_are_counted() -> None:
    server = make_server("0.14", username="admin", password="hunter2")
    async with serving(server) as http:
        server.faults.mode = "status"
        down = await http.get("/api/config")
        server.faults.mode = "hang"
        with pytest.raises(httpx2.ReadTimeout):
            await http.get("/api/stats", timeout=0.2)
    assert down.status_code == 502
    assert "nginx" in down.text
    assert server.requests["GET /api/config"] == 1
    assert server.requests["GET /api/stats"] == 1


@pytest.mark.parametrize(("version", "json_body"), [("0.14", False), ("0.15", True)])
async def test_unknown_route_uses_the_framework_page(version: Version, json_body: bool) -> None:
    async with serving(make_server(version)) as http:
        response = await http.get("/api/events/123/nothing")
    assert response.status_code == 404
    if json_body:
        assert response.json() == {"detail": "Not Found"}
    else:
        assert "<title>404 Not Found</title>" in response.text


def test_camera_names_are_validated() -> None:
    with pytest.raises(ValueError, match="camera name"):
        Camera("front door")


def test_demo_cameras() -> None:
    cameras = {camera.name: camera for camera in demo_cameras()}
    assert {"cam-doorbell", "cam-driveway", "cam-garden", "cam-garage"} <= set(cameras)
    assert (cameras["cam-doorbell"].width, cameras["cam-doorbell"].height) == (1920, 1080)
    assert cameras["cam-garage"].online is False
