"""What the backend costs on the hot path: a Proxmox read through it, straight, through nginx.

Run: `python -m bench.proxy` (writes bench/results/proxy.json; about two minutes).

The processes share the machine: this load generator, the backend (`homepanel serve`, uvicorn
with uvloop/httptools), the simulated lab (a small runner started with `python -c`), nginx and
the bare Python proxy. The same read, the NAS node's status, is fetched every way in every
round, the order rotated:

- direct:  `GET {nas}/api2/json/nodes/nas/status` with the PVEAPIToken header, TLS pinned to
           the lab's CA (what the backend itself does upstream);
- nginx:   the same request through nginx as a plain keep-alive reverse proxy (the floor for
           "one extra hop"; installed with apt-get when missing, skipped if that fails);
- backend: `GET /api/proxmox/nas/status` with a Bearer JWT;
- app-only: `GET /api/health/upstreams` with the same JWT: the backend's own share (uvicorn,
           middleware, JWT, rate limit, a response model) without any upstream call;
- bare-py: the same request through a dozen-line ASGI app on the backend's own stack (uvicorn
           with uvloop/httptools, one aiohttp session, the same TLS pinning) that forwards
           the bytes: the floor of one Python hop on this machine, with no auth, no parsing
           and no response model.

Each round measures 300 sequential requests per target (c=1), interleaved: one request to
each target in turn, the order rotated, so that every target meets the same moments of the
machine's noise. Then, target by target, 2000 requests over 16 tasks (c=16), asking the lab
how many upstream requests each cost (the backend coalesces identical concurrent GETs). All
on keep-alive connections. Medians over the rounds are reported (failed requests summed). A last
check slows the simulated NAS by 0.3 s and fires 100 identical GETs at the backend at once:
they should cost the NAS exactly one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

from bench import free_port, save_result, stop

ROUNDS = 5
C1_REQUESTS = 300
C16_REQUESTS = 2000
CONCURRENCY = 16
WARMUP = 50
COALESCE_CALLERS = 100
COALESCE_LATENCY = 0.3
ACCESS_TOKEN = "bench-Access-Token-0123456789"  # noqa: S105 - a throw-away local secret
TARGETS = ("direct", "nginx", "bare-py", "backend", "app-only")
TARGETS_MS = {"added_p50_c1_ms": 1.0, "throughput_ratio": 0.5, "coalesced_upstream": 1}

# The lab in its own process. It prints one JSON line (its configuration), then answers
# commands on stdin with one line each: `count` (requests the NAS host has seen so far) and
# `latency <seconds>` (the NAS host's added latency).
LAB_RUNNER = """
import asyncio, json, sys
from homepanel.simulator.lab import Lab

