"""Configuration from the environment and `.env`, named as DESIGN.md 2.2 promises.

Everything is validated at start-up so that a typo stops the service with one line naming the
variable, instead of surfacing as a 500 an hour later. Error lines never contain the value: a
misplaced secret in the wrong variable must not end up in a terminal or a log.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from limits import parse as parse_rate_limit
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_CORS_ORIGINS = "http://localhost:3000,http://10.0.20.102:3000"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PROXMOX_VAR = re.compile(
    r"^PROXMOX_(?P<key>[A-Z0-9_]+?)_(?P<field>URL|ID|NAME|NODE|TOKEN|VERIFY_SSL)$"
)
# user@realm!tokenid=secret, the form Proxmox shows once when a token is created.
_PROXMOX_TOKEN = re.compile(r"^[^\s@!=]+@[^\s@!=]+![A-Za-z][A-Za-z0-9._-]*=[^\s=]+$")
SERVER_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: object) -> int:
    """`90`, `45s`, `30m`, `24h`, `7d`, `2w` -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _DURATION.match(str(value).lower())
        if match is None:
            raise ValueError("must be a duration such as 90, 30m, 24h or 7d")
        seconds = int(match[1]) * _DURATION_UNITS[match[2]]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def parse_verify_ssl(value: object) -> bool | Path:
    """`true`, `false`, or the path of a CA file to pin (a self-signed host's own CA)."""
    if isinstance(value, bool | Path):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    if Path(text).is_file():
        return Path(text)
    raise ValueError("must be true, false or the path of an existing CA file")


def _split_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return list(value)  # type: ignore[call-overload]


def _check_origins(origins: list[str]) -> list[str]:
    for origin in origins:
        if origin == "*":
            raise ValueError("'*' is refused: list the dashboard's origins explicitly")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("each origin must look like http://host:port")
    return [origin.rstrip("/") for origin in origins]


