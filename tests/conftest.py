from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from homepanel.simulator.lab import Lab
from homepanel.store.db import Database
from tests.harness import AppServer, RunningLab, lab_settings


@pytest.fixture(scope="session")
def running_lab() -> Iterator[RunningLab]:
    lab = RunningLab()
    yield lab
    lab.close()


@pytest.fixture
def lab(running_lab: RunningLab) -> Iterator[Lab]:
    """The lab, with every fault cleared and every guest back in place after the test."""
    yield running_lab.lab
    running_lab.reset()


@pytest.fixture(scope="module")
def app_server(
    running_lab: RunningLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    """One app per test module, against the lab."""
    settings = lab_settings(running_lab.lab, tmp_path_factory.mktemp("app"))
    with AppServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def jwt(app_server: AppServer) -> str:
    return app_server.login()


@pytest.fixture
def api(app_server: AppServer, jwt: str, lab: Lab) -> Iterator[httpx2.Client]:
    """A logged-in client of the module's app."""
    with app_server.client(headers={"Authorization": f"Bearer {jwt}"}) as client:
        yield client


@pytest.fixture
def custom_app(running_lab: RunningLab, tmp_path: Path) -> Iterator[Callable[..., AppServer]]:
    """Start apps with extra variables on top of the lab's configuration."""
    servers: list[AppServer] = []

    def start(**variables: str) -> AppServer:
        directory = tmp_path / str(len(servers))
        server = AppServer(lab_settings(running_lab.lab, directory, **variables))
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
    running_lab.reset()


@pytest.fixture(autouse=True)
async def databases_closed(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Closes the databases a test opened on its own event loop, when it failed before it
    closed them: their connections' threads would keep pytest from exiting, and so from
    reporting the failure. (An app under test closes its own, on its server's loop.)"""
    opened: list[Database] = []
    open_database = Database.open

    async def tracked(path: Path) -> Database:
        db = await open_database(path)
        if asyncio.get_running_loop() is loop:
            opened.append(db)
        return db

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(Database, "open", tracked)
    yield
    for db in opened:
        await db.close()  # a no-op if closed