async def main():
    async with Lab() as lab:
        nas = lab.proxmox["nas"]
        print(json.dumps({
            "env": lab.env(), "nas_url": lab.proxmox_urls["nas"], "node": nas.node,
            "token": nas.token, "ca": str(lab.tls.ca),
        }), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command, *args = line.split()
            if command == "count":
                print(sum(nas.requests.values()), flush=True)
            elif command == "latency":
                nas.faults.latency = float(args[0])
                print("ok", flush=True)
            else:
                print("unknown", flush=True)

asyncio.run(main())
"""

# The floor of a Python hop: forwards every request to the NAS, nothing else.
BARE_PROXY = """
import os, ssl, aiohttp, uvicorn

UPSTREAM = os.environ["BARE_UPSTREAM"]
HEADERS = {"Authorization": os.environ["BARE_AUTH"], "Accept-Encoding": "identity"}
session = None

async def app(scope, receive, send):
    global session
    if scope["type"] != "http":
        return
    if session is None:
        tls = ssl.create_default_context(cafile=os.environ["BARE_CA"])
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls), headers=HEADERS)
    async with session.get(UPSTREAM + scope["path"]) as upstream:
        body = await upstream.read()
        content_type = upstream.headers.get("content-type", "application/json").encode()
    await send({"type": "http.response.start", "status": upstream.status,
                "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=int(os.environ["BARE_PORT"]), log_level="warning")
"""

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream simulator {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass https://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify off;
            proxy_ssl_session_reuse on;
        }}
    }}
}}
"""


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:g} s")


class LabProcess:
    """The simulated lab in a child process, with a line protocol on its stdin/stdout."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAB_RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the lab runner exited before printing its configuration")
        self.config: dict[str, Any] = json.loads(line)

    def command(self, line: str) -> str:
        self.process.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self.process.stdout.readline().strip()  # type: ignore[union-attr]

    def count(self) -> int:
        return int(self.command("count"))


def start_backend(lab: LabProcess, directory: Path, port: int) -> subprocess.Popen:
    env = {
        "ENV": "development",  # plain-http cookie; nothing else on this path depends on it
        "LOG_LEVEL": "INFO",  # production's default: one access line per request
        "ACCESS_TOKEN": ACCESS_TOKEN,
        "DATABASE_PATH": str(directory / "data" / "metrics.db"),
        "LOG_DIR": str(directory / "logs"),
        "RATE_LIMIT_LOGIN": "1000/minute",
        "RATE_LIMIT_API": "1000000/minute",
        "METRICS_ENABLED": "false",
        **lab.config["env"],
    }
    env_file = directory / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "homepanel", "serve", "--env-file", str(env_file), *listen],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=directory,
    )
    wait_for_port(port, process, "the backend")
    return process


def start_bare_proxy(lab: LabProcess, port: int) -> subprocess.Popen:
    cfg = lab.config
    env = {
        **os.environ,
        "BARE_UPSTREAM": cfg["nas_url"],
        "BARE_AUTH": f"PVEAPIToken={cfg['token']}",
        "BARE_CA": cfg["ca"],
        "BARE_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_PROXY], env=env, stdout=subprocess.DEVNULL, stderr=None
    )
    wait_for_port(port, process, "the bare proxy")
    return process


def nginx_binary() -> tuple[str | None, str]:
    """nginx's path, installing it with apt-get when missing; or None and why not."""
    found = shutil.which("nginx")
    if found:
        return found, "already installed"
    apt = shutil.which("apt-get")
    if apt is None:
        return None, "nginx missing and no apt-get"
    print("nginx not found: apt-get update && apt-get install -y nginx ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update"], ["install", "-y", "nginx"]):
        done = subprocess.run(
            [apt, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            return None, f"apt-get {args[0]} failed: {done.stderr.strip()[-300:]}"
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    return found, "installed with apt-get" if found else "apt-get installed no nginx binary"


def start_nginx(binary: str, directory: Path, upstream_port: int, port: int) -> subprocess.Popen:
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=directory, upstream_port=upstream_port, port=port))
    process = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(directory), "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process, "nginx")
    return process


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def latency_figures(latencies: list[float], failures: int) -> dict:
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "failures": failures,
    }


async def timed_get(client: httpx2.AsyncClient, url: str) -> tuple[float, bool]:
    """One GET: its latency in ms, and whether it answered 200. A connection the server
    dropped as the request went out (an idle keep-alive closed: uvicorn's last 5 s) counts
    as a failure, and the run goes on."""
    started = time.perf_counter()
    try:
        ok = (await client.get(url)).status_code == 200
    except httpx2.TransportError:
        ok = False
    return (time.perf_counter() - started) * 1000, ok


async def measure_interleaved(
    clients: dict[str, httpx2.AsyncClient], urls: dict[str, str], total: int
) -> dict[str, dict]:
    """`total` sequential GETs per target (c=1), one to each target in turn, the order
    rotated: latency percentiles per target."""
    names = list(urls)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    failures = dict.fromkeys(names, 0)
    for index in range(total):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            latency, ok = await timed_get(clients[name], urls[name])
            latencies[name].append(latency)
            failures[name] += not ok
    return {name: latency_figures(latencies[name], failures[name]) for name in names}


