"""The deployment files, checked without Docker, systemd or nginx: read, and where possible run.

The Dockerfile's and compose's health checks are real commands; they are run here against a live
app. The rest (non-root user, exec-form CMD, no mounted .env, what the build context leaves out,
which nginx location serves each stream) is read from the files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import yaml  # PyYAML comes with uvicorn[standard]

from tests.harness import AppServer, RunningLab, lab_settings

ROOT = Path(__file__).resolve().parent.parent
HEALTH_URL = "http://127.0.0.1:8000/health"
# Each stream's URI, and the least read timeout it needs: well above the MQTT stream's 15 s
# ping, and room for the AI hub's long silences.
SSE_URIS = {
    "/api/mqtt/stream": 60,
    "/api/automations/main/kitchen/motion_light/logs": 60,
    "/api/automations/heating/logs": 60,
    "/api/ai/chat": 300,
}


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        name, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        instructions.append((name.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def arguments_of(name: str, instructions: list[tuple[str, str]] | None = None) -> list[str]:
    return [args for instruction, args in instructions or dockerfile() if instruction == name]


def dockerfile_healthcheck() -> list[str]:
    (healthcheck,) = arguments_of("HEALTHCHECK", final_stage())
    _options, _, command = healthcheck.partition("CMD ")
    assert command.startswith("["), "HEALTHCHECK CMD should be in exec form"
    return json.loads(command)


def test_dockerfile_base_and_layer_order() -> None:
    instructions = dockerfile()
    assert {args.split()[0] for args in arguments_of("FROM")} == {"python:3.11-slim"}
    steps = [f"{name} {args}" for name, args in instructions]

    def first(pattern: str) -> int:
        return next(i for i, step in enumerate(steps) if re.search(pattern, step))

    # Dependencies are installed from pyproject.toml before the source is copied: a source edit
    # does not invalidate the dependency layer.
    assert (
        first(r"^COPY pyproject\.toml") < first(r"^RUN .*pip install .*-r ") < first(r"^COPY src")
    )
    assert first(r"^COPY src") < first(r"^RUN pip install --no-cache-dir \.$")
    assert all("--no-cache-dir" in step for step in steps if re.search(r"pip install", step))


def test_dockerfile_runtime_settings() -> None:
    stage = final_stage()
    environment = " ".join(arguments_of("ENV", stage))
    assert "ENV=production" in environment.split()
    assert "PYTHONUNBUFFERED=1" in environment.split()
    assert arguments_of("EXPOSE", stage) == ["8000"]
    (volumes,) = arguments_of("VOLUME", stage)
    assert set(json.loads(volumes)) == {"/app/data", "/app/logs"}
    assert arguments_of("STOPSIGNAL", stage) in ([], ["SIGTERM"])
    assert arguments_of("WORKDIR", stage)[-1] == "/app"
    # The folders are chowned before VOLUME: later changes to a volume path are discarded.
    names = [name for name, _ in stage]
    chown = next(i for i, (n, a) in enumerate(stage) if n == "RUN" and "chown" in a)
    assert "/app/data" in stage[chown][1] and "/app/logs" in stage[chown][1]
    assert chown < names.index("VOLUME")


def test_dockerfile_runs_as_non_root() -> None:
    stage = final_stage()
    users = arguments_of("USER", stage)
    assert users, "the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    names = [name for name, _ in stage]
    assert len(names) - 1 - names[::-1].index("USER") < names.index("CMD")
    # The user exists: it is created in this stage.
    assert any(name == "RUN" and "useradd" in args and user in args for name, args in stage)


def test_dockerfile_cmd_is_exec_form() -> None:
    stage = final_stage()
    (command,) = arguments_of("CMD", stage)
    assert json.loads(command) == ["homepanel", "serve"]  # exec form: uvicorn gets SIGTERM
    assert arguments_of("ENTRYPOINT", stage) == []


def test_dockerfile_healthcheck_targets_health() -> None:
    command = dockerfile_healthcheck()
    assert command[:3] == ["python", "-c", command[2]]  # python:3.11-slim has no curl
    assert HEALTH_URL in command[2] and "/api/health" not in command[2]


# --- docker-compose.yml ---------------------------------------------------------------------


def compose_service() -> dict:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    return service


def test_compose_healthcheck_uses_health() -> None:
    test = compose_service()["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:3] == ["python", "-c"]
    assert HEALTH_URL in test[3] and "/api/health" not in test[3]
    assert test[1:] == dockerfile_healthcheck()  # one check, written in two places


def test_compose_passes_env_without_mounting_it() -> None:
    service = compose_service()
    env_files = service["env_file"]
    env_files = [env_files] if isinstance(env_files, str) else env_files
    paths = [item if isinstance(item, str) else item["path"] for item in env_files]
    assert ".env" in paths
    mounts = []
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts.append((source, target))
        # A single bind-mounted file breaks editors that save by rename (the container keeps
        # the old inode) and puts the secrets in the container's filesystem.
        assert not Path(source).name.startswith(".env"), volume
        assert not Path(target).name.startswith(".env"), volume
    assert ("./data", "/app/data") in mounts and ("./logs", "/app/logs") in mounts


def test_compose_runtime_settings_and_no_secrets() -> None:
    service = compose_service()
    assert service["restart"] == "unless-stopped"
    assert service["init"] is True
    assert service["stop_grace_period"] == "10s"  # above the app's 5 s graceful shutdown
    assert service["ports"] == ["8000:8000"]
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    secret = re.compile(r"TOKEN|SECRET|PASSWORD", re.IGNORECASE)
    assert not [name for name in environment if secret.search(name)]
    assert str(environment.get("PORT", "8000")) == "8000"  # the port published and checked


# --- .dockerignore --------------------------------------------------------------------------


def dockerignored(path: str) -> bool:
    """Docker's rule, simplified: a pattern matches the path or one of its parent folders, the
    last matching pattern wins, `!` re-includes. (fnmatch's `*` also crosses `/`.)"""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.local",
        ".env.production",
        "data/metrics.db",
        "data/jwt_secret",
        "logs/backend.log",
        ".venv/bin/python",
        ".git/HEAD",
        "src/homepanel/__pycache__/app.cpython-311.pyc",
        "src/homepanel.egg-info/PKG-INFO",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
        "bench/results/metrics_size.json",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignored(path)


def test_dockerignore_keeps_what_the_build_copies() -> None:
    assert not dockerignored(".env.example")
    for name, args in dockerfile():
        if name == "COPY" and not args.startswith("--"):
            for source in args.split()[:-1]:
                assert not dockerignored(source.rstrip("/")), source
    assert not dockerignored("src/homepanel/cli.py")


# --- deploy/nginx.conf ----------------------------------------------------------------------


@dataclass
class Location:
    modifier: str
    pattern: str
    body: str

    def directives(self) -> list[list[str]]:
        return [statement.split() for statement in self.body.split(";") if statement.strip()]

    def value(self, name: str) -> str | None:
        found = [" ".join(d[1:]) for d in self.directives() if d[0] == name]
        return found[-1] if found else None


def nginx() -> tuple[str, list[Location]]:
    """The server block's own directives (locations removed) and its locations."""
    text = re.sub(r"#[^\n]*", "", (ROOT / "deploy" / "nginx.conf").read_text())
    server = text[text.index("server {") :]
    block = re.compile(r"location\s+(=|\^~|~\*|~)?\s*(\S+)\s*\{([^{}]*)\}")
    locations = [Location(m[1] or "", m[2], m[3]) for m in block.finditer(server)]
    return block.sub("", server), locations


def chosen(locations: list[Location], uri: str) -> Location | None:
    """nginx's choice: exact match, else the longest prefix if `^~`, else the first regex that
    matches, else the longest prefix."""
    for location in locations:
        if location.modifier == "=" and location.pattern == uri:
            return location
    prefixes = [
        loc for loc in locations if loc.modifier in ("", "^~") and uri.startswith(loc.pattern)
    ]
    longest = max(prefixes, key=lambda loc: len(loc.pattern), default=None)
    if longest is not None and longest.modifier == "^~":
        return longest
    for location in locations:
        flags = re.IGNORECASE if location.modifier == "~*" else 0
        if location.modifier in ("~", "~*") and re.search(location.pattern, uri, flags):
            return location
    return longest


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit or "s"]


