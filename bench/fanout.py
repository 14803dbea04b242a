"""How the MQTT hub fans one upstream stream out to many SSE clients.

Run: `python -m bench.fanout` (writes bench/results/fanout.json); `--counts 100,500` picks the
client counts, `--window` the measured seconds, `--profile PATH` records the backend with py-spy
during the last window (a speedscope file; it perturbs the figures a little).

Everything runs on 127.0.0.1, each part in its own process:

- a stand-in MQTT API (aiohttp): `GET /api/v1/stream` emits `event: message` at 20 events/s,
  each payload carrying its emit time (`time.time()`) and a sequence number; `GET /stats`
  counts open and total stream connections, `POST /pause` and `/resume` stop and restart it;
- the backend, `python -m homepanel serve`, started fresh for every client count (so its idle
  memory is measured clean) with METRICS_ENABLED=false, so the browsers are the only
  subscribers;
- client processes (up to 250 connections each), raw asyncio sockets: they send the GET with
  the Bearer header, then scan each read for `"emit":<t>,"seq":<n>` and the `resync` event.

For each client count: memory is read with 0 clients (after one warm-up stream, so lazy imports
and the first hub are paid for) and with N clients connected while the upstream is paused
(idle). Then the upstream resumes and, after a short settle, a window of `--window` seconds
measures delivery latency (upstream emit to client receipt, same clock), lost events (gaps in
`seq` per connection, over each connection's whole life), the backend's CPU per delivered event
(/proc/<pid>/stat) and the upstream's connection counts. The clients report their own CPU use
and event-loop lag, so a client that fell behind shows up rather than passing for latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import free_port, save_result, stop

ROOT = Path(__file__).resolve().parents[1]
ACCESS_TOKEN = "bench-fanout-access-token"  # noqa: S105 - a throwaway backend's
RATE = 20  # upstream events per second
PER_PROCESS = 250  # SSE connections per client process
CONNECT_PARALLEL = 50
BUCKET_MS = 0.1  # latency histogram resolution
SETTLE = 3.0  # seconds of live traffic before a window starts
IDLE_SETTLE = 2.0
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {"clients": 1000, "p99_ms": 250, "kb_per_client": 50, "lost": 0, "upstream_open": 1}
EVENT = re.compile(rb'"emit":([0-9.]+),"seq":(\d+)}')


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def loopback_env() -> dict[str, str]:
    """The environment for children, without proxies: nothing may leave 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# --- the stand-in MQTT API -----------------------------------------------------------------


async def upstream_main(port: int) -> None:
    from aiohttp import web

    state: dict[str, Any] = {"open": 0, "total": 0, "seq": 0, "paused": False}
    streams: set[asyncio.Queue[bytes]] = set()

    async def stream(request: web.Request) -> web.StreamResponse:
        state["open"] += 1
        state["total"] += 1
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        streams.add(queue)
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            while True:
                await response.write(await queue.get())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            streams.discard(queue)
            state["open"] -= 1
        return response

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(state)

    async def pause(_: web.Request) -> web.Response:
        state["paused"] = True
        return web.json_response(state)

    async def resume(_: web.Request) -> web.Response:
        state["paused"] = False
        return web.json_response(state)

    async def ticker() -> None:
        start = time.monotonic()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
            if state["paused"] or not streams:
                continue
            state["seq"] += 1
            body = {
                "topic": "bench/t",
                "payload": {"emit": time.time(), "seq": state["seq"]},
                "timestamp": datetime.now(UTC).isoformat(),
            }
            chunk = f"event: message\ndata: {json.dumps(body)}\n\n".encode()
            for queue in streams:
                queue.put_nowait(chunk)

    app = web.Application()
    app.router.add_get("/api/v1/stream", stream)
    app.router.add_get("/stats", stats)
    app.router.add_post("/pause", pause)
    app.router.add_post("/resume", resume)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    task = asyncio.create_task(ticker())
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        task.cancel()
        await runner.cleanup()


# --- the SSE clients -----------------------------------------------------------------------


class ClientStats:
    def __init__(self) -> None:
        self.measuring = False
        self.hist: dict[int, int] = {}
        self.events = 0
        self.lost = 0  # over each connection's whole life, not only the window
        self.duplicates = 0
        self.resyncs = 0
        self.closed = 0
        self.max_lag = 0.0


