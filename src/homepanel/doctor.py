"""`homepanel doctor`: is every configured upstream reachable, trusted and willing?

Each upstream is checked with the service's own client, so the verdict is what the running
service would meet: reachable, TLS, credentials and, for Proxmox, the node name and the API
token's privileges (the classic trap: a token with privilege separation and no ACL of its own
gets empty guest lists, not an error). Every check is one line with a verdict and what to change,
naming the variable. Messages never carry a secret: every configured secret is masked in them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from homepanel.ai.client import AiClient
from homepanel.automations.client import AutomationClient
from homepanel.core.config import ProxmoxServer, Settings
from homepanel.core.errors import ApiError
from homepanel.frigate.client import FrigateClient
from homepanel.mqtt.client import MqttClient
from homepanel.proxmox.client import ProxmoxClient

MASK = "***"
_PROXMOX_CA = "/etc/pve/pve-root-ca.pem"
_ACL_DIALOG = "Datacenter > Permissions > Add > API Token Permission"


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict. `ok` is True (passed), False (broken) or None (a warning, or with `info`
    set, nothing to check, such as an upstream that is not configured)."""

    name: str  # the upstream: "Proxmox 'nas'", "Frigate"
    item: str  # reachable, TLS, credentials, node, privileges, power actions, configured
    ok: bool | None
    message: str  # the verdict and what to do, naming the variable to fix
    info: bool = False

    @property
    def label(self) -> str:
        if self.info:
            return "INFO"
        return " OK " if self.ok else ("FAIL" if self.ok is False else "WARN")

    def line(self) -> str:
        return f"[{self.label}] {self.name}: {self.message}"


@dataclass(frozen=True, slots=True)
class _Target:
    """What the messages about one upstream need: its name, address and variables."""

    name: str
    url: str
    url_variable: str
    verify: bool | Path | None  # None: no *_VERIFY_SSL variable, the system's CAs are used
    verify_variable: str | None
    configured: bool  # whether any credential is configured
    tls_hint: str  # how this kind of upstream gets a trusted certificate

    @property
    def address(self) -> str:
        """scheme://host:port only: a URL may carry user:password@, which is never shown."""
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}"

    @property
    def https(self) -> bool:
        return self.url.lower().startswith("https://")


async def diagnose(settings: Settings) -> list[Check]:
    """Check every configured upstream, all at once; the checks come back in a stable order."""
    probes: list[Awaitable[list[Check]]] = [
        _guarded(f"Proxmox '{server.id}'", _check_proxmox(server))
        for server in settings.proxmox_servers
    ]
    if not settings.proxmox_servers:
        probes.append(_nothing("Proxmox", "no PROXMOX_<KEY>_URL set"))
    for service in _SERVICES:
        probes.append(_guarded(service.name, _check_service(settings, service)))
    results = await asyncio.gather(*probes)
    secrets = sorted(set(settings.secrets()), key=len, reverse=True)
    return [_masked(check, secrets) for checks in results for check in checks]


def failed(checks: list[Check]) -> bool:
    return any(check.ok is False for check in checks)


def summary(checks: list[Check]) -> str:
    passed = sum(check.ok is True for check in checks)
    warnings = sum(check.ok is None and not check.info for check in checks)
    broken = sum(check.ok is False for check in checks)
    unconfigured = sum(check.info for check in checks)
    text = (
        f"{passed} ok, {warnings} warning{'' if warnings == 1 else 's'}, {broken} failed, "
        f"{unconfigured} not configured"
    )
    return f"Doctor: {text}: {'something is broken' if broken else 'nothing is broken'}"


def _masked(check: Check, secrets: list[str]) -> Check:
    message = check.message
    for secret in secrets:
        message = message.replace(secret, MASK)
    if message == check.message:
        return check
    return Check(check.name, check.item, check.ok, message, check.info)


async def _nothing(name: str, why: str) -> list[Check]:
    return [Check(name, "configured", None, f"not configured ({why})", info=True)]


async def _guarded(name: str, checks: Awaitable[list[Check]]) -> list[Check]:
    """A bug in one upstream's checks must not hide every other upstream's verdict."""
    try:
        return await checks
    except Exception as exc:
        return [Check(name, "doctor", False, f"the check itself failed: {exc!r}")]