async def measure(client: httpx2.AsyncClient, url: str, total: int, concurrency: int) -> dict:
    """`total` GETs of `url` over `concurrency` tasks: latency percentiles and throughput."""
    latencies: list[float] = []
    failures = 0

    async def worker(count: int) -> None:
        nonlocal failures
        for _ in range(count):
            latency, ok = await timed_get(client, url)
            latencies.append(latency)
            failures += not ok

    shares = [total // concurrency + (i < total % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(share) for share in shares))
    elapsed = time.perf_counter() - started
    return latency_figures(latencies, failures) | {"req_per_s": total / elapsed}


async def login(base: str) -> str:
    async with httpx2.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post("/api/auth/login", json={"token": ACCESS_TOKEN})
        response.raise_for_status()
        return response.json()["jwt"]


async def coalescing_check(lab: LabProcess, client: httpx2.AsyncClient, url: str) -> dict:
    """100 identical GETs while the NAS takes 0.3 s: how many reached it."""
    await asyncio.to_thread(lab.command, f"latency {COALESCE_LATENCY}")
    try:
        before = await asyncio.to_thread(lab.count)
        started = time.perf_counter()
        responses = await asyncio.gather(*(client.get(url) for _ in range(COALESCE_CALLERS)))
        elapsed = time.perf_counter() - started
        upstream = await asyncio.to_thread(lab.count) - before
    finally:
        await asyncio.to_thread(lab.command, "latency 0")
    return {
        "callers": COALESCE_CALLERS,
        "nas_latency_s": COALESCE_LATENCY,
        "ok_responses": sum(r.status_code == 200 for r in responses),
        "upstream_requests": upstream,
        "wall_s": round(elapsed, 3),
    }


async def run(lab: LabProcess, urls: dict[str, str], jwt: str) -> dict:
    cfg = lab.config
    direct_tls = ssl.create_default_context(cafile=cfg["ca"])  # the cert names 127.0.0.1
    # Asked exactly as the backend asks the NAS (`core/http.py`): uncompressed.
    pve = {"Authorization": f"PVEAPIToken={cfg['token']}", "Accept-Encoding": "identity"}
    bearer = {"Authorization": f"Bearer {jwt}"}
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)
    clients = {
        "direct": httpx2.AsyncClient(verify=direct_tls, headers=pve, timeout=30, limits=limits),
        "nginx": httpx2.AsyncClient(headers=pve, timeout=30, limits=limits),
        "bare-py": httpx2.AsyncClient(timeout=30, limits=limits),
        "backend": httpx2.AsyncClient(headers=bearer, timeout=30, limits=limits),
        "app-only": httpx2.AsyncClient(headers=bearer, timeout=30, limits=limits),
    }
    targets = [name for name in TARGETS if name in urls]
    rounds: list[dict] = []
    try:
        for name in targets:  # warm up: connections, TLS sessions, first-call caches
            await measure(clients[name], urls[name], WARMUP, CONCURRENCY)
        for index in range(ROUNDS):
            c1 = await measure_interleaved(clients, {n: urls[n] for n in targets}, C1_REQUESTS)
            result: dict[str, dict] = {name: {"c1": c1[name]} for name in targets}
            for name in targets[index % len(targets) :] + targets[: index % len(targets)]:
                before = await asyncio.to_thread(lab.count)
                phase = await measure(clients[name], urls[name], C16_REQUESTS, CONCURRENCY)
                phase["upstream_requests"] = await asyncio.to_thread(lab.count) - before
                result[name]["c16"] = phase
            rounds.append(result)
            print(f"  round {index + 1}/{ROUNDS} done", flush=True)
        coalescing = await coalescing_check(lab, clients["backend"], urls["backend"])
    finally:
        for client in clients.values():
            await client.aclose()
    return {"rounds": rounds, "coalescing": coalescing}


def summarise(rounds: list[dict]) -> dict:
    summary: dict[str, dict] = {}
    for name in rounds[0]:
        figures: dict[str, float] = {}
        for label, phase in rounds[0][name].items():
            for key in phase:
                values = [r[name][label][key] for r in rounds]
                # Failures are counted over all rounds: a median would hide a lone one.
                figures[f"{label}_{key}"] = (
                    sum(values) if key == "failures" else round(statistics.median(values), 3)
                )
        summary[name] = figures
    return summary


