"""Failover benchmark: N faults per redundancy model under a 1 ms consumer probe.

Writes bench/results/failover.json and prints the README table. Run with `make bench`.
Every figure comes from the probe (consumer side) or the trace; nothing is assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nfvha import config
from nfvha.cli import example_path
from nfvha.experiment import run_faults

RESULTS = Path(__file__).parent / "results"
GOALS = {
    "2n": {"median_ms": 20.0, "max_ms": 100.0},
    "n+m": {"median_ms": 20.0, "max_ms": 100.0},
    "none": {"above_startup_ms": 30.0},
    "hang_slack_ms": 10.0,
}


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


def bench_deployment(model: str) -> tuple[config.Deployment, Path]:
    """The shipped example, with a restart limit the benchmark's repeated kills cannot reach."""
    deployment, base = config.load(example_path(model))
    raw = deployment.model_dump()
    raw["name"] = f"bench-{model.replace('+', 'p')}"
    raw["vnfs"][0]["policies"]["restart_max"] = 10_000
    return config.Deployment.model_validate(raw), base


def run_model(model: str, fault: str, n: int, spacing_s: float) -> dict:
    deployment, base = bench_deployment(model)
    exp = asyncio.run(run_faults(deployment, base, faults=n, fault=fault, spacing_s=spacing_s))
    outages = [f.outage_ms for f in exp.faults if f.outage_ms is not None]
    phase_names = sorted({k for f in exp.faults for k in f.phases_ms})
    hc = deployment.vnfs[0].policies.health_check
    return {
        "model": model,
        "fault": fault,
        "faults": n,
        "answered_after_every_fault": len(outages) == n,
        "outage_ms": stats(outages),
        "lost_acknowledged": exp.probe["lost"],
        "two_actives_seen": exp.probe["interleaved"],
        "phases_ms": {
            k: stats([f.phases_ms[k] for f in exp.faults if k in f.phases_ms]) for k in phase_names
        },
        "health_check": {"interval_ms": hc.interval_ms, "failure_threshold": hc.failure_threshold},
        "per_fault": [
            {"target": f.target, "outage_ms": f.outage_ms, "lost": f.lost, "phases_ms": f.phases_ms}
            for f in exp.faults
        ],
    }


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def counter_startup(n: int) -> dict[str, float]:
    """The component's own start-up: spawn of a standalone counter to its first answer."""
    counter = [str(Path(sys.executable).parent / "nfvha-counter"), "--standalone"]
    times = []
    for _ in range(n):
        port = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            start = time.monotonic_ns()
            proc = subprocess.Popen([*counter, "--address", f"127.0.0.1:{port}"])
            try:
                while True:
                    sock.sendto(b"GET 1", ("127.0.0.1", port))
                    if select.select([sock], [], [], 0.0005)[0]:
                        try:
                            if sock.recv(100).startswith(b"OK"):
                                break
                        except ConnectionRefusedError:
                            pass
            finally:
                times.append((time.monotonic_ns() - start) / 1e6)
                proc.kill()
                proc.wait()
    return stats(times)


def exit_detection_floor(n: int) -> dict[str, float]:
    """SIGKILL of an idle Python process to its pidfd becoming readable: the kernel's part."""
    times = []
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, "-c", "import asyncio, time; time.sleep(60)"])
        time.sleep(0.3)
        pidfd = os.pidfd_open(proc.pid)
        start = time.monotonic_ns()
        os.kill(proc.pid, signal.SIGKILL)
        select.select([pidfd], [], [])
        times.append((time.monotonic_ns() - start) / 1e6)
        os.close(pidfd)
        proc.wait()
    return stats(times)


def machine() -> dict[str, object]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def verdicts(results: dict) -> list[dict]:
    out = []
    startup = results["counter_startup_ms"]["median"]
    for run in results["runs"]:
        o, model = run["outage_ms"], run["model"]
        lost_ok = run["lost_acknowledged"] == 0 and not run["two_actives_seen"]
        if run["fault"] == "hang":
            hc = run["health_check"]
            budget = hc["interval_ms"] * hc["failure_threshold"] + GOALS["hang_slack_ms"]
            detected = run["phases_ms"]["detected"]["max"]
            goal, met = f"detected ≤ {budget:g} ms", detected <= budget
        elif model == "none":
            limit = startup + GOALS["none"]["above_startup_ms"]
            goal, met = f"median ≤ start-up {startup:.1f} + 30 ms", o["median"] <= limit
        else:
            g = GOALS[model]
            goal = f"median ≤ {g['median_ms']:g}, max ≤ {g['max_ms']:g} ms"
            met = o["median"] <= g["median_ms"] and o["max"] <= g["max_ms"]
        out.append({"model": model, "fault": run["fault"], "goal": goal, "met": met and lost_ok})
    return out


def table(results: dict) -> str:
    lines = [
        "| model | fault | N | outage median | p95 | max | lost | detected (median / max) | "
        "serving (median) | goal | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, v in zip(results["runs"], results["verdicts"], strict=True):
        o, p = run["outage_ms"], run["phases_ms"]
        det, srv = p.get("detected", {}), p.get("serving", {})
        lines.append(
            f"| {run['model']} | {run['fault']} | {o['n']} | {o['median']:.1f} ms | "
            f"{o['p95']:.1f} | {o['max']:.1f} | {run['lost_acknowledged']} | "
            f"{det.get('median', 0):.1f} / "
            f"{det.get('max', 0):.1f} | {srv.get('median', 0):.1f} | {v['goal']} | "
            f"{'yes' if v['met'] else '**no**'} |"
        )
    s, k = results["counter_startup_ms"], results["exit_detection_floor_ms"]
    lines.append("")
    lines.append(
        f"Counter's own start-up (spawn → first answer, N={s['n']}): median {s['median']:.1f} ms, "
        f"p95 {s['p95']:.1f}, max {s['max']:.1f}. Kernel floor, SIGKILL → pidfd readable "
        f"(N={k['n']}): median {k['median']:.2f} ms, max {k['max']:.2f}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="faults per model and kind")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between faults")
    parser.add_argument("--out", type=Path, default=RESULTS / "failover.json")
    args = parser.parse_args()
    runs = []
    for fault in ("kill", "hang"):
        for model in ("2n", "n+m", "none"):
            print(f"{model} / {fault} x{args.n} ...", file=sys.stderr, flush=True)
            runs.append(run_model(model, fault, args.n, args.spacing))
    results = {
        "machine": machine(),
        "probe_interval_ms": 1.0,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "counter_startup_ms": counter_startup(args.n),
        "exit_detection_floor_ms": exit_detection_floor(args.n),
        "runs": runs,
    }
    results["verdicts"] = verdicts(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
