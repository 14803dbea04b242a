"""Logs without secrets, the `.env.example` contract, and the code standard."""

from __future__ import annotations

import logging
import logging.handlers
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from homepanel.core.auth import COOKIE_NAME
from homepanel.core.config import Settings
from homepanel.core.logging import end_log_thread, redact
from tests.harness import ACCESS_TOKEN, AppServer, RunningLab, lab_settings

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD_SECRET = "payload-value-4471-never-logged"


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("GET /api/mqtt/stream?token=abc.def.ghi&x=1", "abc.def.ghi"),
        ("headers={'authorization': 'PVEAPIToken=root@pam!t=1234-5678'}", "1234-5678"),
        ("connect https://admin:s3cret@192.0.2.1:8081/api", "s3cret"),
        ("password=hunter2 user=admin", "hunter2"),
        ('{"password": "hunter2", "user": "admin"}', "hunter2"),
        ("Cookie: homepanel_session=eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2ln", "c2ln"),
    ],
)
def test_redaction_patterns(text: str, leaked: str) -> None:
    assert leaked not in redact(text)


def test_no_secret_reaches_the_log_after_a_full_run(
    running_lab: RunningLab, tmp_path: Path
) -> None:
    lab = running_lab.lab
    lab.proxmox["smart-home"].faults.auth_delay = 0.1
    wrong_pve_token = "root@pam!homepanel=deadbeef-dead-beef-dead-beefdeadbeef"
    settings = lab_settings(lab, tmp_path, PROXMOX_SMART_TOKEN=wrong_pve_token)
    from homepanel.core.logging import setup_logging

    setup_logging("DEBUG", settings.log_dir, settings.secrets())
    jwts = []
    with AppServer(settings) as server, server.client() as client:
        client.post("/api/auth/login", json={"token": "a-wrong-guess-of-the-token"})
        login = client.post("/api/auth/login", json={"token": ACCESS_TOKEN})
        jwts.append(login.json()["jwt"])
        headers = {"Authorization": f"Bearer {jwts[0]}"}
        for path in (
            "/api/proxmox/servers",
            "/api/proxmox/nas/vms",
            "/api/proxmox/smart-home/status",
            "/api/proxmox/nas/vm/99",
            "/docs",
        ):
            client.get(path, headers=headers)
        client.get(f"/api/proxmox/servers?token={jwts[0]}")
        for path in (
            "/api/frigate/cameras",
            "/api/frigate/events",
            "/api/mqtt/topics",
            "/api/automations",
            "/api/ai/processes",
        ):
            client.get(path, headers=headers)
        client.post(
            "/api/mqtt/publish",
            headers=headers,
            json={"topic": "home/door/code", "payload": {"pin": PAYLOAD_SECRET}},
        )
        client.post("/api/automations/main/kitchen/motion_light/restart", headers=headers)
        client.post("/api/proxmox/nas/vm/999/restart", headers=headers)
        cookie_jwt = server.login()
        jwts.append(cookie_jwt)
        with httpx2.Client(base_url=server.url, cookies={COOKIE_NAME: cookie_jwt}) as browser:
            browser.get("/api/proxmox/nas/status")
            browser.post("/api/auth/logout", headers={"X-Requested-With": "fetch"})
        metrics_text = client.get("/metrics").text
        audit_text = client.get("/api/audit", headers=headers).text
        client.post("/api/auth/logout", headers=headers)
    running_lab.reset()

    end_log_thread()  # the logging thread writes what is still queued
    log = (settings.log_dir / "backend.log").read_text()
    assert "GET /api/proxmox/servers" in log and "rejected the API token" in log  # it did log
    secret_file = (settings.data_dir / "jwt_secret").read_text().strip()
    secrets = [ACCESS_TOKEN, secret_file, wrong_pve_token, wrong_pve_token.rsplit("=", 1)[1], *jwts]
    secrets += [host.token for host in lab.proxmox.values()]
    secrets += [password for _, password in lab.users.values()]
    secrets.append(PAYLOAD_SECRET)
    assert "Published to home/door/code" in log
    secrets += [host.token.rsplit("=", 1)[1] for host in lab.proxmox.values()]
    for secret in secrets:
        assert secret not in log
        assert secret not in metrics_text and secret not in audit_text
    assert not re.search(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", log)


def test_env_example_lists_every_variable() -> None:
    text = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields} - {"PROXMOX_SERVERS"}
    assert fields <= names, fields - names
    for field in ("URL", "ID", "NAME", "NODE", "TOKEN", "VERIFY_SSL"):
        assert f"PROXMOX_NAS_{field}" in names