class SseClient(asyncio.Protocol):
    def __init__(self, request: bytes, stats: ClientStats, ready: asyncio.Future[bool]) -> None:
        self.request = request
        self.stats = stats
        self.ready = ready
        self.buf = b""
        self.started = False
        self.last_seq: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data
        if not self.started:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 200"):
                if not self.ready.done():
                    self.ready.set_result(False)
                assert self.transport is not None
                self.transport.close()
                return
            self.started = True
            if not self.ready.done():
                self.ready.set_result(True)
            buf = buf[end + 4 :]
        stats = self.stats
        cut = buf.rfind(b"\n") + 1  # complete lines only (sse-starlette ends them with CRLF)
        for match in EVENT.finditer(buf):
            seq = int(match[2])
            last = self.last_seq
            if last is not None:
                if seq > last + 1:
                    stats.lost += seq - last - 1
                elif seq <= last:
                    stats.duplicates += 1
            self.last_seq = seq
            cut = max(cut, match.end())
            if stats.measuring:
                stats.events += 1
                bucket = int((now - float(match[1])) * 1000 / BUCKET_MS)
                stats.hist[bucket] = stats.hist.get(bucket, 0) + 1
        body, self.buf = buf[:cut], buf[cut:]
        if b"event: resync" in body:
            stats.resyncs += body.count(b"event: resync")

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_result(False)


async def client_main(port: int, count: int) -> None:
    jwt = os.environ["BENCH_JWT"]
    request = (
        f"GET /api/mqtt/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {jwt}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    stats = ClientStats()
    transports: list[asyncio.BaseTransport] = []
    gate = asyncio.Semaphore(CONNECT_PARALLEL)

    async def connect() -> bool:
        async with gate:
            ready: asyncio.Future[bool] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: SseClient(request, stats, ready), "127.0.0.1", port
                )
            except OSError:
                return False
            transports.append(transport)
            try:
                return await asyncio.wait_for(ready, 30)
            except TimeoutError:
                return False

    async def lag_probe() -> None:
        interval = 0.02
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = time.monotonic() - before - interval
            if stats.measuring:
                stats.max_lag = max(stats.max_lag, lag)

    probe = asyncio.create_task(lag_probe())
    outcomes = await asyncio.gather(*(connect() for _ in range(count)))
    gc.freeze()  # the connections are long-lived: no collector pauses scanning them
    print(json.dumps({"connected": sum(outcomes), "failed": count - sum(outcomes)}), flush=True)
    while (line := (await asyncio.to_thread(sys.stdin.readline)).split()) and line[0] != "quit":
        window = float(line[1])
        stats.hist.clear()
        stats.events = 0
        stats.max_lag = 0.0
        stats.measuring = True
        cpu_before = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        await asyncio.sleep(window)
        stats.measuring = False
        cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before
        report = {
            "events": stats.events,
            "hist": stats.hist,
            "lost": stats.lost,
            "duplicates": stats.duplicates,
            "resyncs": stats.resyncs,
            "closed": stats.closed,
            "max_lag_ms": round(stats.max_lag * 1000, 1),
            "cpu_percent": round(100 * cpu / window, 1),
        }
        print(json.dumps(report), flush=True)
    probe.cancel()
    for transport in transports:
        transport.close()


# --- the orchestration ---------------------------------------------------------------------


def http(method: str, url: str, **kwargs: Any) -> Any:
    import httpx2

    with httpx2.Client(trust_env=False, timeout=30) as client:
        response = client.request(method, url, **kwargs)
    response.raise_for_status()
    return response.json()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(hist: dict[int, int], fraction: float) -> float:
    total = sum(hist.values())
    rank = max(1, math.ceil(total * fraction))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return round((bucket + 1) * BUCKET_MS, 1)  # the bucket's upper edge
    return math.nan


