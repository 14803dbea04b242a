"""Configuration: names of DESIGN.md 2.2, `.env` parsing, one clear line per problem, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from homepanel.core.config import ConfigError, load_settings, parse_duration
from tests.harness import ACCESS_TOKEN, write_env

SECRET_TOKEN = "root@pam!homepanel=3f6c2b1e-8d2a-4c1e-9b7a-0a1b2c3d4e5f"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the `.env` they write, not the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("PROXMOX_", "ACCESS_TOKEN", "JWT_", "CORS_", "ENV", "METRICS_")):
            monkeypatch.delenv(name)


def load(tmp_path: Path, **variables: str):
    return load_settings(write_env(tmp_path / ".env", {"ACCESS_TOKEN": ACCESS_TOKEN, **variables}))


def problems(tmp_path: Path, **variables: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **variables)
    return caught.value.problems


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.env == "production"
    assert settings.effective_log_level == "INFO"
    assert settings.access_token is not None
    assert settings.access_token.get_secret_value() == ACCESS_TOKEN
    assert settings.jwt_ttl == 7 * 86400
    assert settings.cors_origins == ["http://localhost:3000", "http://10.0.20.102:3000"]
    assert settings.proxmox_servers == []
    assert (settings.metrics_interval_servers, settings.metrics_interval_vms) == (10, 30)
    assert settings.metrics_retention_hour == 365 * 86400
    assert settings.metrics_retention_device_states == 90 * 86400
    assert settings.rate_limit_api == "600/minute"
    assert settings.frigate_url is None


def test_development_defaults_to_debug(tmp_path: Path) -> None:
    assert load(tmp_path, ENV="development").effective_log_level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("45s", 45), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_any_number_of_proxmox_servers(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        PROXMOX_NAS_URL="https://192.0.2.10:8006",
        PROXMOX_NAS_NAME="NAS Server",
        PROXMOX_NAS_TOKEN=SECRET_TOKEN,
        PROXMOX_SMART_HOME_URL="https://192.0.2.20:8006",
        PROXMOX_SMART_HOME_NODE="pve",
        PROXMOX_SMART_HOME_VERIFY_SSL="true",
        PROXMOX_LAB3_URL="https://192.0.2.30:8006",
        PROXMOX_LAB3_ID="third",
    )
    servers = {server.id: server for server in settings.proxmox_servers}
    assert set(servers) == {"nas", "smart-home", "third"}
    assert servers["nas"].name == "NAS Server" and servers["nas"].node == "nas"
    assert servers["nas"].host == "192.0.2.10"
    assert servers["nas"].verify_ssl is False
    assert servers["smart-home"].node == "pve" and servers["smart-home"].verify_ssl is True
    assert servers["third"].name == "third" and servers["third"].key == "LAB3"


def test_verify_ssl_takes_a_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "pve-root-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load(
        tmp_path, PROXMOX_NAS_URL="https://192.0.2.10:8006", PROXMOX_NAS_VERIFY_SSL=str(ca)
    )
    assert settings.proxmox_servers[0].verify_ssl == ca


def test_environment_overrides_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    assert load(tmp_path, PORT="8000").port == 9001


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"ENV": "staging"}, "ENV:"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS: Value error, '*' is refused"),
        ({"CORS_ORIGINS": "http://localhost:3000,*"}, "CORS_ORIGINS:"),
        ({"CORS_ORIGINS": "localhost:3000"}, "CORS_ORIGINS:"),
        ({"JWT_TTL": "7 days"}, "JWT_TTL:"),
        ({"METRICS_RETENTION_RAW": "-1h"}, "METRICS_RETENTION_RAW:"),
        ({"METRICS_RETENTION_HOUR": "0"}, "METRICS_RETENTION_HOUR:"),
        ({"RATE_LIMIT_LOGIN": "five per minute"}, "RATE_LIMIT_LOGIN:"),
        ({"TRUSTED_PROXIES": "192.0.2.0/33"}, "TRUSTED_PROXIES:"),
        ({"PORT": "eighty"}, "PORT:"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL:"),
        ({"FRIGATE_URL": "ftp://cams"}, "FRIGATE_URL:"),
        ({"JWT_SECRET": "short-secret-value"}, "JWT_SECRET:"),
        (
            {"PROXMOX_NAS_URL": "https://192.0.2.10:8006", "PROXMOX_NAS_TOKEN": "not-a-token"},
            "PROXMOX_NAS_TOKEN:",
        ),
        ({"PROXMOX_NAS_URL": "192.0.2.10"}, "PROXMOX_NAS_URL:"),
        ({"PROXMOX_NAS_TOKEN": SECRET_TOKEN}, "PROXMOX_NAS_URL: missing"),
        (
            {"PROXMOX_NAS_URL": "https://192.0.2.10:8006", "PROXMOX_NAS_ID": "NAS/1"},
            "PROXMOX_NAS_ID:",
        ),
        (
            {
                "PROXMOX_NAS_URL": "https://192.0.2.10:8006",
                "PROXMOX_NAS_VERIFY_SSL": "/no/such/ca.pem",
            },
            "PROXMOX_NAS_VERIFY_SSL:",
        ),
        (
            {
                "PROXMOX_A_URL": "https://192.0.2.1:8006",
                "PROXMOX_B_URL": "https://192.0.2.2:8006",
                "PROXMOX_B_ID": "a",
            },
            "used by more than one server",
        ),
    ],
)
def test_bad_values_name_the_variable(
    tmp_path: Path, variables: dict[str, str], expected: str
) -> None:
    found = problems(tmp_path, **variables)
    assert any(expected.replace("Value error, ", "") in line for line in found), found
    assert all("\n" not in line for line in found)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, ENV="staging", CORS_ORIGINS="*", JWT_TTL="soon")
    assert {line.split(":")[0] for line in found} == {"ENV", "CORS_ORIGINS", "JWT_TTL"}


def test_access_token_required_outside_demo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_env(tmp_path / ".env", {}))
    assert any("ACCESS_TOKEN" in line for line in caught.value.problems)
    assert (
        load_settings(write_env(tmp_path / ".env", {"ENABLE_MOCK_DATA": "true"})).access_token
        is None
    )


def test_errors_never_print_secret_values(tmp_path: Path) -> None:
    secret = "hunter2-secret-value-that-must-not-leak"
    found = problems(
        tmp_path,
        JWT_SECRET=secret[:20],
        PROXMOX_NAS_URL="https://192.0.2.10:8006",
        PROXMOX_NAS_TOKEN=secret,
        METRICS_RETENTION_RAW=secret,
    )
    assert len(found) == 3
    assert not any(secret[:20] in line for line in found)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "ACCESS_"))}
    return subprocess.run(
        [sys.executable, "-m", "homepanel", *args],
        cwd=cwd,
        env=environment | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_reports_problems(tmp_path: Path) -> None:
    write_env(
        tmp_path / ".env",
        {
            "ACCESS_TOKEN": ACCESS_TOKEN,
            "CORS_ORIGINS": "*",
            "PROXMOX_NAS_URL": "https://192.0.2.10:8006",
            "PROXMOX_NAS_TOKEN": "oops=" + ACCESS_TOKEN,
        },
    )
    result = run_cli("check-config", cwd=tmp_path)
    assert result.returncode != 0
    assert "CORS_ORIGINS:" in result.stderr and "PROXMOX_NAS_TOKEN:" in result.stderr
    assert ACCESS_TOKEN not in result.stderr + result.stdout


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    env = tmp_path / "custom.env"
    write_env(env, {"ACCESS_TOKEN": ACCESS_TOKEN, "PROXMOX_NAS_URL": "https://192.0.2.10:8006"})
    result = run_cli("check-config", "--env-file", str(env), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nas (192.0.2.10)" in result.stdout
    assert "Frigate: not configured" in result.stdout


def test_serve_stops_on_a_bad_value_with_one_line(tmp_path: Path) -> None:
    write_env(tmp_path / ".env", {"ACCESS_TOKEN": ACCESS_TOKEN, "ENV": "prod"})
    result = run_cli("serve", "--port", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert [line.strip() for line in result.stderr.splitlines()][1:] == [
        "ENV: Input should be 'development' or 'production'"
    ]