# --- shared verdicts -------------------------------------------------------------------------


def _reached(target: _Target) -> list[Check]:
    """The upstream answered: reachable, and its certificate (if any) was accepted."""
    checks = [Check(target.name, "reachable", True, f"reachable at {target.address}")]
    if not target.https:
        return checks
    if target.verify is False:
        checks.append(
            Check(
                target.name,
                "TLS",
                None,
                f"TLS certificate not verified ({target.verify_variable}=false): anyone on the "
                f"network path could pose as it and read the credentials; {target.tls_hint}",
            )
        )
    elif isinstance(target.verify, Path):
        checks.append(
            Check(target.name, "TLS", True, f"TLS certificate verified against {target.verify}")
        )
    else:
        checks.append(Check(target.name, "TLS", True, "TLS certificate verified"))
    return checks


def _not_reached(target: _Target, error: ApiError, refused: str) -> list[Check]:
    """Where an ApiError from the first call leaves an upstream; `refused` for a 401/403."""
    code = error.error_code
    if code == "UPSTREAM_UNREACHABLE":
        return [
            Check(
                target.name,
                "reachable",
                False,
                f"unreachable at {target.address}: nothing usable answers there. Check "
                f"{target.url_variable} (scheme, address, port) and that the service is up",
            )
        ]
    if code == "UPSTREAM_TIMEOUT":
        return [
            Check(
                target.name,
                "reachable",
                False,
                f"no answer from {target.address} in time: check {target.url_variable}, and "
                f"that the host is up and not overloaded",
            )
        ]
    reachable = Check(target.name, "reachable", True, f"reachable at {target.address}")
    if code == "UPSTREAM_TLS_ERROR":
        return [reachable, Check(target.name, "TLS", False, _untrusted(target))]
    if code in ("UPSTREAM_AUTH_FAILED", "UPSTREAM_FORBIDDEN"):
        return [*_reached(target), Check(target.name, "credentials", False, refused)]
    return [
        reachable,
        Check(
            target.name,
            "answer",
            False,
            f"answers, but not usably ({error.detail}): check that {target.url_variable} points "
            f"at the service itself",
        ),
    ]


def _untrusted(target: _Target) -> str:
    pinned = f" ({target.verify})" if isinstance(target.verify, Path) else ""
    return f"TLS certificate not trusted{pinned}: {target.tls_hint}"


def _bad_ca_file(target: _Target, exc: Exception) -> list[Check]:
    """tls_verify() reads a pinned CA file when the client is built; it may not be one."""
    return [
        Check(
            target.name,
            "TLS",
            False,
            f"{target.verify_variable} names {target.verify}, which is not a readable PEM CA "
            f"certificate ({type(exc).__name__}): {target.tls_hint}",
        )
    ]


# --- Proxmox ---------------------------------------------------------------------------------


async def _check_proxmox(server: ProxmoxServer) -> list[Check]:
    prefix = server.env_prefix
    target = _Target(
        name=f"Proxmox '{server.id}'",
        url=server.url,
        url_variable=f"{prefix}URL",
        verify=server.verify_ssl,
        verify_variable=f"{prefix}VERIFY_SSL",
        configured=server.token is not None,
        tls_hint=(
            f"Proxmox signs its certificate with its own CA: copy {_PROXMOX_CA} from the host "
            f"and set {prefix}VERIFY_SSL to that file (false skips the check)"
        ),
    )
    try:
        client = ProxmoxClient(server)
    except (ssl.SSLError, OSError) as exc:
        return _bad_ca_file(target, exc)
    try:
        try:
            version = await client.version()
        except ApiError as exc:
            return _not_reached(target, exc, _token_refused(server))
        checks = _reached(target)
        release = version.get("version")
        if release:
            checks[0] = Check(
                target.name, "reachable", True, f"reachable at {target.address} (PVE {release})"
            )
        checks.append(
            Check(target.name, "credentials", True, f"API token {_token_id(server)} accepted")
        )
        node, privileges = await asyncio.gather(
            _check_node(client, target.name, server), _check_privileges(client, target, server)
        )
        return [*checks, node, *privileges]
    finally:
        await client.aclose()