def ratios(summary: dict, coalescing: dict) -> dict:
    backend, direct = summary["backend"], summary["direct"]
    out: dict[str, Any] = {
        "added_p50_c1_ms": round(backend["c1_p50_ms"] - direct["c1_p50_ms"], 3),
        "added_p99_c1_ms": round(backend["c1_p99_ms"] - direct["c1_p99_ms"], 3),
        "throughput_ratio": round(backend["c16_req_per_s"] / direct["c16_req_per_s"], 3),
        "p50_c16_ratio": round(backend["c16_p50_ms"] / direct["c16_p50_ms"], 3),
        "backend_upstream_per_request_c16": round(
            backend["c16_upstream_requests"] / C16_REQUESTS, 3
        ),
        "coalesced_upstream": coalescing["upstream_requests"],
        "app_only_p50_c1_ms": summary["app-only"]["c1_p50_ms"],
        "upstream_leg_p50_c1_ms": round(backend["c1_p50_ms"] - summary["app-only"]["c1_p50_ms"], 3),
    }
    if "bare-py" in summary:
        bare = summary["bare-py"]
        out |= {
            "bare_py_added_p50_c1_ms": round(bare["c1_p50_ms"] - direct["c1_p50_ms"], 3),
            "bare_py_throughput_ratio": round(bare["c16_req_per_s"] / direct["c16_req_per_s"], 3),
            "backend_vs_bare_py_added_p50_c1_ms": round(
                backend["c1_p50_ms"] - bare["c1_p50_ms"], 3
            ),
        }
    if "nginx" in summary:
        nginx = summary["nginx"]
        out |= {
            "nginx_added_p50_c1_ms": round(nginx["c1_p50_ms"] - direct["c1_p50_ms"], 3),
            "nginx_throughput_ratio": round(nginx["c16_req_per_s"] / direct["c16_req_per_s"], 3),
            "backend_vs_nginx_added_p50_c1_ms": round(backend["c1_p50_ms"] - nginx["c1_p50_ms"], 3),
            "backend_vs_nginx_throughput_ratio": round(
                backend["c16_req_per_s"] / nginx["c16_req_per_s"], 3
            ),
        }
    out["targets"] = {
        "added_p50_c1_ms <= 1.0": out["added_p50_c1_ms"] <= TARGETS_MS["added_p50_c1_ms"],
        "throughput_ratio >= 0.5": out["throughput_ratio"] >= TARGETS_MS["throughput_ratio"],
        "coalesced_upstream == 1": out["coalesced_upstream"] == TARGETS_MS["coalesced_upstream"],
    }
    return out


def report(summary: dict, derived: dict, coalescing: dict, nginx_note: str) -> None:
    header = (
        f"{'':<10}{'c=1 p50':>9}{'c=1 p99':>9}{'c=16 p50':>10}{'c=16 p99':>10}"
        f"{'req/s':>9}{'upstream c=16':>15}"
    )
    print(f"\nGET NAS node status, medians of {ROUNDS} rounds (ms; req/s at c=16)")
    print(header)
    for name in TARGETS:
        if name not in summary:
            print(f"{name:<10}{'unavailable: ' + nginx_note:>50}")
            continue
        s = summary[name]
        print(
            f"{name:<10}{s['c1_p50_ms']:>9.2f}{s['c1_p99_ms']:>9.2f}{s['c16_p50_ms']:>10.2f}"
            f"{s['c16_p99_ms']:>10.2f}{s['c16_req_per_s']:>9.0f}"
            f"{s['c16_upstream_requests']:>9.0f}/{C16_REQUESTS:<5}"
        )
    failed = {
        name: (figures["c1_failures"], figures["c16_failures"])
        for name, figures in summary.items()
        if figures["c1_failures"] or figures["c16_failures"]
    }
    if failed:
        print(f"failed requests (c=1, c=16; all rounds): {failed}")
    ok = derived["targets"]
    print()
    print(
        f"added p50 at c=1, backend - direct: {derived['added_p50_c1_ms']:.2f} ms "
        f"(target <= 1 ms: {'met' if ok['added_p50_c1_ms <= 1.0'] else 'MISSED'})"
    )
    print(
        f"throughput backend / direct:        {derived['throughput_ratio']:.2f} "
        f"(target >= 0.5: {'met' if ok['throughput_ratio >= 0.5'] else 'MISSED'})"
    )
    if "nginx_added_p50_c1_ms" in derived:
        print(
            f"nginx floor: added p50 at c=1 {derived['nginx_added_p50_c1_ms']:.2f} ms, "
            f"throughput / direct {derived['nginx_throughput_ratio']:.2f}; backend / nginx "
            f"throughput {derived['backend_vs_nginx_throughput_ratio']:.2f}"
        )
    if "bare_py_added_p50_c1_ms" in derived:
        print(
            f"bare Python hop floor: added p50 at c=1 {derived['bare_py_added_p50_c1_ms']:.2f} ms, "
            f"throughput / direct {derived['bare_py_throughput_ratio']:.2f}; backend adds "
            f"{derived['backend_vs_bare_py_added_p50_c1_ms']:.2f} ms to it"
        )
    print(
        f"{coalescing['callers']} identical GETs, NAS slowed by {coalescing['nas_latency_s']} s: "
        f"{coalescing['upstream_requests']} upstream request(s), {coalescing['ok_responses']} "
        f"x 200 in {coalescing['wall_s']} s "
        f"(target exactly 1: {'met' if ok['coalesced_upstream == 1'] else 'MISSED'})"
    )
    print(
        f"backend upstream requests per client request at c=16: "
        f"{derived['backend_upstream_per_request_c16']:.3f} (single-flight coalescing)"
    )
    print(
        f"backend c=1 p50 split: app alone (auth, middleware, no upstream) "
        f"{derived['app_only_p50_c1_ms']:.2f} ms + upstream leg (client, TLS hop, parse) "
        f"{derived['upstream_leg_p50_c1_ms']:.2f} ms"
    )


