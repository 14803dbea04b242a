"""`homepanel doctor` against the simulated lab: one verdict per check, what to fix, no secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from homepanel.core.config import ProxmoxServer
from homepanel.doctor import Check, _power_privileges, _read_privileges, diagnose
from homepanel.simulator.lab import Lab
from tests.harness import lab_settings

WRONG_TOKEN = "root@pam!homepanel=00000000-dead-beef-0000-000000000000"
BARE_TOKEN = "panel@pve!dashboard=5f0c8a4e-1b2d-4e6f-8a9b-0c1d2e3f4a5b"
AUDITOR_TOKEN = "audit@pve!panel=7d3c1f00-5b1e-4a7e-9d41-0c2f7e8a9b10"
# What the service reads from the environment: a developer's shell must not leak into the run.
_OURS = ("PROXMOX_", "ACCESS_TOKEN", "FRIGATE_", "MQTT_API_", "AUTOMATION_API_", "AI_HUB_", "ENV")


def run_doctor(lab: Lab, directory: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """The real CLI on a real `.env` for the lab; no secret of that `.env` may be printed."""
    settings = lab_settings(lab, directory, **variables)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    result = subprocess.run(
        [sys.executable, "-m", "homepanel", "doctor", "--env-file", str(directory / ".env")],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    for secret in settings.secrets():  # tokens, their secret halves, passwords, ACCESS_TOKEN
        assert secret not in output, "a secret was printed"
    return result


def lines(result: subprocess.CompletedProcess[str], prefix: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(prefix)]


def one_line(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    found = lines(result, prefix)
    assert len(found) == 1, result.stdout
    return found[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def verdicts(checks: list[Check], name: str) -> dict[str, bool | None]:
    return {check.item: check.ok for check in checks if check.name == name}


# -- through the CLI ------------------------------------------------------------------------


def test_a_healthy_lab_passes_every_check(lab: Lab, tmp_path: Path) -> None:
    result = run_doctor(lab, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not lines(result, "[FAIL]") and not lines(result, "[WARN]"), result.stdout
    assert result.stderr == ""
    for name in ("Proxmox 'nas'", "Proxmox 'smart-home'"):
        assert one_line(result, f"[ OK ] {name}: API token root@pam!homepanel accepted")
    for name in ("Frigate", "MQTT API", "Automation API", "AI hub"):
        assert one_line(result, f"[ OK ] {name}: credentials accepted")
    assert one_line(result, "[ OK ] Proxmox 'nas': reachable at https://127.0.0.1:")
    assert one_line(result, "[ OK ] Proxmox 'nas': TLS certificate verified")
    assert one_line(result, "[ OK ] Proxmox 'nas': privileges to read")
    assert one_line(result, "[ OK ] Proxmox 'nas': power actions allowed")
    assert result.stdout.splitlines()[-1] == (
        "Doctor: 21 ok, 0 warnings, 0 failed, 0 not configured: nothing is broken"
    )


def test_a_wrong_proxmox_token_fails_credentials(lab: Lab, tmp_path: Path) -> None:
    lab.proxmox["nas"].faults.auth_delay = 0.1
    result = run_doctor(lab, tmp_path, PROXMOX_NAS_TOKEN=WRONG_TOKEN)
    assert result.returncode == 1
    line = one_line(result, "[FAIL] Proxmox 'nas': credentials refused")
    assert "PROXMOX_NAS_TOKEN" in line
    assert "00000000-dead-beef" not in result.stdout
    # Nothing after a refused token is guessed at; the other host is unaffected.
    assert not lines(result, "[ OK ] Proxmox 'nas': privileges")
    assert one_line(result, "[ OK ] Proxmox 'smart-home': privileges to read")


def test_a_privilege_separated_token_without_acl_fails_privileges(lab: Lab, tmp_path: Path) -> None:
    lab.proxmox["nas"].add_token(BARE_TOKEN, set())
    result = run_doctor(lab, tmp_path, PROXMOX_NAS_TOKEN=BARE_TOKEN)
    assert result.returncode == 1
    assert one_line(result, "[ OK ] Proxmox 'nas': API token panel@pve!dashboard accepted")
    assert one_line(result, "[ OK ] Proxmox 'nas': node 'nas' found")  # a 403 proves the node
    line = one_line(result, "[FAIL] Proxmox 'nas': privileges")
    assert "guest lists come back empty" in line
    assert "Privilege Separation" in line and "PVEAuditor" in line
    assert one_line(result, "[WARN] Proxmox 'nas': power actions")


def test_an_auditor_token_warns_about_power_actions(lab: Lab, tmp_path: Path) -> None:
    lab.proxmox["nas"].add_token(AUDITOR_TOKEN, {"Sys.Audit", "VM.Audit"})
    result = run_doctor(lab, tmp_path, PROXMOX_NAS_TOKEN=AUDITOR_TOKEN)
    assert result.returncode == 0, result.stdout  # a read-only panel is a valid choice
    assert one_line(result, "[ OK ] Proxmox 'nas': privileges to read")
    line = one_line(result, "[WARN] Proxmox 'nas': power actions")
    assert "VM.PowerMgmt" in line and "PVEVMUser" in line
    assert "1 warning," in result.stdout.splitlines()[-1]


def test_an_unreachable_server_fails_reachable(lab: Lab, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{closed_port()}"
    result = run_doctor(lab, tmp_path, PROXMOX_NAS_URL=url)
    assert result.returncode == 1
    line = one_line(result, f"[FAIL] Proxmox 'nas': unreachable at {url}")
    assert "PROXMOX_NAS_URL" in line
    assert not lines(result, "[ OK ] Proxmox 'nas'") and not lines(result, "[WARN] Proxmox 'nas'")


def test_verifying_a_self_signed_host_against_the_system_cas_fails_tls(
    lab: Lab, tmp_path: Path
) -> None:
    result = run_doctor(lab, tmp_path, PROXMOX_NAS_VERIFY_SSL="true")
    assert result.returncode == 1
    line = one_line(result, "[FAIL] Proxmox 'nas': TLS certificate not trusted")
    assert "PROXMOX_NAS_VERIFY_SSL" in line and "pve-root-ca.pem" in line
    assert one_line(result, "[ OK ] Proxmox 'nas': reachable")


def test_a_wrong_mqtt_password_fails_credentials(lab: Lab, tmp_path: Path) -> None:
    result = run_doctor(lab, tmp_path, MQTT_API_PASSWORD="not-the-password")
    assert result.returncode == 1
    line = one_line(result, "[FAIL] MQTT API: credentials refused")
    assert "MQTT_API_USERNAME" in line and "MQTT_API_PASSWORD" in line
    assert "not-the-password" not in result.stdout
    assert one_line(result, "[ OK ] MQTT API: reachable")


def test_unconfigured_upstreams_are_informational(lab: Lab, tmp_path: Path) -> None:
    result = run_doctor(lab, tmp_path, AUTOMATION_API_URL="", AI_HUB_URL="")
    assert result.returncode == 0, result.stdout
    assert one_line(result, "[INFO] Automation API: not configured")
    assert one_line(result, "[INFO] AI hub: not configured")
    assert result.stdout.splitlines()[-1].endswith("2 not configured: nothing is broken")


def test_a_configuration_error_exits_2(lab: Lab, tmp_path: Path) -> None:
    lab_settings(lab, tmp_path)
    env_file = tmp_path / ".env"
    env_file.write_text(env_file.read_text() + "PROXMOX_NAS_TOKEN=not-a-token\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    result = subprocess.run(
        [sys.executable, "-m", "homepanel", "doctor", "--env-file", str(env_file)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PROXMOX_NAS_TOKEN: must look like" in result.stderr
    assert "not-a-token" not in result.stderr + result.stdout


# -- diagnose() directly --------------------------------------------------------------------


async def test_a_wrong_node_name_fails_node(lab: Lab, tmp_path: Path) -> None:
    checks = await diagnose(lab_settings(lab, tmp_path, PROXMOX_NAS_NODE="nas2"))
    [node] = [c for c in checks if c.name == "Proxmox 'nas'" and c.item == "node"]
    assert node.ok is False
    assert "PROXMOX_NAS_NODE" in node.message and "nas2" in node.message


async def test_a_ca_file_that_is_no_certificate_fails_tls(lab: Lab, tmp_path: Path) -> None:
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("this is not a certificate\n")
    checks = await diagnose(lab_settings(lab, tmp_path, PROXMOX_NAS_VERIFY_SSL=str(not_a_ca)))
    assert verdicts(checks, "Proxmox 'nas'") == {"TLS": False}
    [tls] = [c for c in checks if c.name == "Proxmox 'nas'"]
    assert "PROXMOX_NAS_VERIFY_SSL" in tls.message


async def test_frigate_without_verification_warns(lab: Lab, tmp_path: Path) -> None:
    checks = await diagnose(lab_settings(lab, tmp_path, FRIGATE_VERIFY_SSL="false"))
    assert verdicts(checks, "Frigate") == {"reachable": True, "TLS": None, "credentials": True}


async def test_upstreams_are_checked_concurrently(lab: Lab, tmp_path: Path) -> None:
    for host in lab.proxmox.values():
        host.faults.auth_delay = 1.0
    settings = lab_settings(
        lab, tmp_path, PROXMOX_NAS_TOKEN=WRONG_TOKEN, PROXMOX_SMART_TOKEN=WRONG_TOKEN
    )
    started = time.monotonic()
    checks = await diagnose(settings)
    assert time.monotonic() - started < 1.9  # two 1 s refusals, side by side
    for name in ("Proxmox 'nas'", "Proxmox 'smart-home'"):
        assert verdicts(checks, name)["credentials"] is False


# -- reading /access/permissions ------------------------------------------------------------

SERVER = ProxmoxServer(
    key="NAS", id="nas", name="NAS", node="nas", url="https://192.0.2.10:8006",
    token=SecretStr(AUDITOR_TOKEN),
)  # fmt: skip


@pytest.mark.parametrize(
    ("tree", "reads", "power"),
    [
        # An ACL on / that propagates reaches /nodes/nas and /vms.
        ({"/": {"Sys.Audit": True, "VM.Audit": True, "VM.PowerMgmt": True}}, True, True),
        # Without propagation it stays on / itself.
        ({"/": {"Sys.Audit": False, "VM.Audit": False}}, False, None),
        # Rights on single guests or a pool: some guests only, a warning.
        (
            {
                "/nodes": {"Sys.Audit": True},
                "/vms/100": {"VM.Audit": True, "VM.PowerMgmt": True},
                "/pool/media": {"VM.Audit": True},
            },
            None,
            None,
        ),
        # An ACL on the node itself.
        ({"/nodes/nas": {"Sys.Audit": False}, "/vms": {"VM.Audit": True}}, True, None),
        ({"/nodes/other": {"Sys.Audit": True}, "/vms": {"VM.Audit": True}}, False, None),
    ],
)
def test_privileges_are_read_like_proxmox_inherits_them(
    tree: dict[str, dict[str, bool]], reads: bool | None, power: bool | None
) -> None:
    assert _read_privileges("Proxmox 'nas'", SERVER, tree).ok is reads
    assert _power_privileges("Proxmox 'nas'", SERVER, tree).ok is power


def test_partial_rights_name_the_paths() -> None:
    tree = {"/nodes": {"Sys.Audit": True}, "/vms/100": {"VM.Audit": True, "VM.PowerMgmt": True}}
    assert "/vms/100" in _read_privileges("Proxmox 'nas'", SERVER, tree).message
    assert "/vms/100" in _power_privileges("Proxmox 'nas'", SERVER, tree).message
