"""State-sync benchmark: acknowledged-write latency and write rate per ``state_sync`` mode.

Writes bench/results/sync.json and prints the README table. Run with `make bench`.

For each mode (manager, direct, shared_storage, store) `nfvha run` leads a copy of the shipped 2n
example with that ``state_sync`` (store: a 3-member etcd cluster on loopback, started here). An
INC is answered only once its increment is durable as the mode says, so the consumer's round
trip of an INC is the acknowledged-write latency (plus a loopback UDP round trip, which the GET
row measures): one consumer, one INC at a time, N of them. The write rate: C consumers, each
with one INC in flight, for D seconds. Every INC must be acknowledged (an ERR or a lost answer
fails the row), and a GET afterwards must answer the number of INCs acknowledged.

The issue names no ceiling for these figures; the table reports them. Each row is compared with
the last committed results (more than 25 % worse on the median is flagged).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import manager
import provenance
import run

sys.path.append(str(Path(__file__).resolve().parent.parent))  # last: the tests' etcd launcher
from nfvha.lab.stats import summary as stats  # noqa: E402
from tests.integration.support.etcd import EtcdCluster  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODES = ("manager", "direct", "shared_storage", "store")


class Client:
    """One consumer: a UDP socket, one request at a time."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.addr = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.seq = 0

    def request(self, op: str) -> tuple[float, int | None]:
        """(round trip in ms, the total answered or None for an ERR or no answer)."""
        self.seq += 1
        t0 = time.perf_counter_ns()
        self.sock.sendto(f"{op} {self.seq}".encode(), self.addr)
        try:
            while True:
                parts = self.sock.recv(2048).split()
                if len(parts) >= 2 and parts[1] == str(self.seq).encode():
                    break
        except OSError:
            return (time.perf_counter_ns() - t0) / 1e6, None
        rtt = (time.perf_counter_ns() - t0) / 1e6
        return rtt, int(parts[2]) if parts[0] == b"OK" else None

    def close(self) -> None:
        self.sock.close()


def latencies(address: str, op: str, n: int) -> tuple[list[float], int]:
    client = Client(address)
    samples, failed = [], 0
    try:
        for _ in range(n):
            rtt, total = client.request(op)
            samples.append(rtt)
            failed += total is None
    finally:
        client.close()
    return samples, failed


async def rate(address: str, consumers: int, seconds: float) -> tuple[int, int]:
    """(acknowledged, failed) INCs of ``consumers`` parallel consumers in ``seconds``."""
    deadline = time.monotonic() + seconds
    counts = [0, 0]

    def consume() -> None:
        client = Client(address)
        try:
            while time.monotonic() < deadline:
                _, total = client.request("INC")
                counts[total is None] += 1
        finally:
            client.close()

    await asyncio.gather(*(asyncio.to_thread(consume) for _ in range(consumers)))
    return counts[0], counts[1]


def measure_mode(mode: str, n: int, consumers: int, seconds: float, etcd: list[str]) -> dict:
    def edit(raw: dict[str, Any]) -> None:
        raw["vnfs"][0]["state_sync"] = mode
        if mode == "store":
            raw["vnfs"][0]["state_store"] = {"etcd": etcd}

    with tempfile.TemporaryDirectory(prefix="nfvha-bench-sync-") as tmp:
        dep = manager.Deployment(Path(tmp), edit, standby_manager=False)
        try:
            manager.wait_for(dep.steady_status, "a steady deployment")
            time.sleep(0.3)  # direct: the active's link to its standby
            gets, _ = latencies(dep.address, "GET", n)
            writes, failed = latencies(dep.address, "INC", n)
            acked, failed_rate = asyncio.run(rate(dep.address, consumers, seconds))
            _, total = Client(dep.address).request("GET")
        finally:
            left = dep.stop(dep.proc.pid)
    expected = n - failed + acked
    row = {
        "state_sync": mode,
        "write_latency_ms": stats(writes),
        "write_p99_ms": percentile(writes, 0.99),
        "get_latency_ms": stats(gets),
        "writes_per_s": round(acked / seconds, 1),
        "consumers": consumers,
        "seconds": seconds,
        "failed_writes": failed + failed_rate,
        "total_after": total,
        "total_expected": expected,
        "leftovers": left,
    }
    row["met"] = not row["failed_writes"] and total == expected and not left
    return row


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| state_sync | N | write median | p99 | max | GET median | writes/s "
        f"({results['consumers']} consumers) | failed | total checked | vs last | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        w = r["write_latency_ms"]
        checked = r["total_after"] == r["total_expected"]
        lines.append(
            f"| {r['state_sync']} | {w['n']} | {w['median']:.3f} ms | "
            f"{r['write_p99_ms']:.3f} | {w['max']:.3f} | "
            f"{r['get_latency_ms']['median']:.3f} ms | {r['writes_per_s']:.0f} | "
            f"{r['failed_writes']} | {'yes' if checked else '**no**'} | "
            f"{provenance.vs_last(r)} | {'yes' if r['met'] else '**no**'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="sequential writes per mode")
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", nargs="*", choices=MODES)
    parser.add_argument("--out", type=Path, default=RESULTS / "sync.json")
    args = parser.parse_args()
    prov = provenance.provenance()
    runs = []
    with tempfile.TemporaryDirectory(prefix="nfvha-bench-etcd-") as tmp:
        cluster = EtcdCluster(Path(tmp))
        cluster.start_all()
        try:
            for mode in args.only or MODES:
                print(f"state_sync {mode} ...", file=sys.stderr, flush=True)
                runs.append(
                    measure_mode(mode, args.n, args.consumers, args.seconds, cluster.endpoints)
                )
        finally:
            cluster.stop_all()
    results = {
        "provenance": prov,
        "machine": run.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "consumers": args.consumers,
        "runs": runs,
    }
    run.compare_with_last(results, "sync", lambda r: r["state_sync"], "write_latency_ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0 if all(r["met"] for r in runs) else 1


if __name__ == "__main__":
    run.exit_cleanly_on_sigterm()
    sys.exit(main())