def main() -> None:
    lab: LabProcess | None = None
    backend: subprocess.Popen | None = None
    nginx: subprocess.Popen | None = None
    bare: subprocess.Popen | None = None
    with tempfile.TemporaryDirectory(prefix="homepanel-bench-") as tmp:
        directory = Path(tmp)
        try:
            lab = LabProcess()
            nas_url = lab.config["nas_url"]
            status_path = f"/api2/json/nodes/{lab.config['node']}/status"
            urls = {"direct": f"{nas_url}{status_path}"}
            binary, nginx_note = nginx_binary()
            if binary is not None:
                (directory / "nginx").mkdir()
                nginx_port = free_port()
                try:
                    upstream_port = int(nas_url.rsplit(":", 1)[1])
                    nginx = start_nginx(binary, directory / "nginx", upstream_port, nginx_port)
                    urls["nginx"] = f"http://127.0.0.1:{nginx_port}{status_path}"
                except RuntimeError as exc:
                    nginx_note = f"nginx did not start: {exc}"
                    print(nginx_note, flush=True)
            bare_port = free_port()
            bare = start_bare_proxy(lab, bare_port)
            urls["bare-py"] = f"http://127.0.0.1:{bare_port}{status_path}"
            backend_port = free_port()
            (directory / "backend").mkdir()
            backend = start_backend(lab, directory / "backend", backend_port)
            base = f"http://127.0.0.1:{backend_port}"
            urls["backend"] = f"{base}/api/proxmox/nas/status"
            urls["app-only"] = f"{base}/api/health/upstreams"
            jwt = asyncio.run(login(base))
            print(f"measuring {', '.join(urls)}: {ROUNDS} rounds", flush=True)
            measured = asyncio.run(run(lab, urls, jwt))
        finally:
            for process in (nginx, bare, backend, lab.process if lab else None):
                stop(process)
    summary = summarise(measured["rounds"])
    derived = ratios(summary, measured["coalescing"])
    report(summary, derived, measured["coalescing"], nginx_note)
    result = {
        "settings": {
            "rounds": ROUNDS,
            "c1_requests": C1_REQUESTS,
            "c16_requests": C16_REQUESTS,
            "concurrency": CONCURRENCY,
            "cpus": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],  # others' load skews it
            "backend_log_level": "INFO",
            "nginx": nginx_note,
        },
        "summary": summary,
        "ratios": derived,
        "coalescing": measured["coalescing"],
        "rounds": measured["rounds"],
    }
    print(f"\nwritten to {save_result('proxy', result)}")


if __name__ == "__main__":
    main()
