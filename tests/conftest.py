from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from homepanel.simulator.lab import Lab
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