class Bench:
    def __init__(self, directory: Path, window: float, profile: Path | None) -> None:
        self.directory = directory
        self.window = window
        self.profile = profile
        self.processes: list[subprocess.Popen[str]] = []
        self.upstream_url = ""

    def spawn(self, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env or loopback_env(),
            text=True,
            start_new_session=True,  # a Ctrl-C goes to us; we end the children ourselves
            **kwargs,
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[str]) -> None:
        stop(process)

    def close(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)

    def start_upstream(self) -> None:
        port = free_port()
        process = self.spawn(
            "-m", "bench.fanout", "upstream", "--port", str(port), stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the stand-in upstream did not start")
        self.upstream_url = f"http://127.0.0.1:{port}"

    def upstream(self, action: str = "stats") -> dict[str, Any]:
        method = "GET" if action == "stats" else "POST"
        return http(method, f"{self.upstream_url}/{action}")

    def wait_upstream_open(self, expected: int, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (stats := self.upstream())["open"] != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return stats

    def start_backend(self, tag: str) -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        home = self.directory / tag
        home.mkdir()
        env_file = home / ".env"
        variables = {
            "ENV": "production",
            "HOST": "127.0.0.1",
            "ACCESS_TOKEN": ACCESS_TOKEN,
            "MQTT_API_URL": self.upstream_url,
            "METRICS_ENABLED": "false",
            "RATE_LIMIT_API": "1000000/minute",
            "RATE_LIMIT_LOGIN": "1000/minute",
            "DATABASE_PATH": str(home / "data" / "metrics.db"),
            "LOG_DIR": str(home / "logs"),
            "LOG_LEVEL": "WARNING",
        }
        env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
        log = (home / "backend.out").open("w")
        process = self.spawn(
            "-m",
            "homepanel",
            "serve",
            "--env-file",
            str(env_file),
            "--port",
            str(port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the backend exited: {(home / 'backend.out').read_text()}")
            with contextlib.suppress(Exception):
                if http("GET", f"{url}/health")["status"] == "healthy":
                    return process, url
            if time.monotonic() > deadline:
                raise RuntimeError("the backend did not start")
            time.sleep(0.2)

    def warm_up(self, url: str, jwt: str) -> None:
        """One stream, one event, then gone: the first hub and lazy imports are paid for."""
        import httpx2

        headers = {"Authorization": f"Bearer {jwt}"}
        with (
            httpx2.Client(trust_env=False, timeout=30) as client,
            client.stream("GET", f"{url}/api/mqtt/stream", headers=headers) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("event: mqtt"):
                    break
        self.wait_upstream_open(0)

    def round(self, clients: int, profile: bool) -> dict[str, Any]:
        backend, url = self.start_backend(f"n{clients}")
        try:
            return self._measure(backend, url, clients, profile)
        finally:
            self.stop(backend)
            self.wait_upstream_open(0)

    def _measure(
        self, backend: subprocess.Popen[str], url: str, clients: int, profile: bool
    ) -> dict[str, Any]:
        jwt = http("POST", f"{url}/api/auth/login", json={"token": ACCESS_TOKEN})["jwt"]
        self.warm_up(url, jwt)
        connects_base = self.upstream()["total"]
        time.sleep(1)
        rss_0 = rss_kb(backend.pid)

        self.upstream("pause")
        env = {**loopback_env(), "BENCH_JWT": jwt}
        shares = [PER_PROCESS] * (clients // PER_PROCESS)
        if clients % PER_PROCESS:
            shares.append(clients % PER_PROCESS)
        port = url.rsplit(":", 1)[1]
        started = time.monotonic()
        workers = [
            self.spawn(
                "-m",
                "bench.fanout",
                "client",
                "--port",
                port,
                "--count",
                str(share),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            for share in shares
        ]
        connected = failed = 0
        for worker in workers:
            assert worker.stdout is not None
            outcome = json.loads(worker.stdout.readline())
            connected += outcome["connected"]
            failed += outcome["failed"]
        connect_seconds = time.monotonic() - started
        time.sleep(IDLE_SETTLE)
        rss_idle = rss_kb(backend.pid)
        idle_upstream = self.upstream()

        self.upstream("resume")
        time.sleep(SETTLE)
        before = self.upstream()
        cpu_before = cpu_seconds(backend.pid)
        spy = None
        if profile and self.profile is not None:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--nonblocking",
                    "--pid",
                    str(backend.pid),
                    "--duration",
                    str(int(self.window)),
                    "--format",
                    "speedscope",
                    "--output",
                    str(self.profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.processes.append(spy)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"measure {self.window}\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            assert worker.stdout is not None
            reports.append(json.loads(worker.stdout.readline()))
        cpu = cpu_seconds(backend.pid) - cpu_before
        after = self.upstream()
        rss_load = rss_kb(backend.pid)
        if spy is not None:
            spy.wait(60)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("quit\n")
            worker.stdin.flush()
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                self.stop(worker)

        hist: dict[int, int] = {}
        for report in reports:
            for bucket, count in report["hist"].items():
                hist[int(bucket)] = hist.get(int(bucket), 0) + count
        delivered = sum(r["events"] for r in reports)
        emitted = after["seq"] - before["seq"]
        return {
            "clients": clients,
            "connected": connected,
            "connect_failed": failed,
            "connect_seconds": round(connect_seconds, 2),
            "client_processes": len(workers),
            "window_seconds": self.window,
            "upstream_events_in_window": emitted,
            "delivered": delivered,
            "expected_about": emitted * connected,
            "p50_ms": percentile(hist, 0.50),
            "p99_ms": percentile(hist, 0.99),
            "max_ms": round((max(hist) + 1) * BUCKET_MS, 1) if hist else math.nan,
            "lost": sum(r["lost"] for r in reports),
            "duplicates": sum(r["duplicates"] for r in reports),
            "resyncs": sum(r["resyncs"] for r in reports),
            "connections_closed": sum(r["closed"] for r in reports),
            "upstream_open": after["open"],
            "upstream_open_idle": idle_upstream["open"],
            "upstream_connects": after["total"] - connects_base,
            "backend_cpu_seconds": round(cpu, 2),
            "backend_cpu_percent": round(100 * cpu / self.window, 1),
            "cpu_us_per_event": round(cpu * 1e6 / delivered, 1) if delivered else math.nan,
            "rss_0_kb": rss_0,
            "rss_idle_kb": rss_idle,
            "rss_load_kb": rss_load,
            "kb_per_client": round((rss_idle - rss_0) / clients, 1),
            "kb_per_client_load": round((rss_load - rss_0) / clients, 1),
            "client_cpu_percent": [r["cpu_percent"] for r in reports],
            "client_max_lag_ms": [r["max_lag_ms"] for r in reports],
        }

    def run(self, counts: list[int]) -> list[dict[str, Any]]:
        self.start_upstream()
        results = []
        for index, clients in enumerate(counts):
            result = self.round(clients, profile=index == len(counts) - 1)
            results.append(result)
            print(
                f"  {clients} clients: p99 {result['p99_ms']} ms, "
                f"backend CPU {result['backend_cpu_percent']} %, "
                f"clients CPU {result['client_cpu_percent']} %",
                file=sys.stderr,
                flush=True,
            )
        return results


def report(results: list[dict[str, Any]]) -> None:
    head = ("clients", "p50 ms", "p99 ms", "lost", "upstream conns", "CPU µs/event", "KB/client")
    print(f"{head[0]:>7} {head[1]:>8} {head[2]:>8} {head[3]:>5} {head[4]:>15} {head[5]:>13} "
          f"{head[6]:>10}")  # fmt: skip
    for r in results:
        conns = f"{r['upstream_open']} open/{r['upstream_connects']}"
        print(
            f"{r['clients']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['lost']:>5} {conns:>15} "
            f"{r['cpu_us_per_event']:>13} {r['kb_per_client']:>10}"
        )
    print()
    for r in results:
        print(
            f"{r['clients']:>5} clients: {r['connected']} connected ({r['connect_failed']} failed)"
            f", delivered {r['delivered']} of ~{r['expected_about']}, resyncs {r['resyncs']}, "
            f"closed {r['connections_closed']}, backend CPU {r['backend_cpu_percent']} %, "
            f"RSS 0/idle/load {r['rss_0_kb']}/{r['rss_idle_kb']}/{r['rss_load_kb']} KB, "
            f"max {r['max_ms']} ms, client CPU {r['client_cpu_percent']} %, "
            f"client lag {r['client_max_lag_ms']} ms"
        )
    last = next((r for r in results if r["clients"] == TARGETS["clients"]), None)
    if last is not None:
        checks = {
            "p99 < 250 ms": last["p99_ms"] < TARGETS["p99_ms"],
            "memory < 50 KB per idle client": last["kb_per_client"] < TARGETS["kb_per_client"],
        }
        checks["lost 0"] = all(r["lost"] == 0 and r["resyncs"] == 0 for r in results)
        checks["upstream connections 1"] = all(
            r["upstream_open"] == 1 and r["upstream_connects"] == 1 for r in results
        )
        print()
        for name, ok in checks.items():
            print(f"{'met ' if ok else 'MISSED'} {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.fanout", description=__doc__.split("\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=("bench", "upstream", "client"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--count", type=int)
    parser.add_argument("--counts", default="100,500,1000")
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    raise_fd_limit()
    if args.role == "upstream":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(upstream_main(args.port))
        return
    if args.role == "client":
        asyncio.run(client_main(args.port, args.count))
        return
    counts = [int(n) for n in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as directory:
        bench = Bench(Path(directory), args.window, args.profile)
        try:
            results = bench.run(counts)
        finally:
            bench.close()
    report(results)
    save_result("fanout", {"targets": TARGETS, "rate_per_second": RATE, "results": results})


if __name__ == "__main__":
    main()
