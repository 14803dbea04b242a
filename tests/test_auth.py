"""Login, JWT checks, cookie + CSRF, logout, rate limit and lockout, secret persistence."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt as pyjwt
import pytest

from homepanel.core.auth import COOKIE_NAME
from tests.harness import ACCESS_TOKEN, AppServer, RunningLab, assert_error, lab_settings

PROTECTED = "/api/proxmox/servers"
ORIGIN = "http://localhost:3000"


def secret_of(server: AppServer) -> str:
    return (server.settings.data_dir / "jwt_secret").read_text().strip()


def forge(claims: dict, key: str, algorithm: str = "HS256") -> str:
    return pyjwt.encode(claims, key, algorithm=algorithm)


def claims_of(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def test_login_returns_jwt_and_cookie(app_server: AppServer) -> None:
    with app_server.client() as client:
        response = client.post("/api/auth/login", json={"token": ACCESS_TOKEN})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["expires_in"] == 7 * 86400
    claims = claims_of(body["jwt"])
    assert {"exp", "iat", "jti", "atf"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 7 * 86400
    assert pyjwt.get_unverified_header(body["jwt"])["alg"] == "HS256"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}={body['jwt']};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # development over http; production adds it (below)


def test_wrong_token_gets_the_spec_message(app_server: AppServer) -> None:
    with app_server.client() as client:
        response = client.post("/api/auth/login", json={"token": ACCESS_TOKEN + "x"})
        assert_error(response, 401, "INVALID_ACCESS_TOKEN")
        assert response.json()["detail"] == "Неверный токен доступа"
        assert_error(client.post("/api/auth/login", json={"token": 12345}), 422)
        assert_error(client.post("/api/auth/login", json={}), 422)
        assert_error(client.post("/api/auth/login", content=b"not json"), 422)


def test_bearer_and_cookie_both_authenticate(app_server: AppServer, jwt: str) -> None:
    with app_server.client() as client:
        assert_error(client.get(PROTECTED), 401, "UNAUTHORIZED")
        assert client.get(PROTECTED, headers={"Authorization": f"Bearer {jwt}"}).status_code == 200
    with app_server.client(cookies={COOKIE_NAME: jwt}) as client:
        assert client.get(PROTECTED).status_code == 200


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens(server: AppServer, jwt: str) -> dict[str, str]:
    secret = secret_of(server)
    good = claims_of(jwt)
    now = int(time.time())
    header, payload, signature = jwt.split(".")
    return {
        "garbage": "not-a-jwt",
        "tampered payload": f"{header}.{b64({**good, 'exp': now + 10**8})}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong key": forge(good, "x" * 64),
        "expired": forge({**good, "iat": now - 7200, "exp": now - 3600}, secret),
        "no exp": forge({k: v for k, v in good.items() if k != "exp"}, secret),
        "no jti": forge({k: v for k, v in good.items() if k != "jti"}, secret),
        "old access token": forge({**good, "atf": "0" * 32}, secret),
        "HS512": forge(good, secret, "HS512"),
        "huge": "a" * 10_000,
    }


def test_attack_tokens_all_get_401(app_server: AppServer, jwt: str) -> None:
    with app_server.client() as client:
        for name, token in bad_tokens(app_server, jwt).items():
            response = client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, name
            assert_error(response, 401, "UNAUTHORIZED")
            client.cookies.set(COOKIE_NAME, token)
            assert client.get(PROTECTED).status_code == 401, f"{name} (cookie)"
            client.cookies.clear()
        for header in ("Basic abc", "Bearer", jwt, f"Token {jwt}"):
            assert_error(client.get(PROTECTED, headers={"Authorization": header}), 401)


def test_a_token_once_accepted_still_expires(app_server: AppServer, jwt: str) -> None:
    """Signatures are checked once per token, expiry on every use."""
    now = int(time.time())
    # Past `exp` but inside the 30 s leeway for about a second more.
    closing = forge({**claims_of(jwt), "iat": now - 60, "exp": now - 29}, secret_of(app_server))
    with app_server.client(headers={"Authorization": f"Bearer {closing}"}) as client:
        assert client.get(PROTECTED).status_code == 200
        time.sleep(1.5)
        assert_error(client.get(PROTECTED), 401, "UNAUTHORIZED")


def test_host_header_tricks_do_not_bypass_auth(app_server: AppServer) -> None:
    with app_server.client() as client:
        for host in ("localhost/api/auth/login?", "localhost/health#", "x/health?a="):
            response = client.get(PROTECTED, headers={"Host": host})
            assert response.status_code in (400, 401), (host, response.status_code)
            assert response.status_code != 200


def test_cookie_state_change_needs_csrf_proof(app_server: AppServer) -> None:
    jwt = app_server.login()
    with app_server.client(cookies={COOKIE_NAME: jwt}) as client:
        assert_error(client.post("/api/auth/logout"), 403, "CSRF_CHECK_FAILED")
        assert_error(
            client.post("/api/auth/logout", headers={"Origin": "https://evil.example"}), 403
        )
        assert client.get(PROTECTED).status_code == 200  # reads need no proof
        assert client.post("/api/auth/logout", headers={"Origin": ORIGIN}).status_code == 200
    jwt = app_server.login()
    with app_server.client(cookies={COOKIE_NAME: jwt}) as client:
        assert (
            client.post("/api/auth/logout", headers={"X-Requested-With": "fetch"}).status_code
            == 200
        )


def test_logout_revokes_and_clears_cookie(app_server: AppServer) -> None:
    jwt = app_server.login()
    headers = {"Authorization": f"Bearer {jwt}"}
    with app_server.client() as client:
        assert client.get(PROTECTED, headers=headers).status_code == 200
        response = client.post("/api/auth/logout", headers=headers)
        assert response.json() == {"success": True}
        assert (
            f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
            or "Max-Age=0" in response.headers["set-cookie"]
        )
        assert_error(client.get(PROTECTED, headers=headers), 401)
        assert_error(client.post("/api/auth/logout", headers=headers), 401)
        # Other sessions are untouched.
        assert (
            client.get(
                PROTECTED, headers={"Authorization": f"Bearer {app_server.login()}"}
            ).status_code
            == 200
        )


def test_cors_allows_configured_origin_with_credentials(app_server: AppServer) -> None:
    with app_server.client() as client:
        preflight = client.options(
            PROTECTED,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert preflight.headers["access-control-allow-credentials"] == "true"
        evil = client.options(
            PROTECTED,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in evil.headers


@pytest.fixture
def strict_server(running_lab: RunningLab, tmp_path: Path) -> Iterator[AppServer]:
    """A production app with the default login limit (5/minute)."""
    settings = lab_settings(
        running_lab.lab, tmp_path, ENV="production", RATE_LIMIT_LOGIN="5/minute"
    )
    with AppServer(settings) as server:
        yield server


def test_login_rate_limit_and_lockout(strict_server: AppServer) -> None:
    with strict_server.client() as client:
        answers = [client.post("/api/auth/login", json={"token": f"wrong{i}"}) for i in range(6)]
        assert [r.status_code for r in answers] == [401] * 5 + [429]
        limited = assert_error(answers[-1], 429, "RATE_LIMITED")
        assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
        assert "retry in" in limited["detail"]
        # Even the right token is refused while limited.
        assert client.post("/api/auth/login", json={"token": ACCESS_TOKEN}).status_code == 429

    # The lockout counts wrong tokens in a row, whatever the per-minute limit allows.
    lockout = strict_server.app.state.login_lockout
    for _ in range(10):
        lockout.failed("203.0.113.9")
    with pytest.raises(Exception, match="locked out") as caught:
        lockout.check("203.0.113.9")
    assert caught.value.headers["Retry-After"] in {"900", "899"}  # type: ignore[attr-defined]
    lockout.check("203.0.113.10")  # another address is not affected


def test_tenth_wrong_token_locks_the_address(running_lab: RunningLab, tmp_path: Path) -> None:
    settings = lab_settings(running_lab.lab, tmp_path, RATE_LIMIT_LOGIN="100/minute")
    with AppServer(settings) as server, server.client() as client:
        for _ in range(9):
            assert client.post("/api/auth/login", json={"token": "wrong"}).status_code == 401
        assert client.post("/api/auth/login", json={"token": ACCESS_TOKEN}).status_code == 200
        # A success resets the count: nine more wrong ones still do not lock.
        for _ in range(9):
            assert client.post("/api/auth/login", json={"token": "wrong"}).status_code == 401
        assert client.post("/api/auth/login", json={"token": "wrong"}).status_code == 401  # tenth
        locked = client.post("/api/auth/login", json={"token": ACCESS_TOKEN})
        assert_error(locked, 429, "RATE_LIMITED")
        assert 890 <= int(locked.headers["retry-after"]) <= 900


@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    running_lab: RunningLab, tmp_path: Path, trusted: bool
) -> None:
    variables = {"RATE_LIMIT_LOGIN": "2/minute"}
    if trusted:
        variables["TRUSTED_PROXIES"] = "127.0.0.0/8"
    settings = lab_settings(running_lab.lab, tmp_path, **variables)
    with AppServer(settings) as server, server.client() as client:

        def login_from(address: str) -> int:
            headers = {"X-Forwarded-For": f"{address}, 127.0.0.1"}
            return client.post("/api/auth/login", json={"token": "x"}, headers=headers).status_code

        assert [login_from("198.51.100.1") for _ in range(3)] == [401, 401, 429]
        # Behind a trusted proxy, another client has its own budget; otherwise the header is
        # a lie anyone can tell, and the peer address is what counts.
        assert login_from("198.51.100.2") == (401 if trusted else 429)


def test_production_cookie_is_secure(strict_server: AppServer) -> None:
    with strict_server.client() as client:
        response = client.post("/api/auth/login", json={"token": ACCESS_TOKEN})
    assert "Secure" in response.headers["set-cookie"]


def test_secret_persists_with_mode_0600_and_restart_keeps_logins(
    running_lab: RunningLab, tmp_path: Path
) -> None:
    settings = lab_settings(running_lab.lab, tmp_path)
    with AppServer(settings) as server:
        jwt = server.login()
        revoked = server.login()
        with server.client() as client:
            client.post("/api/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    secret_file = settings.data_dir / "jwt_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 64
    with AppServer(settings) as server, server.client() as client:
        assert client.get(PROTECTED, headers={"Authorization": f"Bearer {jwt}"}).status_code == 200
        assert_error(client.get(PROTECTED, headers={"Authorization": f"Bearer {revoked}"}), 401)


def test_changing_access_token_logs_everyone_out(running_lab: RunningLab, tmp_path: Path) -> None:
    with AppServer(lab_settings(running_lab.lab, tmp_path)) as server:
        jwt = server.login()
    changed = lab_settings(running_lab.lab, tmp_path, ACCESS_TOKEN="a-brand-new-access-token")
    with AppServer(changed) as server, server.client() as client:
        assert_error(client.get(PROTECTED, headers={"Authorization": f"Bearer {jwt}"}), 401)


def test_world_readable_secret_refuses_to_start(running_lab: RunningLab, tmp_path: Path) -> None:
    settings = lab_settings(running_lab.lab, tmp_path)
    secret_file = settings.data_dir / "jwt_secret"
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text("s" * 64)
    os.chmod(secret_file, 0o644)
    with pytest.raises(RuntimeError, match="did not start"), AppServer(settings):
        pass


def test_configured_jwt_secret_is_used(running_lab: RunningLab, tmp_path: Path) -> None:
    secret = "k" * 48
    with AppServer(lab_settings(running_lab.lab, tmp_path, JWT_SECRET=secret)) as server:
        token = server.login()
        pyjwt.decode(token, secret, algorithms=["HS256"])
        assert not (server.settings.data_dir / "jwt_secret").exists()


def test_health_needs_no_login(app_server: AppServer) -> None:
    with app_server.client() as client:
        response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["database"] == "ok"
    assert isinstance(body["uptime_seconds"], int) and body["version"]


def test_unknown_routes_and_methods_use_the_envelope(api: httpx2.Client) -> None:
    assert_error(api.get("/api/nothing/here"), 404, "NOT_FOUND")
    assert_error(api.delete("/api/proxmox/servers"), 405, "METHOD_NOT_ALLOWED")