@pytest.mark.parametrize("uri", sorted(SSE_URIS))
def test_nginx_streams_are_unbuffered(uri: str) -> None:
    _, locations = nginx()
    location = chosen(locations, uri)
    assert location is not None and location.pattern != "/", f"{uri} falls to the default"
    assert location.value("proxy_pass") == "http://homepanel_backend"
    assert location.value("proxy_buffering") == "off"
    assert location.value("proxy_cache") == "off"
    assert location.value("gzip") == "off"
    assert seconds(location.value("proxy_read_timeout") or "60s") >= SSE_URIS[uri]
    # One proxy_set_header here and none of the server's would be inherited.
    assert location.value("proxy_set_header") is None


@pytest.mark.parametrize(
    "uri", ["/api/proxmox/servers", "/api/ai/chat/42", "/api/automations/heating", "/health"]
)
def test_nginx_other_requests_go_to_the_backend(uri: str) -> None:
    _, locations = nginx()
    location = chosen(locations, uri)
    assert location is not None and location.value("proxy_pass") == "http://homepanel_backend"


def test_nginx_forwards_client_headers_over_http11() -> None:
    server, _ = nginx()
    statements = {" ".join(s.split()) for s in server.split(";")}
    assert "proxy_http_version 1.1" in statements
    assert 'proxy_set_header Connection ""' in statements
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for" in statements
    assert "proxy_set_header X-Forwarded-Proto $scheme" in statements
    assert "TRUSTED_PROXIES" in (ROOT / "deploy" / "nginx.conf").read_text()