def _check_networks(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError("each entry must be an IP address or a CIDR network") from None
    return values


def _check_rate_limit(value: str) -> str:
    try:
        parse_rate_limit(value)
    except ValueError:
        raise ValueError("must look like 5/minute or 100/hour") from None
    return value


def _check_http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


Duration = Annotated[int, BeforeValidator(parse_duration)]
TlsVerify = Annotated[bool | Path, BeforeValidator(parse_verify_ssl)]
Origins = Annotated[
    list[str], NoDecode, BeforeValidator(_split_list), AfterValidator(_check_origins)
]
Networks = Annotated[
    list[str], NoDecode, BeforeValidator(_split_list), AfterValidator(_check_networks)
]
RateLimit = Annotated[str, AfterValidator(_check_rate_limit)]
Keys = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
HttpUrl = Annotated[str | None, AfterValidator(_check_http_url)]


class ProxmoxServer(BaseModel):
    """One standalone Proxmox VE host, from the `PROXMOX_<KEY>_*` variables."""

    key: str
    id: str
    name: str
    node: str
    url: str
    token: SecretStr | None = None
    verify_ssl: bool | Path = False

    @property
    def host(self) -> str:
        """The host part of the URL: display information only (the spec's `ip`)."""
        return urlsplit(self.url).hostname or ""

    @property
    def env_prefix(self) -> str:
        return f"PROXMOX_{self.key}_"


class Settings(BaseSettings):
    """The whole configuration. Field names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
        validate_default=True,
    )

    env: Literal["development", "production"] = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    log_dir: Path = Path("./logs")
    enable_mock_data: bool = False
    host: str = "0.0.0.0"  # noqa: S104 - a LAN service by design; the demo binds loopback
    port: int = Field(default=8000, ge=1, le=65535)

    access_token: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    jwt_ttl: Duration = 7 * 86400
    cors_origins: Origins = Field(default_factory=lambda: _split_list(DEFAULT_CORS_ORIGINS))
    trusted_proxies: Networks = Field(default_factory=list)

    proxmox_servers: list[ProxmoxServer] = Field(default_factory=list)

    frigate_url: HttpUrl = None
    frigate_username: str | None = None
    frigate_password: SecretStr | None = None
    frigate_verify_ssl: TlsVerify = True
    mqtt_api_url: HttpUrl = None
    mqtt_api_username: str | None = None
    mqtt_api_password: SecretStr | None = None
    automation_api_url: HttpUrl = None
    automation_api_username: str | None = None
    automation_api_password: SecretStr | None = None
    ai_hub_url: HttpUrl = None
    ai_hub_username: str | None = None
    ai_hub_password: SecretStr | None = None

    database_path: Path = Path("./data/metrics.db")

    metrics_enabled: bool = True
    metrics_interval_servers: int = Field(default=10, gt=0)
    metrics_interval_vms: int = Field(default=30, gt=0)
    metrics_interval_automations: int = Field(default=5, gt=0)
    metrics_retention_raw: Duration = 3600
    metrics_retention_minute: Duration = 86400
    metrics_retention_five_min: Duration = 7 * 86400
    metrics_retention_thirty_min: Duration = 30 * 86400
    metrics_retention_hour: Duration = 365 * 86400
    metrics_retention_device_states: Duration = 90 * 86400
    metrics_device_ignored_keys: Keys = Field(
        default_factory=lambda: ["linkquality", "last_seen", "rssi"]
    )

    rate_limit_login: RateLimit = "5/minute"
    rate_limit_ai: RateLimit = "10/minute"
    rate_limit_api: RateLimit = "600/minute"
    metrics_token: SecretStr | None = None

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (HS256 needs a 256-bit key)")
        return value

    @model_validator(mode="after")
    def _access_token_required(self) -> Settings:
        if self.access_token is None and not self.enable_mock_data:
            raise ValueError(
                "ACCESS_TOKEN is required (the panel password); only demo mode makes one"
            )
        return self

    @property
    def effective_log_level(self) -> str:
        return self.log_level or ("DEBUG" if self.env == "development" else "INFO")

    @property
    def data_dir(self) -> Path:
        return self.database_path.parent

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def proxmox_server(self, server_id: str) -> ProxmoxServer | None:
        return next((s for s in self.proxmox_servers if s.id == server_id), None)

    def secrets(self) -> list[str]:
        """Every secret value, so that logging can redact them wherever they turn up."""
        values = [
            self.access_token,
            self.jwt_secret,
            self.metrics_token,
            self.frigate_password,
            self.mqtt_api_password,
            self.automation_api_password,
            self.ai_hub_password,
            *(server.token for server in self.proxmox_servers),
        ]
        found = [v.get_secret_value() for v in values if v is not None]
        # A Proxmox token's secret half may appear on its own too.
        found += [s.rsplit("=", 1)[1] for s in found if "!" in s and "=" in s]
        return [s for s in found if s]


def _parse_proxmox_servers(variables: Mapping[str, str]) -> tuple[list[dict], list[str]]:
    """Group `PROXMOX_<KEY>_<FIELD>` variables into one dict per server, checking each field."""
    grouped: dict[str, dict[str, str]] = {}
    for name, value in variables.items():
        match = _PROXMOX_VAR.match(name.upper())
        if match and value.strip():
            grouped.setdefault(match["key"], {})[match["field"]] = value.strip()

    servers: list[dict] = []
    problems: list[str] = []
    for key, fields in sorted(grouped.items()):
        prefix = f"PROXMOX_{key}_"
        if "URL" not in fields:
            problems.append(f"{prefix}URL: missing, but other {prefix}* variables are set")
            continue
        server_id = fields.get("ID", key.lower().replace("_", "-"))
        server = {
            "key": key,
            "id": server_id,
            "name": fields.get("NAME", server_id),
            "node": fields.get("NODE", server_id),
            "url": fields["URL"],
            "token": fields.get("TOKEN"),
            "verify_ssl": fields.get("VERIFY_SSL", "false"),
        }
        errors = _proxmox_field_problems(server)
        problems += [f"{prefix}{field}: {message}" for field, message in errors]
        if not errors:
            servers.append(server)
    ids = [server["id"] for server in servers]
    problems += [
        f"PROXMOX_*_ID: the id {server_id!r} is used by more than one server"
        for server_id in sorted({i for i in ids if ids.count(i) > 1})
    ]
    return servers, problems


def _proxmox_field_problems(server: dict) -> list[tuple[str, str]]:
    problems = []
    parts = urlsplit(server["url"])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(("URL", "must be a URL such as https://192.168.1.10:8006"))
    if not SERVER_ID.match(server["id"]):
        problems.append(("ID", "must be lower-case letters, digits and '-' (used in API paths)"))
    if not _NODE_NAME.match(server["node"]):
        problems.append(("NODE", "must be a Proxmox node name: letters, digits and '-'"))
    token = server["token"]
    if token is not None and not _PROXMOX_TOKEN.match(token):
        problems.append(("TOKEN", "must look like user@realm!tokenid=secret"))
    try:
        server["verify_ssl"] = parse_verify_ssl(server["verify_ssl"])
    except ValueError as exc:
        problems.append(("VERIFY_SSL", str(exc)))
    return problems


def proxmox_servers_from(variables: Mapping[str, str]) -> list[ProxmoxServer]:
    """The servers that `PROXMOX_<KEY>_*` variables describe; ConfigError if any is wrong."""
    servers, problems = _parse_proxmox_servers(variables)
    if problems:
        raise ConfigError(problems)
    return [ProxmoxServer.model_validate(server) for server in servers]


def _describe(error: dict) -> str:
    field = str(error["loc"][0]).upper() if error["loc"] else "configuration"
    message = error["msg"].removeprefix("Value error, ")
    if field == "CONFIGURATION" or not error["loc"]:
        return message
    return f"{field}: {message}"


def load_settings(env_file: Path | None = Path(".env"), **overrides: object) -> Settings:
    """Read the environment and `env_file`; raise ConfigError listing every problem found."""
    file_values = dotenv_values(env_file) if env_file and env_file.is_file() else {}
    variables = {k: v for k, v in file_values.items() if v is not None} | dict(os.environ)
    servers, problems = _parse_proxmox_servers(variables)
    overrides.setdefault("proxmox_servers", servers)
    try:
        settings = Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors(include_input=False)]
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings
