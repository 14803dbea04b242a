"""What the service costs at rest: resident memory, idle CPU, and time to a healthy `/health`.

Run: `python -m bench.footprint` (writes bench/results/footprint.json; about three minutes).

The issue's figures are for `homepanel demo` idle with every collector running. The demo runs
the simulated lab inside the same process, so its memory and CPU include the simulators. To
separate them, the backend also runs alone, `homepanel serve` pointed at the same simulated lab
started in a process of its own; the lab's process is measured too. Every process is a child of
this one, on 127.0.0.1 only, with its data and logs in a temporary folder, and configured alike
(ENV=development and its default log level, DEBUG, as the demo runs by default;
METRICS_ENABLED on).

1. Start-up, in rounds that each time five things in rotating order: the demo and the backend
   alone from spawn to the first 200 from `GET /health` (polled every 10 ms), and, as the
   floor any start-up pays before it opens anything, `python -c "import homepanel.app"`,
   `"import homepanel.cli"` (what the command imports) and `pass`, spawn to the import done,
   with their peak RSS. Differences are taken within a round, then the median over rounds.
2. Idle: the demo and the backend alone run side by side (so both see the same machine). After
   a settle long enough for every collector to have run, the 30 s guest one included, three
   30 s windows each read utime+stime from /proc/<pid>/stat (CPU as % of one core) while VmRSS
   is sampled every second; VmHWM is the peak. /metrics is read before and after the windows
   to prove the collectors ran in them and the MQTT device tracker stayed subscribed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import free_port, save_result, stop

ROUNDS = 7
POLL = 0.01  # seconds between /health attempts during start-up
START_TIMEOUT = 30.0
SETTLE = 30.0  # the collectors tick at 5, 10 and 30 s: each has run at least once after it
WINDOWS = 3
WINDOW = 30.0  # one guest cycle, three server cycles, six automation cycles
SAMPLE = 1.0  # seconds between RSS samples
TICK = os.sysconf("SC_CLK_TCK")
ACCESS_TOKEN = "bench-footprint-access-token"  # noqa: S105 - a throwaway backend's
TARGETS = {"startup_s": 2.0, "rss_mb": 120.0, "cpu_percent": 2.0}
# Every job that must run in the idle windows (the roll-up runs each minute, the windows last 90 s).
JOBS = ("servers", "guests", "automations", "metrics roll-up")
# Variables from the caller's shell that could point a child at a real upstream.
UPSTREAM_PREFIXES = ("PROXMOX_", "FRIGATE_", "MQTT_API_", "AUTOMATION_API_", "AI_HUB_")
# `python -c` statements timed beside the start-ups: the bare interpreter, then the imports.
IMPORTS = ("pass", "import homepanel.app", "import homepanel.cli")
RUNS = re.compile(r'^homepanel_collector_runs_total\{job="([^"]+)",result="(\w+)"\} (\S+)$', re.M)
SUBSCRIBERS = re.compile(r'^homepanel_hub_subscribers\{hub="([^"]+)"\} (\S+)$', re.M)

# The lab in its own process: it prints its configuration as one JSON line, then runs until
# its stdin closes (so it exits cleanly and removes its TLS files).
LAB_RUNNER = """
import asyncio, json, sys
from homepanel.simulator.lab import Lab

async def main():
    async with Lab() as lab:
        print(json.dumps(lab.env()), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def child_env() -> dict[str, str]:
    """The caller's environment without proxies or upstream settings: nothing leaves 127.0.0.1."""
    env = {
        name: value
        for name, value in os.environ.items()
        if "proxy" not in name.lower() and not name.startswith(UPSTREAM_PREFIXES)
    }
    return env | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def get(port: int, path: str) -> tuple[int, str]:
    """A plain GET on loopback (http.client never consults proxy settings)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime of every thread


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


class Children:
    """Every process this benchmark starts, ended however the run ends (Ctrl-C included)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            self.stop(process)

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            args,
            text=True,
            start_new_session=True,  # a Ctrl-C reaches only us; we end the children
            **kwargs,
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[str]) -> None:
        stop(process)
        if process in self.processes:
            self.processes.remove(process)


def start_lab(children: Children) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = children.spawn(
        [sys.executable, "-c", LAB_RUNNER],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    line = process.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError("the lab runner exited before printing its configuration")
    return process, json.loads(line)


@dataclass
class Backend:
    """One `homepanel demo` or `homepanel serve` child and what its start-up took."""

    process: subprocess.Popen[str]
    port: int
    home: Path
    startup_s: float = 0.0
    startup_cpu_s: float = 0.0  # its own CPU time by then: what other load cannot inflate
    rss_at_start_kb: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid


def start_backend(children: Children, command: str, home: Path, lab_env: dict[str, str]) -> Backend:
    """`homepanel <command>` on a free loopback port, its data and logs under `home`; returns
    once /health answered 200 (the time from spawn to then is its start-up)."""
    home.mkdir(parents=True)
    env = child_env() | {
        "ENV": "development",
        "ACCESS_TOKEN": ACCESS_TOKEN,
        "METRICS_ENABLED": "true",
        "DATABASE_PATH": str(home / "data" / "metrics.db"),
        "LOG_DIR": str(home / "logs"),
    }
    if command == "serve":
        env |= lab_env
    port = free_port()
    args = [sys.executable, "-m", "homepanel", command, "--host", "127.0.0.1", "--port", str(port)]
    with (home / "console.log").open("w") as log:
        started = time.perf_counter()
        process = children.spawn(args, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    backend = Backend(process, port, home)
    backend.startup_s = wait_healthy(backend, started)
    backend.startup_cpu_s = cpu_seconds(backend.pid)
    backend.rss_at_start_kb = status_kb(backend.pid, "VmRSS")
    return backend


def wait_healthy(backend: Backend, started: float) -> float:
    while (elapsed := time.perf_counter() - started) < START_TIMEOUT:
        if backend.process.poll() is not None:
            log = (backend.home / "console.log").read_text()[-2000:]
            raise RuntimeError(f"the backend exited with {backend.process.returncode}:\n{log}")
        with suppress(OSError):
            if get(backend.port, "/health")[0] == 200:
                return elapsed
        time.sleep(POLL)
    raise RuntimeError(f"no healthy /health within {START_TIMEOUT:g} s")


def time_import(statement: str) -> tuple[float, float, int]:
    """Seconds from spawning `python -c <statement>` to the statement done, the CPU seconds it
    took, and the peak RSS in KB. The child reads the clock itself: its exit (tearing down every
    module) would add a tenth of a second that a start-up does not pay."""
    report = (
        "import resource, time\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(time.time(), usage.ru_utime + usage.ru_stime, usage.ru_maxrss)"
    )
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", f"{statement}\n{report}"],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    finished, cpu_s, maxrss_kb = done.stdout.split()
    return float(finished) - started, float(cpu_s), int(maxrss_kb)


def measure_startups(
    children: Children, directory: Path, lab_env: dict[str, str]
) -> dict[str, dict[str, list[float]]]:
    """ROUNDS rounds, each timing the imports and starting the demo and the backend alone, the
    order rotating, so that the figures compared with each other saw the same machine.

    `seconds` is spawn to the import done, or spawn to a healthy /health for a command; `cpu_s`
    the CPU time the child had used by then; `rss_kb` the import's peak RSS, or the command's
    VmRSS once healthy."""
    steps = [*IMPORTS, "demo", "serve"]
    found: dict[str, dict[str, list[float]]] = {
        step: {"seconds": [], "cpu_s": [], "rss_kb": []} for step in steps
    }
    for index in range(ROUNDS):
        shift = index % len(steps)
        for step in steps[shift:] + steps[:shift]:
            if step in IMPORTS:
                seconds, cpu_s, rss_kb = time_import(step)
            else:
                home = directory / f"{step}-{index}"
                backend = start_backend(children, step, home, lab_env)
                children.stop(backend.process)
                seconds, cpu_s = backend.startup_s, backend.startup_cpu_s
                rss_kb = backend.rss_at_start_kb
            found[step]["seconds"].append(seconds)
            found[step]["cpu_s"].append(cpu_s)
            found[step]["rss_kb"].append(rss_kb)
        print(f"  start-up round {index + 1}/{ROUNDS} done", file=sys.stderr, flush=True)
    return found


def scrape(port: int) -> dict[str, Any]:
    """Job runs by (job, result) and hub subscribers, from /metrics."""
    status, text = get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    runs = {f"{job}:{result}": float(count) for job, result, count in RUNS.findall(text)}
    subscribers = {hub: float(count) for hub, count in SUBSCRIBERS.findall(text)}
    return {"runs": runs, "subscribers": subscribers}


def collectors_check(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Which jobs ran (successfully) between two scrapes, and whether the tracker stayed on."""
    ran = {
        job: after["runs"].get(f"{job}:ok", 0) - before["runs"].get(f"{job}:ok", 0) for job in JOBS
    }
    failed = sum(
        count - before["runs"].get(key, 0)
        for key, count in after["runs"].items()
        if key.endswith(":failed")
    )
    subscribed = all(state["subscribers"].get("MQTT API", 0) >= 1 for state in (before, after))
    return {
        "ok_runs_in_window": ran,
        "failed_runs_in_window": failed,
        "mqtt_tracker_subscribed": subscribed,
        "all_running": all(count > 0 for count in ran.values()) and subscribed and failed == 0,
    }


@dataclass
class Usage:
    """One process's CPU per window and its RSS samples."""

    cpu_percent: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)


def sample_windows(pids: dict[str, int]) -> dict[str, Usage]:
    """WINDOWS windows of WINDOW seconds: CPU % of one core per window, VmRSS every second."""
    usage = {name: Usage() for name in pids}
    for index in range(WINDOWS):
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic()
        next_sample = started
        while (now := time.monotonic()) < started + WINDOW:
            if now >= next_sample:
                for name, pid in pids.items():
                    usage[name].rss_kb.append(status_kb(pid, "VmRSS"))
                next_sample += SAMPLE
            time.sleep(max(0.0, min(next_sample, started + WINDOW) - time.monotonic()))
        elapsed = time.monotonic() - started
        for name, pid in pids.items():
            spent = cpu_seconds(pid) - cpu_before[name]
            usage[name].cpu_percent.append(100 * spent / elapsed)
        print(f"  idle window {index + 1}/{WINDOWS} done", file=sys.stderr, flush=True)
    return usage


def measure_idle(
    children: Children, directory: Path, lab: subprocess.Popen[str], lab_env: dict[str, str]
) -> dict[str, Any]:
    """The demo and the backend alone side by side, settled, then sampled."""
    demo = start_backend(children, "demo", directory / "idle-demo", lab_env)
    serve = start_backend(children, "serve", directory / "idle-serve", lab_env)
    print(f"  settling {SETTLE:g} s", file=sys.stderr, flush=True)
    time.sleep(SETTLE)
    before = {"demo": scrape(demo.port), "serve": scrape(serve.port)}
    usage = sample_windows({"demo": demo.pid, "serve": serve.pid, "lab": lab.pid})
    checks = {
        name: collectors_check(before[name], scrape(backend.port))
        for name, backend in (("demo", demo), ("serve", serve))
    }
    peaks = {name: status_kb(pid, "VmHWM") for name, pid in (("demo", demo.pid),
             ("serve", serve.pid), ("lab", lab.pid))}  # fmt: skip
    logs = {
        name: sum(1 for _ in (backend.home / "logs" / "backend.log").open())
        for name, backend in (("demo", demo), ("serve", serve))
    }
    for backend in (demo, serve):
        children.stop(backend.process)
    return {
        name: {
            "cpu_percent_windows": [round(x, 3) for x in usage[name].cpu_percent],
            "cpu_percent": round(statistics.median(usage[name].cpu_percent), 3),
            "cpu_percent_mean": round(statistics.fmean(usage[name].cpu_percent), 3),
            "rss_mb": round(statistics.median(usage[name].rss_kb) / 1024, 1),
            "rss_max_mb": round(max(usage[name].rss_kb) / 1024, 1),
            "hwm_mb": round(peaks[name] / 1024, 1),
            **({"collectors": checks[name], "log_lines": logs[name]} if name in checks else {}),
        }
        for name in usage
    }


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    """`median unit (min–max)`."""
    median = statistics.median(values)
    return f"{median:.{digits}f} {unit} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def per_round(startups: dict[str, dict[str, list[float]]], step: str, base: str, key: str) -> float:
    """The median over rounds of `step`'s `key` minus `base`'s in the same round."""
    pairs = zip(startups[step][key], startups[base][key], strict=True)
    return round(statistics.median(a - b for a, b in pairs), 3)


def summarise(startups: dict[str, dict[str, list[float]]], idle: dict[str, Any]) -> dict[str, Any]:
    median = statistics.median
    startup = {
        step: {
            "seconds": round(median(found["seconds"]), 3),
            "cpu_s": round(median(found["cpu_s"]), 3),
            "rss_mb": round(median(found["rss_kb"]) / 1024, 1),
        }
        for step, found in startups.items()
    }
    demo, serve, lab = idle["demo"], idle["serve"], idle["lab"]
    derived = {
        f"{step}_{base_name}_{key}": per_round(startups, step, base, key)
        for key in ("seconds", "cpu_s")
        for step, base, base_name in (
            ("demo", "import homepanel.cli", "after_cli_imports"),
            ("serve", "import homepanel.cli", "after_cli_imports"),
            ("demo", "serve", "minus_serve"),
        )
    } | {
        "backend_alone_over_demo_rss": round(serve["rss_mb"] / demo["rss_mb"], 3),
        "backend_alone_over_demo_cpu": round(serve["cpu_percent"] / demo["cpu_percent"], 3),
        "backend_plus_lab_over_demo_rss": round(
            (serve["rss_mb"] + lab["rss_mb"]) / demo["rss_mb"], 3
        ),
        "cli_imports_over_backend_alone_rss": round(
            startup["import homepanel.cli"]["rss_mb"] / serve["rss_mb"], 3
        ),
    }
    met = {}
    for name in ("demo", "serve"):
        met |= {
            f"{name} start-up < {TARGETS['startup_s']:g} s": startup[name]["seconds"]
            < TARGETS["startup_s"],
            f"{name} RSS < {TARGETS['rss_mb']:g} MB": idle[name]["rss_mb"] < TARGETS["rss_mb"],
            f"{name} VmHWM < {TARGETS['rss_mb']:g} MB": idle[name]["hwm_mb"] < TARGETS["rss_mb"],
            f"{name} CPU < {TARGETS['cpu_percent']:g} %": idle[name]["cpu_percent"]
            < TARGETS["cpu_percent"],
            f"{name} every collector ran": idle[name]["collectors"]["all_running"],
        }
    return {"startup": startup, "idle": idle, "derived": derived, "targets_met": met}


def runs(check: dict[str, Any]) -> str:
    """`servers 9, guests 3, ...; tracker on` for the table."""
    counts = ", ".join(f"{job} {count:g}" for job, count in check["ok_runs_in_window"].items())
    tracker = "on" if check["mqtt_tracker_subscribed"] else "OFF"
    return f"{counts}; {check['failed_runs_in_window']:g} failed; tracker {tracker}"


def startup_cell(
    startups: dict[str, dict[str, list[float]]], figures: dict[str, Any], step: str
) -> str:
    """`1.05 s (0.90–1.22), 0.98 CPU-s`: wall time over the rounds, then the CPU it took."""
    return (
        f"{spread(startups[step]['seconds'], 's')}, {figures['startup'][step]['cpu_s']:.2f} CPU-s"
    )


def table_rows(
    startups: dict[str, dict[str, list[float]]], figures: dict[str, Any]
) -> list[tuple[str, str, str, str]]:
    """figure | measured | target | met?: the demo's and the backend alone's, then the rest."""
    idle = figures["idle"]
    met = iter(figures["targets_met"].values())  # in the order of the rows below
    rows = []
    for name, label in (("demo", "demo (total)"), ("serve", "backend alone")):
        f = idle[name]
        windows = ", ".join(f"{x:.2f}" for x in f["cpu_percent_windows"])
        for figure, measured, target in (
            ("start-up to healthy /health", startup_cell(startups, figures, name),
             f"< {TARGETS['startup_s']:g} s"),
            ("RSS idle", f"{f['rss_mb']} MB median ({f['rss_max_mb']} max)",
             f"< {TARGETS['rss_mb']:g} MB"),
            ("peak RSS (VmHWM)", f"{f['hwm_mb']} MB", f"< {TARGETS['rss_mb']:g} MB"),
            ("CPU idle", f"{f['cpu_percent']:.2f} % of a core ({windows})",
             f"< {TARGETS['cpu_percent']:g} %"),
            ("collectors in the windows", runs(f["collectors"]), "all ran, tracker on"),
        ):  # fmt: skip
            rows.append((f"{figure}, {label}", measured, target, "yes" if next(met) else "MISSED"))
    lab = idle["lab"]
    rows.append(
        ("the lab alone (own process)", f"{lab['rss_mb']} MB, {lab['cpu_percent']:.2f} %", "—", "")
    )
    for step in IMPORTS:
        measured = (
            f"{startup_cell(startups, figures, step)}, {figures['startup'][step]['rss_mb']} MB"
        )
        rows.append((f"python -c '{step}'", measured, "—", ""))
    return rows


def report(startups: dict[str, dict[str, list[float]]], figures: dict[str, Any]) -> None:
    rows = [("figure", "measured", "target", "met?"), *table_rows(startups, figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        "\nstart-up: median (min–max) of the rounds, and the median CPU time the process used;"
        " CPU idle: median of the windows (each window); differences: median of per-round ones"
    )
    for key, value in figures["derived"].items():
        print(f"{key}: {value}")
    for name in ("demo", "serve"):
        print(f"{name}: {figures['idle'][name]['log_lines']} log lines (DEBUG) by the end")


@contextmanager
def workspace() -> Iterator[tuple[Path, Children]]:
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as directory, Children() as kids:
        yield Path(directory), kids


def main() -> None:
    started = time.monotonic()
    with workspace() as (directory, children):
        lab, lab_env = start_lab(children)
        print(f"imports and start-up: {ROUNDS} rounds", file=sys.stderr, flush=True)
        startups = measure_startups(children, directory, lab_env)
        print("idle: the demo and the backend alone side by side", file=sys.stderr, flush=True)
        idle = measure_idle(children, directory, lab, lab_env)
    figures = summarise(startups, idle)
    report(startups, figures)
    result = {
        "settings": {
            "rounds": ROUNDS,
            "settle_s": SETTLE,
            "windows": WINDOWS,
            "window_s": WINDOW,
            "cpus": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],  # others' load skews it
            # Set, and with no __pycache__ in src/, every start compiles homepanel's modules.
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
            "run_s": round(time.monotonic() - started, 1),
        },
        "targets": TARGETS,
        "figures": figures,
        "startup_rounds": startups,
    }
    print(f"\nwritten to {save_result('footprint', result)}")


if __name__ == "__main__":
    main()