def _token_id(server: ProxmoxServer) -> str:
    """user@realm!tokenid: the public half of the token, as Proxmox's UI lists it."""
    if server.token is None:
        return "(none)"
    return server.token.get_secret_value().rpartition("=")[0]


def _token_refused(server: ProxmoxServer) -> str:
    variable = f"{server.env_prefix}TOKEN"
    if server.token is None:
        return (
            f"credentials missing: Proxmox wants an API token; create one in Datacenter > "
            f"Permissions > API Tokens and set {variable} to user@realm!tokenid=secret"
        )
    return (
        f"credentials refused: Proxmox does not accept the API token {_token_id(server)}. "
        f"Check {variable}: the whole user@realm!tokenid=secret that Proxmox showed once when "
        f"the token was created; a deleted or expired token needs a new one"
    )


async def _check_node(client: ProxmoxClient, name: str, server: ProxmoxServer) -> Check:
    """A wrong node name fails every node call; a 403 still proves the node exists."""
    try:
        await client.node_status()
    except ApiError as exc:
        if exc.error_code == "UPSTREAM_FORBIDDEN":
            return Check(name, "node", True, f"node '{server.node}' found")
        if exc.error_code in ("UPSTREAM_UNREACHABLE", "UPSTREAM_TIMEOUT"):
            return Check(name, "node", None, f"node '{server.node}' not checked: {exc.detail}")
        return Check(
            name,
            "node",
            False,
            f"node '{server.node}' not found on this host ({exc.detail}): set "
            f"{server.env_prefix}NODE to the node's name as the web UI lists it",
        )
    return Check(name, "node", True, f"node '{server.node}' found")


async def _check_privileges(
    client: ProxmoxClient, target: _Target, server: ProxmoxServer
) -> list[Check]:
    name = target.name
    try:
        tree = await client.permissions()
    except ApiError as exc:
        return [
            Check(
                name,
                "privileges",
                None,
                f"privileges not checked: /access/permissions failed ({exc.detail}); the token "
                f"needs Sys.Audit and VM.Audit to read, VM.PowerMgmt for power actions",
            )
        ]
    return [_read_privileges(name, server, tree), _power_privileges(name, server, tree)]


def _read_privileges(name: str, server: ProxmoxServer, tree: dict[str, dict[str, bool]]) -> Check:
    token = _token_id(server)
    node_path = f"/nodes/{server.node}"
    grant = (
        f"in {_ACL_DIALOG}, give {token} the role PVEAuditor on / (or create the token without "
        f"'Privilege Separation', so that it has its user's rights)"
    )
    if not tree:
        return Check(
            name,
            "privileges",
            False,
            f"privileges: the API token {token} has none at all, so guest lists come back "
            f"empty (Proxmox filters them, no error) and node status fails with 403. This is "
            f"what 'Privilege Separation' does to a token without an ACL of its own: {grant}",
        )
    problems: list[str] = []
    if "Sys.Audit" not in _granted(tree, node_path):
        problems.append(f"Sys.Audit on {node_path} (node status and metrics fail with 403)")
    partial = _granted_below(tree, "VM.Audit")
    if "VM.Audit" not in _granted(tree, "/vms"):
        if partial:
            problems.append(
                f"VM.Audit on /vms: only the guests under {', '.join(partial)} are listed"
            )
        else:
            problems.append(
                "VM.Audit on /vms (guest lists come back empty, not as an error; a token "
                "with 'Privilege Separation' has only the ACLs given to the token itself)"
            )
    if not problems:
        return Check(
            name,
            "privileges",
            True,
            f"privileges to read: Sys.Audit on {node_path}, VM.Audit on /vms",
        )
    only_partial = len(problems) == 1 and partial and "Sys.Audit" in _granted(tree, node_path)
    return Check(
        name,
        "privileges",
        None if only_partial else False,
        f"privileges: the API token {token} lacks {'; '.join(problems)}. To fix: {grant}",
    )


