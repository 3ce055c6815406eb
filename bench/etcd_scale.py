"""Control-plane scale benchmark: N simulated host agents on leases against a 3-member etcd.

Writes bench/results/etcd_scale.json and prints the README table. Run with `make bench`.

A 3-member etcd cluster on loopback (the tests' launcher, temp dirs, free ports) and ``--agents``
agents, asyncio tasks spread over ``--procs`` worker processes (this script with ``--worker``).
Each agent is one host as the design has it: its own etcd connection, a lease of the default TTL
(``EtcdCoordinator``'s 2 s) granted once, its registration key written under that lease, and a
keep-alive every ``renew_s`` after the last reply (``LeaseTiming.for_ttl``: 0.5 s), one attempt
lasting at most ``retry_s`` (0.75 s). A renewal that fails, takes longer than ``retry_s``, or
is answered with TTL <= 0 is missed: the design would demote on it (it must be 0). Agents are
spread over the members in turn.

Measured over a window of ``--seconds`` once every agent is registered: keep-alives served (the
members' ``grpc_server_msg_received_total`` for LeaseKeepAlive, and the leader lessor's
``etcd_debugging_lease_renewed_total``), raft proposals committed and puts applied (the leader's
``etcd_server_proposals_committed_total``, ``etcd_debugging_mvcc_put_total``), the CPU of each
member and of the worker processes (``/proc/<pid>/stat``, CPU seconds per second), and the
agents' renewal latency. Then a reference row: ``--writers`` concurrent writers putting as fast
as they can for ``--put-seconds`` (the put-throughput ceiling on this machine, client included).

Every etcd member and worker is killed and the temp dir removed, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import provenance
import run

sys.path.append(str(Path(__file__).resolve().parent.parent))  # last: the tests' etcd launcher
from nfvha.core.lease import LeaseTiming  # noqa: E402
from nfvha.lab.stats import percentile  # noqa: E402
from nfvha.lab.stats import summary as stats  # noqa: E402
from tests.integration.support.etcd import EtcdCluster  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TTL_S = 2  # EtcdCoordinator's default TTL
TIMING = LeaseTiming.for_ttl(TTL_S)
SETTLE_S = 1.0  # after the last registration, before the window opens
TICK = os.sysconf("SC_CLK_TCK")


# --- the worker: agents or writers in one process ---------------------------------------------


def _client(endpoint: str) -> Any:
    import aetcd  # type: ignore[import-untyped]

    host, _, port = endpoint.rpartition(":")
    return aetcd.Client(host, int(port), timeout=5.0, options={"grpc.enable_http_proxy": 0})


class Agent:
    """One host: a lease, its registration key under it, a keep-alive every renew_s."""

    def __init__(self, name: str, endpoint: str) -> None:
        self.name, self.client = name, _client(endpoint)
        self.lease: int | None = None
        self.samples: list[tuple[float, float]] = []  # (wall time sent, latency s)
        self.missed: list[tuple[float, str]] = []

    async def register(self) -> None:
        lease = await self.client.lease(TIMING.ttl_s)
        await self.client.put(f"/nfvha/bench/hosts/{self.name}".encode(), b"up", lease=lease.id)
        self.lease = lease.id

    async def renew_forever(self) -> None:
        loop = asyncio.get_running_loop()
        # Hosts do not start in step: a random phase, or every keep-alive would come at once.
        await asyncio.sleep(random.uniform(0, TIMING.renew_s))
        while True:
            await asyncio.sleep(TIMING.renew_s)
            wall, sent = time.time(), loop.time()
            try:
                async with asyncio.timeout(TIMING.retry_s):
                    reply = await self.client.refresh_lease(self.lease)
            except Exception as exc:  # noqa: BLE001  # any failure is a missed renewal
                self.missed.append((wall, f"{type(exc).__name__}: {exc}"[:200]))
                await self.register()  # demoted: campaign again, as the design does
                continue
            self.samples.append((wall, loop.time() - sent))
            if reply is None or reply.TTL <= 0:
                self.missed.append((wall, "lease expired"))
                await self.register()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.revoke_lease(self.lease)
        with contextlib.suppress(Exception):
            await self.client.close()


async def _agents(endpoints: list[str], first: int, count: int) -> dict[str, Any]:
    agents = [
        Agent(f"h{i:05d}", endpoints[i % len(endpoints)]) for i in range(first, first + count)
    ]
    # Registrations in batches (a thousand grants at once would time out behind each other),
    # each batch renewing from its registration on: its leases run from then.
    tasks = []
    for at in range(0, count, 50):
        batch = agents[at : at + 50]
        await asyncio.gather(*(a.register() for a in batch))
        tasks += [asyncio.create_task(a.renew_forever()) for a in batch]
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)  # "stop <t0> <t1>" from the parent
    _, lo, hi = line.split()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(a.close() for a in agents))
    within = [lat for a in agents for wall, lat in a.samples if float(lo) <= wall <= float(hi)]
    return {
        "latencies_s": within,
        "missed": [m for a in agents for m in a.missed],
        "missed_in_window": sum(float(lo) <= w <= float(hi) for a in agents for w, _ in a.missed),
    }


async def _writers(endpoints: list[str], count: int) -> dict[str, Any]:
    clients = [_client(e) for e in endpoints]
    done = [0, 0]
    stopped = asyncio.Event()

    async def write(i: int) -> None:
        client = clients[i % len(clients)]
        while not stopped.is_set():
            try:
                await client.put(f"/nfvha/bench/put/{os.getpid()}/{i}".encode(), b"x" * 64)
                done[0] += 1
            except Exception:  # noqa: BLE001  # counted, the ceiling is what was served
                done[1] += 1

    tasks = [asyncio.create_task(write(i)) for i in range(count)]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "stop" from the parent
    stopped.set()
    await asyncio.gather(*tasks)
    for c in clients:
        with contextlib.suppress(Exception):
            await c.close()
    return {"puts": done[0], "failed": done[1]}


def worker(argv: list[str]) -> None:
    mode, endpoints = argv[0], argv[1].split(",")
    if mode == "agents":
        out = asyncio.run(_agents(endpoints, int(argv[2]), int(argv[3])))
    else:
        out = asyncio.run(_writers(endpoints, int(argv[2])))
    print(json.dumps(out), flush=True)


# --- the parent: the cluster, the metrics, the window --------------------------------------------


def metrics(endpoint: str) -> dict[str, float]:
    """The counters this benchmark reads from one member's /metrics (summed over labels)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{endpoint}/metrics", timeout=5.0) as reply:
        text = reply.read().decode()
    wanted = {
        "proposals": r"^etcd_server_proposals_committed_total (\S+)",
        "puts": r"^etcd_debugging_mvcc_put_total (\S+)",
        "renewed": r"^etcd_debugging_lease_renewed_total (\S+)",
        "granted": r"^etcd_debugging_lease_granted_total (\S+)",
        "keepalives": r"^grpc_server_msg_received_total\{[^}]*"
        r'grpc_method="LeaseKeepAlive"[^}]*\} (\S+)',
    }
    return {k: sum(float(v) for v in re.findall(p, text, re.M)) for k, p in wanted.items()}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class Window:
    """Counters and CPU of every member (and of the workers) at the start and the end."""

    def __init__(self, cluster: EtcdCluster, workers: list[subprocess.Popen[str]]) -> None:
        self.cluster, self.workers = cluster, workers

    def snap(self) -> dict[str, Any]:
        return {
            "t": time.monotonic(),
            "wall": time.time(),
            "metrics": [metrics(e) for e in self.cluster.endpoints],
            "cpu": [cpu_s(p.pid) for p in self.cluster.procs if p is not None],
            "workers_cpu": sum(cpu_s(w.pid) for w in self.workers),
        }

    def rates(self, a: dict[str, Any], b: dict[str, Any], leader: int) -> dict[str, Any]:
        dt = b["t"] - a["t"]

        def per_s(member: int, key: str) -> float:
            return round((b["metrics"][member][key] - a["metrics"][member][key]) / dt, 1)

        members = range(len(a["cpu"]))
        return {
            "seconds": round(dt, 2),
            "leader": leader,
            "keepalives_per_s": round(sum(per_s(m, "keepalives") for m in members), 1),
            "leader_renewals_per_s": per_s(leader, "renewed"),
            "proposals_per_s": per_s(leader, "proposals"),
            "puts_per_s": per_s(leader, "puts"),
            "leases_granted_per_s": per_s(leader, "granted"),
            "leader_cpu": round((b["cpu"][leader] - a["cpu"][leader]) / dt, 3),
            "members_cpu": [round((b["cpu"][m] - a["cpu"][m]) / dt, 3) for m in members],
            "clients_cpu": round((b["workers_cpu"] - a["workers_cpu"]) / dt, 3),
        }


def spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_ready(workers: list[subprocess.Popen[str]]) -> None:
    for w in workers:
        assert w.stdout is not None
        if w.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {w.pid} did not start (exit {w.poll()})")


def collect(workers: list[subprocess.Popen[str]], line: str = "") -> list[dict[str, Any]]:
    outs = []
    for w in workers:
        out, _ = w.communicate(line, timeout=60)
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def stop(workers: list[subprocess.Popen[str]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.kill()
        w.wait()


def measure_agents(cluster: EtcdCluster, agents: int, procs: int, seconds: float) -> dict:
    share = [agents // procs + (i < agents % procs) for i in range(procs)]
    firsts = [sum(share[:i]) for i in range(procs)]
    eps = ",".join(cluster.endpoints)
    load_before = os.getloadavg()[0]  # other work on the machine competes for its cores
    workers = [spawn(["agents", eps, str(f), str(n)]) for f, n in zip(firsts, share, strict=True)]
    try:
        t_setup = time.monotonic()
        wait_ready(workers)
        setup_s = time.monotonic() - t_setup
        time.sleep(SETTLE_S)
        window = Window(cluster, workers)
        leader = cluster.leader()
        a = window.snap()
        time.sleep(seconds)
        b = window.snap()
        leader_after = cluster.leader()
        outs = collect(workers, f"stop {a['wall']} {b['wall']}\n")
    finally:
        stop(workers)
    lat_ms = [s * 1000 for o in outs for s in o["latencies_s"]]
    row = {
        "agents": agents,
        "procs": procs,
        "ttl_s": TIMING.ttl_s,
        "renew_s": TIMING.renew_s,
        "retry_s": TIMING.retry_s,
        "setup_s": round(setup_s, 2),
        "expected_keepalives_per_s": round(agents / TIMING.renew_s, 1),
        **window.rates(a, b, leader),
        "leader_changed": leader_after != leader,
        "renewal_ms": stats(lat_ms),
        "renewal_p99_ms": round(percentile(lat_ms, 0.99), 3) if lat_ms else None,
        "missed": sum(len(o["missed"]) for o in outs),
        "missed_in_window": sum(o["missed_in_window"] for o in outs),
        "missed_examples": [m for o in outs for m in o["missed"]][:5],
        "load_average_before": load_before,
    }
    row["met"] = row["missed"] == 0 and not row["leader_changed"]
    return row


def measure_puts(cluster: EtcdCluster, writers: int, procs: int, seconds: float) -> dict:
    eps = ",".join(cluster.endpoints)
    share = [writers // procs + (i < writers % procs) for i in range(procs)]
    workers = [spawn(["puts", eps, str(n)]) for n in share]
    try:
        wait_ready(workers)
        window = Window(cluster, workers)
        leader = cluster.leader()
        a = window.snap()
        time.sleep(seconds)
        b = window.snap()
        outs = collect(workers, "stop\n")
    finally:
        stop(workers)
    return {
        "writers": writers,
        "procs": procs,
        **window.rates(a, b, leader),
        "failed": sum(o["failed"] for o in outs),
    }


def table(results: dict[str, Any]) -> str:
    a, p = results["agents"], results["puts"]
    r = a["renewal_ms"]
    lines = [
        "| load | keep-alives/s | proposals/s | puts/s | etcd leader CPU | followers' CPU "
        "| clients' CPU | renewal median / p99 / max | missed |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {a['agents']:,} agents ({a['procs']} processes), TTL {a['ttl_s']} s, renew every "
        f"{a['renew_s']} s, {a['seconds']} s | {a['keepalives_per_s']:,.0f} "
        f"(leader renewed {a['leader_renewals_per_s']:,.0f}) | {a['proposals_per_s']:,.1f} | "
        f"{a['puts_per_s']:,.1f} | {a['leader_cpu']:.2f} | {_followers(a)} | "
        f"{a['clients_cpu']:.2f} | {r['median']} / {a['renewal_p99_ms']} / {r['max']} ms | "
        f"{'0' if a['missed'] == 0 else '**' + str(a['missed']) + '**'} |",
        f"| reference: {p['writers']} writers putting flat out ({p['procs']} processes), "
        f"{p['seconds']} s | - | {p['proposals_per_s']:,.0f} | {p['puts_per_s']:,.0f} | "
        f"{p['leader_cpu']:.2f} | {_followers(p)} | {p['clients_cpu']:.2f} | - | "
        f"{p['failed']} failed |",
    ]
    return "\n".join(lines)


def _followers(row: dict[str, Any]) -> str:
    return " + ".join(f"{c:.2f}" for m, c in enumerate(row["members_cpu"]) if m != row["leader"])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4, help="worker processes of agents")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--writers", type=int, default=300)
    parser.add_argument("--put-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "etcd_scale.json")
    args = parser.parse_args()
    prov = provenance.provenance()
    with tempfile.TemporaryDirectory(prefix="nfvha-bench-etcd-") as tmp:
        cluster = EtcdCluster(Path(tmp))
        try:
            cluster.start_all()
            print(f"{args.agents} agents ...", file=sys.stderr, flush=True)
            agents = measure_agents(cluster, args.agents, args.procs, args.seconds)
            print(f"{args.writers} writers ...", file=sys.stderr, flush=True)
            puts = measure_puts(cluster, args.writers, args.procs, args.put_seconds)
        finally:
            cluster.stop_all()
    results = {
        "provenance": prov,
        "machine": run.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "agents": agents,
        "puts": puts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0 if agents["met"] else 1


if __name__ == "__main__":
    run.exit_cleanly_on_sigterm()
    sys.exit(main())