def test_env_example_is_valid(tmp_path: Path) -> None:
    lines = (
        (ROOT / ".env.example")
        .read_text()
        .replace("ACCESS_TOKEN=\n", f"ACCESS_TOKEN={ACCESS_TOKEN}\n")
    )
    env = tmp_path / ".env"
    env.write_text(lines)
    result = subprocess.run(
        [sys.executable, "-m", "homepanel", "check-config", "--env-file", str(env)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_code_is_ruff_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "src", "tests", "bench"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_openapi_describes_every_endpoint_with_typed_models(app_server: AppServer) -> None:
    with app_server.client() as client:
        schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    operations = {
        (method.upper(), path): operation
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    expected = {
        ("GET", "/health"),
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/logout"),
        ("GET", "/api/proxmox/servers"),
        ("GET", "/api/proxmox/{server_id}/status"),
        ("GET", "/api/proxmox/{server_id}/vms"),
        ("GET", "/api/proxmox/{server_id}/vm/{vmid}"),
        ("POST", "/api/proxmox/{server_id}/vm/{vmid}/{action}"),
        ("GET", "/api/proxmox/{server_id}/tasks/{upid}"),
        ("GET", "/api/frigate/cameras"),
        ("GET", "/api/frigate/camera/{name}/snapshot"),
        ("GET", "/api/frigate/events"),
        ("GET", "/api/frigate/stats"),
        ("GET", "/api/mqtt/topics"),
        ("POST", "/api/mqtt/publish"),
        ("GET", "/api/automations"),
        ("GET", "/api/automations/{name}"),
        ("POST", "/api/automations/{name}/{action}"),
        ("GET", "/api/ai/processes"),
        ("DELETE", "/api/ai/chat/{process_id}"),
    }
    assert expected <= set(operations)
    prometheus = operations.pop(("GET", "/metrics"))
    assert "text/plain" in next(iter(prometheus["responses"]["200"]["content"]))
    assert ("GET", "/api/health/upstreams") in operations
    snapshot = operations.pop(("GET", "/api/frigate/camera/{name}/snapshot"))
    assert set(snapshot["responses"]["200"]["content"]) == {"image/jpeg"}
    for stream in (
        ("GET", "/api/mqtt/stream"),
        ("GET", "/api/automations/{name}/logs"),
        ("POST", "/api/ai/chat"),
    ):
        assert set(operations.pop(stream)["responses"]["200"]["content"]) == {"text/event-stream"}
    for key, operation in operations.items():
        success = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in success, key  # a named model, not "any JSON"
    error = operations[("GET", "/api/proxmox/servers")]["responses"]["502"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


@pytest.mark.parametrize("env", ["production", "development"])
def test_unexpected_errors_are_500_in_the_envelope(
    running_lab: RunningLab, tmp_path: Path, env: str
) -> None:
    """Production shows no internals; development names the exception, with secrets masked."""
    settings = lab_settings(running_lab.lab, tmp_path, ENV=env)
    from homepanel.app import create_app

    app = create_app(settings)

    async def broken() -> None:
        raise RuntimeError(f"bug while using {ACCESS_TOKEN}")

    app.add_api_route("/api/broken", broken)  # the only way to reach the handler: a real bug
    with AppServer(settings, app) as server, server.client() as client:
        response = client.get("/api/broken")
    assert response.status_code == 500
    body = response.json()
    assert (
        set(body) == {"detail", "error_code", "timestamp"}
        and body["error_code"] == "INTERNAL_ERROR"
    )
    assert ACCESS_TOKEN not in body["detail"] and "Traceback" not in body["detail"]
    if env == "production":
        assert body["detail"] == "Internal server error"
    else:
        assert "RuntimeError: bug while using ***" in body["detail"]


def test_a_slow_log_disk_never_holds_up_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines are written by the logging thread: a disk that takes 0.3 s per line costs the
    caller (the event loop) nothing, and every line still arrives, in order and redacted."""
    from homepanel.core.logging import setup_logging

    write = logging.handlers.RotatingFileHandler.emit

    def slow_write(handler: logging.Handler, record: logging.LogRecord) -> None:
        time.sleep(0.3)
        write(handler, record)  # type: ignore[arg-type]

    monkeypatch.setattr(logging.handlers.RotatingFileHandler, "emit", slow_write)
    setup_logging("INFO", tmp_path, ["a-secret-value"])
    started = time.perf_counter()
    for number in range(3):
        logging.getLogger("homepanel.test").info("line %d with a-secret-value", number)
    assert time.perf_counter() - started < 0.2  # written in line, it would take 0.9 s
    end_log_thread()
    lines = (tmp_path / "backend.log").read_text().splitlines()
    assert [line.split(" - ", 3)[3] for line in lines] == [
        f"line {number} with ***" for number in range(3)
    ]


def test_lines_logged_close_together_are_written_in_one_wake_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line after a quiet spell is written at once; those following it within LINGER wait
    for the thread's next wake-up, and are then written together, in order."""
    from homepanel.core import logging as homepanel_logging

    monkeypatch.setattr(homepanel_logging, "LINGER", 0.3)
    homepanel_logging.setup_logging("INFO", tmp_path, [])
    log = tmp_path / "backend.log"
    logger = logging.getLogger("homepanel.test")
    time.sleep(0.4)  # the thread's first linger, at its start, is over
    logger.info("first")
    deadline = time.monotonic() + 5
    while "first" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert time.monotonic() < deadline, "a line after a quiet spell waited"
    time.sleep(0.05)  # the thread is past the line, into its linger
    for number in range(3):
        logger.info("then %d", number)
    time.sleep(0.05)
    assert "then" not in log.read_text()  # the thread lingers: no wake-up per line
    end_log_thread()
    lines = [line.split(" - ", 3)[3] for line in log.read_text().splitlines()]
    assert lines == ["first", "then 0", "then 1", "then 2"]


def test_a_line_shows_its_arguments_as_logged_and_tracebacks_redacted(tmp_path: Path) -> None:
    """The logging thread writes a line later than it was logged: it still shows its arguments
    as they were then, and a traceback's secrets are masked as the message's are."""
    from homepanel.core.logging import setup_logging

    setup_logging("INFO", tmp_path, ["a-secret-value"])
    logger = logging.getLogger("homepanel.test")
    figures = [1]
    logger.info("figures %s", figures)
    figures.append(2)
    try:
        raise RuntimeError("failed with a-secret-value")
    except RuntimeError:
        logger.exception("while using a-secret-value")
    end_log_thread()
    text = (tmp_path / "backend.log").read_text()
    assert " - homepanel.test - INFO - figures [1]\n" in text
    assert " - homepanel.test - ERROR - while using ***\nTraceback" in text
    assert "RuntimeError: failed with ***" in text and "a-secret-value" not in text


def test_log_lines_follow_the_spec_format(running_lab: RunningLab, tmp_path: Path) -> None:
    from homepanel.core.logging import setup_logging

    settings = lab_settings(running_lab.lab, tmp_path)
    setup_logging("INFO", settings.log_dir, settings.secrets())
    with AppServer(settings) as server, server.client() as client:
        client.get("/api/proxmox/servers")
    end_log_thread()  # the logging thread writes what is still queued
    lines = (settings.log_dir / "backend.log").read_text().splitlines()
    line = re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - [\w.]+ - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ."
    )
    assert lines and all(
        line.match(text) for text in lines if not text.startswith((" ", "Traceback"))
    )
    access = [text for text in lines if " - uvicorn.access - INFO - 127.0.0.1:" in text]
    assert any(text.endswith('"GET /api/proxmox/servers HTTP/1.1" 401') for text in access)
