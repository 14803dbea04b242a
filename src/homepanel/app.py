"""`create_app(settings)`: wiring only. Routers, error handlers, CORS and the lifespan.

The lifespan opens what the routes use (the database, the JWT service, one client per upstream)
and closes it in reverse order. In demo mode it first starts the simulated lab and points the
ordinary clients at it: there is no second, fake code path.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from homepanel import __version__
from homepanel.ai.client import AiClient
from homepanel.ai.router import router as ai_router
from homepanel.audit.log import AuditLog
from homepanel.audit.router import router as audit_router
from homepanel.auth.router import router as auth_router
from homepanel.automations.client import AutomationClient
from homepanel.automations.collector import AutomationCollector
from homepanel.automations.router import router as automations_router
from homepanel.core.auth import LoginLockout, TokenService, load_or_create_secret
from homepanel.core.bodylimit import BodyLimitMiddleware
from homepanel.core.config import Settings
from homepanel.core.errors import install_error_handlers
from homepanel.core.observability import MetricsMiddleware, Observability
from homepanel.core.ratelimit import RateLimiter
from homepanel.core.schedule import SYSTEM_CLOCK, Clock, every
from homepanel.frigate.client import FrigateClient
from homepanel.frigate.router import router as frigate_router
from homepanel.health.router import router as health_router
from homepanel.metrics.points import EncodedHistory
from homepanel.metrics.router import router as metrics_router
from homepanel.mqtt.client import MqttClient
from homepanel.mqtt.router import router as mqtt_router
from homepanel.mqtt.tracker import DeviceTracker
from homepanel.proxmox.client import ProxmoxClient
from homepanel.proxmox.collector import ProxmoxCollector
from homepanel.proxmox.router import router as proxmox_router
from homepanel.store.db import Database
from homepanel.store.metrics import (
    FIVE_MIN,
    HOUR,
    MINUTE,
    RAW,
    THIRTY_MIN,
    MetricsStore,
    Retention,
)

logger = logging.getLogger(__name__)

Announce = Callable[[FastAPI], None]


MAINTENANCE_INTERVAL = 60  # seconds between roll-up and retention cycles
AUDIT_EXPIRY_INTERVAL = 3600


def create_app(
    settings: Settings, *, announce: Announce | None = None, clock: Clock = SYSTEM_CLOCK
) -> FastAPI:
    """The ASGI app for `settings`. `announce` runs once everything is open (the demo banner);
    `clock` drives the collectors and the metrics queries (tests inject their own)."""
    if settings.access_token is None:
        raise ValueError("settings.access_token must be set before the app is created")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await _open(app, stack)
            _freeze_start_up(stack)
            if announce is not None:
                announce(app)
            logger.info("Home Panel %s started (%s)", __version__, app.state.settings.env)
            yield
            logger.info("Home Panel shutting down")

    app = FastAPI(
        title="Home Panel",
        version=__version__,
        description="One login and one API for a home lab's Proxmox, Frigate, MQTT, "
        "automations and AI hub.",
        lifespan=lifespan,
        # Metrics are Prometheus's (/metrics). Off, OpenTelemetry's are not looked for on
        # every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.started_at = time.monotonic()
    app.state.clock = clock
    app.state.trusted_networks = [
        ipaddress.ip_network(network, strict=False) for network in settings.trusted_proxies
    ]
    app.state.rate_limiter = RateLimiter()
    app.state.login_lockout = LoginLockout()
    app.state.proxmox = {}
    app.state.upstreams = {}

    app.state.hubs = []  # the live streams shared by browsers, ended first on shutdown
    app.state.observability = Observability(app.state.hubs)
    install_error_handlers(app, production=settings.is_production)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Requested-With", "Last-Event-ID"],
        max_age=600,
    )
    app.add_middleware(BodyLimitMiddleware)
    # Outermost: it sees every answer, CORS preflights and error responses included.
    app.add_middleware(MetricsMiddleware, observability=app.state.observability)
    app.include_router(health_router)
    app.include_router(auth_router)
    for router in (
        proxmox_router,
        frigate_router,
        mqtt_router,
        automations_router,
        ai_router,
        metrics_router,
        audit_router,
    ):
        app.include_router(router)
    return app


async def _open(app: FastAPI, stack: AsyncExitStack) -> None:
    settings: Settings = app.state.settings
    if settings.enable_mock_data:
        from homepanel.simulator.lab import Lab  # demo wiring only: the app never needs it

        lab = await stack.enter_async_context(Lab())
        settings = settings.model_copy(update=lab.settings_update())
        app.state.settings = settings
        app.state.lab = lab

    db = await Database.open(settings.database_path)
    stack.push_async_callback(db.close)
    app.state.db = db

    secret = settings.jwt_secret
    jwt_secret = (
        secret.get_secret_value()
        if secret is not None
        else load_or_create_secret(settings.data_dir / "jwt_secret")
    )
    assert settings.access_token is not None
    tokens = TokenService(
        jwt_secret, settings.access_token.get_secret_value(), settings.jwt_ttl, db
    )
    await tokens.load_revoked()
    app.state.tokens = tokens

    observability: Observability = app.state.observability
    for server in settings.proxmox_servers:
        key = f"proxmox:{server.id}"
        observability.upstream(key)
        client = ProxmoxClient(server, on_call=partial(observability.upstream_call, key))
        stack.push_async_callback(client.aclose)
        app.state.proxmox[server.id] = client
    for name, url, client_class in (
        ("frigate", settings.frigate_url, FrigateClient),
        ("mqtt", settings.mqtt_api_url, MqttClient),
        ("automations", settings.automation_api_url, AutomationClient),
        ("ai", settings.ai_hub_url, AiClient),
    ):
        observability.upstream(name, configured=url is not None)
        if url is not None:  # unset: "not configured", its endpoints answer 503
            upstream = client_class(settings, on_call=partial(observability.upstream_call, name))
            stack.push_async_callback(upstream.aclose)
            app.state.upstreams[name] = upstream
    if "mqtt" in app.state.upstreams:
        app.state.hubs.append(app.state.upstreams["mqtt"].hub)

    app.state.metrics = MetricsStore(db, _retention(settings))
    app.state.encoded_history = EncodedHistory(app.state.metrics)  # the routes' JSON cache
    stack.push_async_callback(app.state.metrics.flush)  # after the jobs stop, before db.close
    app.state.audit = AuditLog(db)
    # Pushed last, so stopped first: no job may outlive the clients and the database.
    stack.push_async_callback(_stop, _start_jobs(app, settings))


def _freeze_start_up(stack: AsyncExitStack) -> None:
    """Leave start-up's objects (some 90,000: modules, models, clients), which live as long as
    the app, out of the garbage collector's full passes. One that walked them all took 26 ms
    on a 2-core machine: a pause for the request that ran then, often one that had just made
    many objects, such as a year of metrics (bench/README.md)."""
    gc.collect()
    gc.freeze()
    stack.callback(gc.unfreeze)


def _retention(settings: Settings) -> Retention:
    return Retention(
        tiers={
            RAW: settings.metrics_retention_raw,
            MINUTE: settings.metrics_retention_minute,
            FIVE_MIN: settings.metrics_retention_five_min,
            THIRTY_MIN: settings.metrics_retention_thirty_min,
            HOUR: settings.metrics_retention_hour,
        },
        device_states=settings.metrics_retention_device_states,
    )


def _start_jobs(app: FastAPI, settings: Settings) -> list[asyncio.Task[None]]:
    """The audit log's expiry and, unless metrics are off, the collectors, the device tracker
    and the roll-ups, as background tasks."""
    clock: Clock = app.state.clock
    store: MetricsStore = app.state.metrics
    observability: Observability = app.state.observability

    def periodic(
        interval: int, job: Callable[[float], Awaitable[None]], name: str
    ) -> Awaitable[None]:
        return every(interval, job, name=name, clock=clock, on_done=on_done)

    def on_done(name: str, ok: bool, seconds: float) -> None:
        observability.job_done(name, ok)
        if name == "metrics roll-up":
            observability.rollup_duration.observe(seconds)

    jobs = [periodic(AUDIT_EXPIRY_INTERVAL, app.state.audit.expire, "audit expiry")]
    if not settings.metrics_enabled:
        return [asyncio.create_task(job) for job in jobs]
    jobs.append(periodic(MAINTENANCE_INTERVAL, store.maintain, "metrics roll-up"))
    if app.state.proxmox:
        proxmox = ProxmoxCollector(app.state.proxmox.values(), store, clock)
        jobs.append(periodic(settings.metrics_interval_servers, proxmox.collect_servers, "servers"))
        jobs.append(periodic(settings.metrics_interval_vms, proxmox.collect_guests, "guests"))
    if (automations := app.state.upstreams.get("automations")) is not None:
        collector = AutomationCollector(automations, store, clock)
        jobs.append(
            periodic(settings.metrics_interval_automations, collector.collect, "automations")
        )
    if (mqtt := app.state.upstreams.get("mqtt")) is not None:
        tracker = DeviceTracker(mqtt.hub, store, settings.metrics_device_ignored_keys, clock)
        jobs.append(tracker.run())
    return [asyncio.create_task(job) for job in jobs]


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
