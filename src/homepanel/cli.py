"""`homepanel serve | demo | check-config | doctor`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path

from dotenv import dotenv_values
from fastapi import FastAPI
from pydantic import SecretStr

from homepanel import __version__
from homepanel.app import create_app
from homepanel.core.config import ConfigError, Settings, load_settings
from homepanel.core.logging import setup_logging
from homepanel.core.server import Server, config
from homepanel.doctor import diagnose, failed, summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homepanel", description=__doc__)
    parser.add_argument("--version", action="version", version=f"homepanel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the service from the environment and .env"),
        ("demo", "run the service against a simulated home lab on loopback"),
        ("check-config", "validate the configuration and exit"),
        ("doctor", "check every configured upstream and say what to fix"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--env-file", type=Path, default=Path(".env"), metavar="PATH")
        if name not in ("check-config", "doctor"):
            command.add_argument("--host", help="listen address (default: HOST)")
            command.add_argument("--port", type=int, help="listen port (default: PORT)")
    return parser


def _load(env_file: Path, **overrides: object) -> Settings | None:
    try:
        return load_settings(env_file, **overrides)
    except ConfigError as exc:
        print("Configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _run(app: FastAPI, host: str, port: int) -> int:
    Server(config(app, host=host, port=port), app).run()
    return 0


def serve(args: argparse.Namespace) -> int:
    settings = _load(args.env_file)
    if settings is None:
        return 2
    if settings.enable_mock_data and settings.access_token is None:
        settings.access_token = SecretStr(secrets.token_urlsafe(18))
        generated = settings.access_token.get_secret_value()
        print(f"ENABLE_MOCK_DATA without ACCESS_TOKEN: generated the access token {generated}")
    setup_logging(settings.effective_log_level, settings.log_dir, settings.secrets())
    app = create_app(settings)
    return _run(app, args.host or settings.host, args.port or settings.port)


def demo(args: argparse.Namespace) -> int:
    """The service with no configuration at all, against the simulated lab on 127.0.0.1."""
    configured = dotenv_values(args.env_file) if args.env_file.is_file() else {}
    overrides: dict[str, object] = {"enable_mock_data": True}
    if "ENV" not in os.environ and "ENV" not in configured:
        overrides["env"] = "development"  # the cookie is then usable over plain http://
    settings = _load(args.env_file, **overrides)
    if settings is None:
        return 2
    if settings.access_token is None:
        settings.access_token = SecretStr(secrets.token_urlsafe(18))
    host = args.host or "127.0.0.1"
    port = args.port or settings.port
    setup_logging(settings.effective_log_level, settings.log_dir, settings.secrets())

    def announce(app: FastAPI) -> None:
        base = f"http://{host}:{port}"
        jwt = app.state.tokens.issue()
        lab = app.state.lab
        cut_url = f"{lab.urls['mqtt']}/_sim/cut-streams"
        mqtt_user = ":".join(lab.users["mqtt"])
        access_token = settings.access_token.get_secret_value()  # type: ignore[union-attr]
        print(
            f"\nHome Panel demo: a simulated home lab on 127.0.0.1\n"
            f"  API          {base}   (interactive docs: {base}/docs)\n"
            f"  Access token {access_token}\n"
            f"  Ready JWT    {jwt}\n\n"
            f"Try:\n"
            f'  export AUTH="Authorization: Bearer {jwt}"\n'
            f'  curl -H "$AUTH" {base}/api/proxmox/servers\n'
            f'  curl -H "$AUTH" {base}/api/proxmox/nas/vms\n'
            f'  curl -X POST -H "$AUTH" {base}/api/proxmox/nas/vm/100/start\n'
            f'  curl -H "$AUTH" {base}/api/frigate/events\n'
            f'  curl -H "$AUTH" -o doorbell.jpg {base}/api/frigate/camera/cam-doorbell/snapshot\n'
            f'  curl -H "$AUTH" {base}/api/automations/main/kitchen/motion_light\n'
            f"In a browser, log in once (POST /api/auth/login from {base}/docs sets the cookie),\n"
            f"then open {base}/api/frigate/camera/cam-doorbell/snapshot\n"
            f'Live MQTT events: curl -N -H "$AUTH" {base}/api/mqtt/stream\n'
            f"Cut the simulated MQTT API's stream (the panel reconnects, tabs stay):\n"
            f"  curl -X POST -u {mqtt_user} {cut_url}\n",
            flush=True,
        )

    return _run(create_app(settings, announce=announce), host, port)


def check_config(args: argparse.Namespace) -> int:
    settings = _load(args.env_file)
    if settings is None:
        return 1
    servers = ", ".join(f"{s.id} ({s.host})" for s in settings.proxmox_servers) or "none"
    print(f"Configuration OK ({settings.env})")
    print(f"  Proxmox servers: {servers}")
    for name, url in (
        ("Frigate", settings.frigate_url),
        ("MQTT API", settings.mqtt_api_url),
        ("Automation API", settings.automation_api_url),
        ("AI hub", settings.ai_hub_url),
    ):
        print(f"  {name}: {'configured' if url else 'not configured'}")
    print(f"  Database: {settings.database_path}")
    return 0


def doctor(args: argparse.Namespace) -> int:
    """One line per check of every configured upstream; 1 if any failed, 2 if misconfigured."""
    settings = _load(args.env_file)
    if settings is None:
        return 2
    logging.getLogger("homepanel").addHandler(logging.NullHandler())  # the verdicts say it all
    checks = asyncio.run(diagnose(settings))
    for check in checks:
        print(check.line())
    print(summary(checks))
    return 1 if failed(checks) else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"serve": serve, "demo": demo, "check-config": check_config, "doctor": doctor}
    command = commands[args.command]
    return command(args)
