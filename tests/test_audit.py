"""The audit log: every state-changing action, its outcome, newest first, never a payload."""

from __future__ import annotations

from collections.abc import Callable

from homepanel.simulator.lab import Lab
from tests.harness import ACCESS_TOKEN, AppServer, assert_error, authed

AppFactory = Callable[..., AppServer]


def test_actions_are_audited(custom_app: AppFactory, lab: Lab) -> None:
    server = custom_app()
    with server.client() as client:
        client.post("/api/auth/login", json={"token": "wrong"})
    with authed(server) as api:
        api.post("/api/proxmox/nas/vm/100/start")
        api.post("/api/proxmox/nas/vm/101/restart")  # refused: VM 101 not running
        api.post("/api/automations/main/kitchen/motion_light/restart")
        api.post(
            "/api/mqtt/publish", json={"topic": "home/door/code", "payload": {"pin": "4471-secret"}}
        )
        api.delete("/api/ai/chat/no-such-process")
        page = api.get("/api/audit").json()
        entries = page["entries"]
        summary = [(e["action"], e["target"], e["outcome"]) for e in entries]
        assert summary == [
            ("ai.cancel", "no-such-process", "NOT_FOUND"),
            ("mqtt.publish", "home/door/code", "ok"),
            ("automation.restart", "main/kitchen/motion_light", "ok"),
            ("vm.restart", "nas/101", "ACTION_REFUSED"),
            ("vm.start", "nas/100", "ok"),
            ("login", "panel", "ok"),
            ("login", "panel", "INVALID_ACCESS_TOKEN"),
        ]
        assert all(e["client_ip"] == "127.0.0.1" and e["time"] for e in entries)
        assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
        assert "4471-secret" not in str(page) and ACCESS_TOKEN not in str(page)

        first = api.get("/api/audit", params={"limit": 3}).json()
        assert len(first["entries"]) == 3 and first["next_before"] == first["entries"][-1]["id"]
        rest = api.get("/api/audit", params={"before": first["next_before"]}).json()
        assert [e["id"] for e in first["entries"] + rest["entries"]] == [e["id"] for e in entries]
        assert rest["next_before"] is None

        for params in ({"limit": 0}, {"limit": 1001}, {"before": "x"}, {"before": -1}):
            assert_error(api.get("/api/audit", params=params), 422)
        api.post("/api/auth/logout")
    with server.client() as client:
        assert_error(client.get("/api/audit"), 401)


async def test_entries_are_kept_one_year(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    from homepanel.audit.log import RETENTION, AuditLog
    from homepanel.store.db import Database

    db = await Database.open(tmp_path / "metrics.db")
    log = AuditLog(db)
    await log.record("192.0.2.1", "vm.start", "nas/100", "ok")
    await log.record("192.0.2.1", "vm.stop", "nas/100", "ok")
    await db.execute(
        "UPDATE audit_log SET ts = ? WHERE action = 'vm.start'", (time.time() - RETENTION - 60,)
    )
    await log.expire(time.time())
    assert [e["action"] for e in await log.entries(10, None)] == ["vm.stop"]
    await db.close()