# --- deploy/homepanel.service ---------------------------------------------------------------


def test_systemd_unit() -> None:
    settings: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "homepanel.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["User"][0] not in {"root", "0"}
    assert settings["WorkingDirectory"] and settings["EnvironmentFile"]
    (exec_start,) = settings["ExecStart"]
    assert exec_start.startswith("/") and exec_start.split()[1] == "serve"
    assert exec_start.split()[0].endswith("/bin/homepanel")
    assert settings["Restart"] == ["on-failure"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["PrivateTmp"] == ["yes"]
    assert settings["TimeoutStopSec"] == ["10"]
    writable = " ".join(settings["ReadWritePaths"]).split()
    assert any(p.endswith("/data") for p in writable) and any(p.endswith("/logs") for p in writable)


# --- the health checks, run ---------------------------------------------------------------


def run_check(command: list[str], url: str) -> subprocess.CompletedProcess[str]:
    """`command` (python -c ...) with this interpreter, its URL pointed at `url`, and a proxy in
    the environment that would swallow the request if the check did not bypass it."""
    assert command[0] == "python"
    code = command[2].replace("http://127.0.0.1:8000", url)
    assert code != command[2]
    environment = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    environment |= {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    return subprocess.run(
        [sys.executable, *command[1:2], code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("source", ["Dockerfile", "docker-compose.yml"])
def test_healthcheck_command_works(
    source: str, running_lab: RunningLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if source == "Dockerfile":
        command = dockerfile_healthcheck()
    else:
        command = compose_service()["healthcheck"]["test"][1:]
    with AppServer(lab_settings(running_lab.lab, tmp_path)) as server:
        healthy = run_check(command, server.url)
        assert healthy.returncode == 0, healthy.stderr

        async def unusable() -> bool:
            return False

        monkeypatch.setattr(server.app.state.db, "ping", unusable)
        assert httpx2.get(f"{server.url}/health", timeout=5).status_code == 503
        unhealthy = run_check(command, server.url)
        assert unhealthy.returncode != 0 and "503" in unhealthy.stderr
    down = run_check(command, server.url)  # nothing listens any more
    assert down.returncode != 0