def _power_privileges(name: str, server: ProxmoxServer, tree: dict[str, dict[str, bool]]) -> Check:
    if "VM.PowerMgmt" in _granted(tree, "/vms"):
        return Check(name, "power actions", True, "power actions allowed (VM.PowerMgmt)")
    grant = f"in {_ACL_DIALOG}, give {_token_id(server)} the role PVEVMUser on /vms"
    partial = _granted_below(tree, "VM.PowerMgmt")
    if partial:
        return Check(
            name,
            "power actions",
            None,
            f"power actions only for the guests under {', '.join(partial)} (VM.PowerMgmt); "
            f"starting or stopping any other fails with 403. To allow all: {grant}",
        )
    return Check(
        name,
        "power actions",
        None,
        f"power actions will fail with 403: the API token lacks VM.PowerMgmt on /vms. Fine "
        f"for a read-only panel; to start and stop guests: {grant}",
    )


def _granted(tree: dict[str, dict[str, bool]], path: str) -> set[str]:
    """The privileges `tree` (an /access/permissions answer) gives on `path`.

    The answer lists every path that has an ACL (and, on current versions, the top-level ones
    such as /nodes and /vms, leaving out those without any privilege); a path it does not list
    inherits what its nearest listed ancestor propagates.
    """
    current = path
    while current not in tree:
        if current == "/":
            return set()
        current = current.rpartition("/")[0] or "/"
    if current == path:
        return set(tree[current])
    return {privilege for privilege, propagates in tree[current].items() if propagates}


def _granted_below(tree: dict[str, dict[str, bool]], privilege: str) -> list[str]:
    """Single guests or pools that hold `privilege` when /vms does not."""
    return sorted(
        path
        for path, privileges in tree.items()
        if path.startswith(("/vms/", "/pool/")) and privilege in privileges
    )


# --- Frigate, MQTT API, Automation API, AI hub -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Service:
    name: str
    prefix: str  # FRIGATE -> FRIGATE_URL, FRIGATE_USERNAME, FRIGATE_PASSWORD
    client: Callable[[Settings], Any]
    probe: Callable[[Any], Awaitable[Any]]  # one cheap authenticated GET
    has_verify: bool = False  # whether <PREFIX>_VERIFY_SSL exists

    def url(self, settings: Settings) -> str | None:
        return getattr(settings, f"{self.prefix.lower()}_url")

    def username(self, settings: Settings) -> str | None:
        return getattr(settings, f"{self.prefix.lower()}_username")


_SERVICES = (
    _Service("Frigate", "FRIGATE", FrigateClient, FrigateClient.config, has_verify=True),
    _Service("MQTT API", "MQTT_API", MqttClient, MqttClient.topics),
    _Service("Automation API", "AUTOMATION_API", AutomationClient, AutomationClient.automations),
    _Service("AI hub", "AI_HUB", AiClient, AiClient.processes),
)


async def _check_service(settings: Settings, service: _Service) -> list[Check]:
    url = service.url(settings)
    if url is None:
        return await _nothing(service.name, f"{service.prefix}_URL is not set")
    prefix = service.prefix
    credentials = f"{prefix}_USERNAME and {prefix}_PASSWORD"
    verify_variable = f"{prefix}_VERIFY_SSL" if service.has_verify else None
    target = _Target(
        name=service.name,
        url=url,
        url_variable=f"{prefix}_URL",
        verify=getattr(settings, f"{prefix.lower()}_verify_ssl") if service.has_verify else None,
        verify_variable=verify_variable,
        configured=bool(service.username(settings)),
        tls_hint=(
            f"set {verify_variable} to the CA file that signed its certificate (false skips "
            f"the check)"
            if verify_variable
            else "give it a certificate this machine trusts, or use http:// on a trusted LAN"
        ),
    )
    try:
        client = service.client(settings)
    except (ssl.SSLError, OSError) as exc:
        return _bad_ca_file(target, exc)
    try:
        await service.probe(client)
    except ApiError as exc:
        if target.configured:
            refused = f"credentials refused: check {credentials}"
        else:
            refused = f"credentials missing: {service.name} wants a login; set {credentials}"
        return _not_reached(target, exc, refused)
    finally:
        await client.aclose()
    if target.configured:
        accepted = "credentials accepted"
    else:
        accepted = f"credentials: none configured ({credentials}), none needed"
    return [*_reached(target), Check(service.name, "credentials", True, accepted)]
