"""Virtual-IP failover side by side on a real provider network: keepalived (VRRPv3, Debian's
package) now; nfvha's VIP failover is a second system with the same hooks (``System``).

Writes bench/results/vip.json and prints the README table. Run with `make bench`.

Each trial builds its own network (drivers/network.py): nodes ``a`` and ``b``, each with the
plain responder (examples/responder.py, no SDK) prestarted on VIP:PORT with IP_FREEBIND, and a
``consumer`` whose probe (`nfvha probe`, GET every 1 ms, in the consumer's namespace) measures
what a client sees. keepalived runs in ``a`` and ``b`` as its users typically run it: VRRPv3,
multicast adverts on eth0, ``a`` MASTER at priority 150, ``b`` BACKUP at 100, preemption on
(keepalived's default), at advert_int 1, 0.1 and 0.01 s. Once steady (``a`` master and serving
the consumer, ``b`` backup, then 2 adverts more), the fault comes at a uniformly random phase
of one advert interval:

- ``kill``: SIGKILL of the holder's keepalived and responder together (no goodbye advert: the
  backup sees only missing adverts); the trial ends once ``b`` answers the consumer.
- ``cut``: the holder's link cut (its bridge port down); the trial ends once ``b`` answers.
- ``stress``: no fault; one busy loop per core (pinned), started in the holder's namespace, for
  a fixed window: every VRRP takeover by the backup in it is a false one (a flap).
- ``partition``: ``a``'s link cut for PARTITION_S, then healed; the trial ends HEAL_ADVERTS
  adverts after the heal (long enough for a preempting master to come back), and checks that
  exactly one node holds the VIP and the consumer's ARP entry points at its MAC (re-announced).

Measured per trial: the consumer's outage (last good answer before the fault → first good
answer after it; at a partition also the longest silence ending after the heal; under stress
the longest silence in the window), when the backup's VRRP became master (keepalived's notify
FIFO), when the VIP appeared in its kernel and when the consumer was first answered after the
fault; split-brain samples, the instants when two nodes' kernels held the VIP (sampled every
SAMPLE_S through open netlink sockets, from the fault to the trial's end). keepalived's
detection budget is its Master_Down_Interval, 3 x advert + (256 - priority)/256 x advert.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import manager
import provenance
import run

from nfvha.drivers import network
from nfvha.drivers.network import Node, ProviderNetwork
from nfvha.lab import keepalived
from nfvha.lab.stats import summary as stats
from nfvha.runtime import control, paths

RESULTS = Path(__file__).parent / "results"
VIP = "10.77.0.200"
PORT = 7800
PROBE_MS = 1.0
ADVERTS = (1.0, 0.1, 0.01)
FAULTS = ("kill", "cut", "stress", "partition")
FAULT_TEXT = {
    "kill": "holder's processes killed",
    "cut": "holder's link cut",
    "stress": "CPU stress on the holder, no fault",
    "partition": "partition, then heal",
}
SAMPLE_S = 0.002  # holder sampling period
SETTLE_ADVERTS = 1  # steady, then this many adverts (at least MIN_SETTLE_S) before the fault
MIN_SETTLE_S = 0.2
LINGER_S = 0.3  # after the recovery: the consumer's answers go on
PARTITION_S = 3.0
HEAL_ADVERTS = 5  # after the heal: keepalived's master down interval and then some
MIN_HEAL_S = 0.5
STRESS_S = 10.0
PATIENCE_S = 20.0
DEPLOYMENT = "vip-bench"  # every trial's network: a dead run's is removed by the next
PRIORITY = {"a": 150, "b": 100}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- the systems under test -------------------------------------------------------------------


@dataclass
class Setup:
    """What a system gives the measurement: the VIP's candidates (first the one expected to
    hold it once steady) and the consumer, all in their own namespaces."""

    nodes: list[Node]
    consumer: Node
    vip: str
    port: int


class System(Protocol):
    """One VIP failover implementation; a trial calls start, steady (polled), one of kill /
    cut / heal, then events and stop (always)."""

    name: str

    def start(self, advert_s: float) -> Setup: ...

    def steady(self) -> str | None:
        """The node serving the VIP once failover is armed (its backup ready), else None."""

    def kill(self, node: str) -> None:
        """The node's processes die at once: the VIP failover's and the service's."""

    def cut(self, node: str) -> int: ...

    def heal(self, node: str) -> int: ...

    def takeovers(self) -> list[tuple[int, str]]:
        """(CLOCK_MONOTONIC ns, node) whenever a node's failover logic took the VIP."""

    def budget_ms(self, advert_s: float) -> float:
        """The detection budget after the last heartbeat/advert of a silent holder."""

    def config(self) -> dict[str, Any]: ...

    def stop(self) -> list[str]:
        """Stop everything; the namespaces it could not remove (must be [])."""


class OnProviderNetwork:
    """A system whose nodes are on a ProviderNetwork: a link cut is its node's bridge port."""

    net: ProviderNetwork | None = None

    def cut(self, node: str) -> int:
        assert self.net is not None
        return self.net.cut(self.net.nodes[node])

    def heal(self, node: str) -> int:
        assert self.net is not None
        return self.net.heal(self.net.nodes[node])


class Keepalived(OnProviderNetwork):
    """keepalived VRRPv3 in nodes ``a`` and ``b`` of a ProviderNetwork, the responder in both."""

    name = "keepalived"

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.net: ProviderNetwork | None = None
        self.work: Path | None = None
        self.daemons: dict[str, keepalived.Keepalived] = {}
        self.responders: dict[str, subprocess.Popen[str]] = {}

    def start(self, advert_s: float) -> Setup:
        network.remove_leftovers(DEPLOYMENT)
        self.work = Path(tempfile.mkdtemp(prefix="nfvha-bench-vip-"))
        self.net = ProviderNetwork(DEPLOYMENT)
        a, b, consumer = (self.net.add_node(n) for n in ("a", "b", "consumer"))
        for node in (a, b):
            self.responders[node.name] = start_responder(node)
        for node in (a, b):
            daemon = keepalived.Keepalived(node.name, node.netns, self.work)
            self.daemons[node.name] = daemon
            daemon.start(self._config(node, advert_s, daemon.path("fifo")), self.exe)
        return Setup([a, b], consumer, VIP, PORT)

    @staticmethod
    def _config(node: Node, advert_s: float, fifo: Path) -> str:
        return keepalived.vrrp_config(
            node.name,
            interface=node.ifname,
            vip=VIP,
            prefixlen=node.prefixlen,
            priority=PRIORITY[node.name],
            advert_s=advert_s,
            fifo=fifo,
            master=node.name == "a",
        )

    def steady(self) -> str | None:
        states = {name: d.state for name, d in self.daemons.items()}
        return "a" if states == {"a": "MASTER", "b": "BACKUP"} else None

    def kill(self, node: str) -> None:
        keepalived.kill_together([*self.daemons[node].pids(), self.responders[node].pid])

    def takeovers(self) -> list[tuple[int, str]]:
        return sorted(
            (t.t, name)
            for name, d in self.daemons.items()
            for t in d.transitions
            if t.state == "MASTER"
        )

    def budget_ms(self, advert_s: float) -> float:
        return round((3 + (256 - PRIORITY["b"]) / 256) * advert_s * 1000, 3)

    def config(self) -> dict[str, Any]:
        return {
            "version": keepalived_version(self.exe),
            "vrrp": 3,
            "adverts": "multicast on eth0",
            "priority": PRIORITY,
            "initial_state": {"a": "MASTER", "b": "BACKUP"},
            "preempt": True,
            "options": "keepalived's defaults otherwise (no max_auto_priority: no realtime)",
        }

    def stop(self) -> list[str]:
        for daemon in self.daemons.values():
            daemon.kill()  # the trial is over: its namespaces, VIP and all, go next
            daemon.stop()
        for proc in self.responders.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self.net is not None:
            self.net.remove()
        self.daemons, self.responders, self.net = {}, {}, None
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        return network.namespaces_of(DEPLOYMENT)


class Nfvha(OnProviderNetwork):
    """nfvha's own virtual-IP failover: `nfvha run` in network mode netns, the same responder as
    a 2n hot standby (VNFCs ``a`` and ``b``, each in its own node), the VIP moved by the HA
    manager. Its detection of a silent node is the UDP health check from the manager's node,
    every ``advert_s`` with 3 misses: the same budget as VRRP's 3 adverts."""

    name = "nfvha"
    deployment = "vip-bench-nfvha"

    def __init__(self) -> None:
        self.work: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.net: ProviderNetwork | None = None
        self.socket = paths.control_socket(self.deployment)

    def start(self, advert_s: float) -> Setup:
        network.remove_leftovers(self.deployment)
        self.work = Path(tempfile.mkdtemp(prefix="nfvha-bench-vip-nfvha-"))
        config = self.work / "vip.yaml"
        config.write_text(json.dumps(self._deployment(advert_s)))
        with open(self.work / "run.err", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nfvha", "run", str(config), "--no-standby-manager"]
                + ["--trace", str(self.work / "trace.jsonl")]
                + ["--state-dir", str(self.work / "state")],  # its logs go with the trial
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        try:
            manager.wait_for(
                lambda: (self._status() or {}).get("network", {}).get("mode") == "netns",
                "nfvha running in network mode netns",
            )
            self.net = ProviderNetwork(self.deployment, attach=True)
            a, b, consumer = (self.net.add_node(n) for n in ("a", "b", "consumer"))
        except BaseException:
            self.stop()  # the trial only stops what has started
            raise
        return Setup([a, b], consumer, VIP, PORT)

    def _deployment(self, advert_s: float) -> dict[str, Any]:
        interval = max(1, round(advert_s * 1000))
        return {
            "name": self.deployment,
            "network": {"mode": "netns"},
            "vnfs": [
                {
                    "name": "echo",
                    "redundancy": {"model": "2n"},
                    "state": "none",
                    "sdk": False,
                    "service": {"name": "echo", "address": f"127.0.0.1:{PORT}", "vip": VIP},
                    "vnfcs": [
                        {"name": n, "command": [sys.executable, "-m", "nfvha.examples.responder"]}
                        for n in ("a", "b")
                    ],
                    "policies": {
                        "health_check": {
                            "kind": "udp",
                            "send": "GET 0",
                            "expect": "OK",
                            "interval_ms": interval,
                            "failure_threshold": 3,
                        },
                        "cleanup_grace_ms": 0,
                    },
                }
            ],
        }

    def _status(self) -> dict[str, Any] | None:
        try:
            return control.request(self.socket, {"op": "status"}, timeout=2)
        except (control.ControlError, ValueError, OSError):
            return None

    def steady(self) -> str | None:
        st = self._status()
        if st is None:
            return None
        svc, vnfcs = st["vnfs"][0]["service"], st["vnfs"][0]["vnfcs"]
        ready = all(c["state"] == "running" and c["role"] != "none" for c in vnfcs)
        if not (ready and svc["up"] and len(svc["active"]) == 1):
            return None
        return svc["active"][0] if svc.get("vip_holder") == svc["active"][0] else None

    def kill(self, node: str) -> None:
        st = self._status()
        assert st is not None
        pid = next(c["pid"] for c in st["vnfs"][0]["vnfcs"] if c["name"] == node)
        os.kill(pid, signal.SIGKILL)  # the responder dies; the manager sees it by pidfd

    def takeovers(self) -> list[tuple[int, str]]:
        assert self.work is not None
        trace = self.work / "trace.jsonl"
        records = [json.loads(x) for x in trace.read_text().splitlines() if x.strip()]
        return sorted(
            (r["data"]["t"], r["data"]["node"])
            for r in records
            if r["name"] == "AddressClaimed" and r["data"].get("changed")
        )

    def budget_ms(self, advert_s: float) -> float:
        return round(3 * max(1, round(advert_s * 1000)), 3)  # 3 missed checks

    def config(self) -> dict[str, Any]:
        return {
            "mode": "netns (a node namespace per VNFC)",
            "model": "2n hot standby, sdk: false, state: none",
            "detection": "process exit by pidfd; a silent node by 3 missed UDP checks every advert",
            "standby_manager": False,
        }

    def stop(self) -> list[str]:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=PATIENCE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc, self.net = None, None  # the run removed its namespaces
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        left = network.namespaces_of(self.deployment)
        network.remove_leftovers(self.deployment)
        return left


def start_responder(node: Node) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", node.netns, sys.executable, "-m", "nfvha.examples.responder"]
        + ["--name", node.name, "--address", f"{VIP}:{PORT}"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the responder in {node.netns} did not start")
    return proc


@functools.cache
def keepalived_version(exe: str) -> str:
    done = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return (done.stdout + done.stderr).split("\n", 1)[0].strip()


# --- what the measurement watches -------------------------------------------------------------


class HolderWatch:
    """Samples the VIP's holders every SAMPLE_S in a thread of its own: the changes, and per
    sample whether two held it at once (a split brain, in the kernels).

    A sample reads the nodes one after the other (about 0.5 ms in all), so one pass can see
    the old holder before its release and the new one after its claim: a move, not an
    overlap. So each sample is two passes, and only nodes holding the VIP in both count: each
    held it from its first read to its second, and those intervals overlap (every first read
    comes before every second one)."""

    def __init__(self, nodes: list[Node], vip: str) -> None:
        self.nodes, self.vip = nodes, vip
        self.changes: list[tuple[int, tuple[str, ...]]] = []  # (t ns, holders from then on)
        self.samples: list[tuple[int, int]] = []  # (t ns, number of holders)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holders", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> HolderWatch:
        self._thread.start()
        self._ready.wait(PATIENCE_S)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            with network.holder_sampler(self.nodes, self.vip) as sample:
                self._ready.set()
                while not self._stop.is_set():
                    first = set(sample())
                    held = tuple(sample())  # the newest: what the changes follow
                    t = time.monotonic_ns()
                    self.samples.append((t, len(first.intersection(held))))
                    if not self.changes or self.changes[-1][1] != held:
                        self.changes.append((t, held))
                    time.sleep(SAMPLE_S)
        except BaseException as e:  # handed to the caller
            self._error = e
            self._ready.set()

    def holders(self) -> tuple[str, ...]:
        return self.changes[-1][1] if self.changes else ()

    def split_brain(self, from_ns: int, to_ns: int) -> dict[str, Any]:
        window = [n for t, n in self.samples if from_ns <= t <= to_ns]
        two = [n for n in window if n > 1]
        return {"samples": len(two), "of": len(window)}

    def first_holding(self, node: str, after_ns: int) -> int | None:
        return next((t for t, held in self.changes if t >= after_ns and node in held), None)

    def moves(self, from_ns: int, to_ns: int) -> int:
        """Changes of the holder set within the window."""
        return sum(1 for t, _ in self.changes if from_ns <= t <= to_ns)

    def settled_at(self, from_ns: int, to_ns: int) -> int | None:
        """When the holder set last changed within the window (None if it did not)."""
        inside = [t for t, _ in self.changes if from_ns <= t <= to_ns]
        return inside[-1] if inside else None


def answered_by(consumer: Node, vip: str, port: int) -> str | None:
    """Who answers a new request from the consumer (a fresh socket: a new source port)."""
    with network.socket_in(consumer.netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.05)
        try:
            s.sendto(b"GET 0", (vip, port))
            parts = s.recv(512).split()
        except OSError:
            return None
    return parts[3].decode() if len(parts) == 4 and parts[0] == b"OK" else None


@functools.cache
def probe_has_netns() -> bool:
    """Whether `nfvha probe` enters a namespace itself (--netns); else `ip netns exec`."""
    done = subprocess.run(
        [sys.executable, "-m", "nfvha", "probe", "--help"], capture_output=True, text=True
    )
    return "--netns" in done.stdout


def start_probe(setup: Setup, answers: Path) -> subprocess.Popen[str]:
    target = f"udp://{setup.vip}:{setup.port}"
    args = [sys.executable, "-m", "nfvha", "probe", target, "--op", "GET"]
    args += ["--interval-ms", f"{PROBE_MS:g}", "--duration", "3600", "--json"]
    args += ["--answers-out", str(answers)]
    if probe_has_netns():
        args += ["--netns", setup.consumer.netns]
    else:
        args = ["ip", "netns", "exec", setup.consumer.netns, *args]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def stop_probe(probe: subprocess.Popen[str]) -> dict[str, Any]:
    probe.send_signal(signal.SIGINT)
    out, _ = probe.communicate(timeout=PATIENCE_S)
    return json.loads(out) if out.strip() else {}


@contextlib.contextmanager
def cpu_stress(node: Node) -> Any:
    """One busy loop per core, each pinned to its core, in the node's namespace."""
    loop = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n pass"
    procs = [
        subprocess.Popen(["ip", "netns", "exec", node.netns, sys.executable, "-c", loop, str(c)])
        for c in sorted(os.sched_getaffinity(0))
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


# --- the faults: inject, then wait for what ends the trial --------------------------------------


@dataclass
class Trial:
    system: System
    setup: Setup
    watch: HolderWatch
    advert_s: float
    holder: str
    other: str
    marks: dict[str, int] = field(default_factory=dict)  # what happened when (ns)


def wait_served_by(trial: Trial, node: str) -> None:
    s = trial.setup
    manager.wait_for(lambda: answered_by(s.consumer, s.vip, s.port) == node, f"{node} serving")


def fault_kill(trial: Trial) -> None:
    trial.marks["fault"] = time.monotonic_ns()
    trial.system.kill(trial.holder)
    wait_served_by(trial, trial.other)
    time.sleep(LINGER_S)


def fault_cut(trial: Trial) -> None:
    trial.marks["cut_called"] = time.monotonic_ns()
    trial.marks["fault"] = trial.system.cut(trial.holder)  # the port is down from then on
    wait_served_by(trial, trial.other)
    time.sleep(LINGER_S)


def fault_stress(trial: Trial, window_s: float) -> None:
    holder = next(n for n in trial.setup.nodes if n.name == trial.holder)
    with cpu_stress(holder):
        trial.marks["fault"] = time.monotonic_ns()
        time.sleep(window_s)
        trial.marks["window_end"] = time.monotonic_ns()
    time.sleep(LINGER_S)


def fault_partition(trial: Trial, partition_s: float) -> None:
    trial.marks["cut_called"] = time.monotonic_ns()
    trial.marks["fault"] = trial.system.cut(trial.holder)
    time.sleep(partition_s)
    trial.marks["heal_called"] = time.monotonic_ns()
    trial.marks["heal"] = trial.system.heal(trial.holder)
    time.sleep(max(HEAL_ADVERTS * trial.advert_s, MIN_HEAL_S))


# --- one trial and its figures -----------------------------------------------------------------


def trial(
    system: System, fault: str, advert_s: float, rng: random.Random, args: argparse.Namespace
) -> dict[str, Any]:
    setup = system.start(advert_s)
    work = Path(tempfile.mkdtemp(prefix="nfvha-bench-vip-probe-"))
    probe: subprocess.Popen[str] | None = None
    r: dict[str, Any] = {}
    try:
        with HolderWatch(setup.nodes, setup.vip) as watch:
            probe = start_probe(setup, work / "answers.csv")
            holder = manager.wait_for(system.steady, "steady VIP", PATIENCE_S)
            other = next(n.name for n in setup.nodes if n.name != holder)
            t = Trial(system, setup, watch, advert_s, holder, other)
            wait_served_by(t, holder)
            answers = work / "answers.csv"  # written in blocks: it grows once answers flow
            manager.wait_for(lambda: answers.exists() and answers.stat().st_size, "answers")
            time.sleep(max(SETTLE_ADVERTS * advert_s, MIN_SETTLE_S))
            if system.steady() != holder:
                raise RuntimeError(f"not steady after the settle: {system.steady()}")
            r["phase_s"] = round(rng.uniform(0, advert_s), 6)
            time.sleep(r["phase_s"])
            inject(fault, t, args)
            t.marks["end"] = time.monotonic_ns()
            r.update(after_heal(t) if fault == "partition" else {})
            result, probe = stop_probe(probe), None
        good = manager.read_answers(answers)
        r.update(figures(t, fault, good, system.takeovers()))
        r["probe"] = {k: result.get(k) for k in ("sent", "answered", "errors", "error_kinds")}
    finally:
        if probe is not None:
            probe.kill()
            probe.wait()
        r["leftovers"] = system.stop()
        shutil.rmtree(work, ignore_errors=True)
    return r


def inject(fault: str, t: Trial, args: argparse.Namespace) -> None:
    if fault == "kill":
        fault_kill(t)
    elif fault == "cut":
        fault_cut(t)
    elif fault == "stress":
        fault_stress(t, args.stress_s)
    else:
        fault_partition(t, args.partition_s)


def after_heal(t: Trial) -> dict[str, Any]:
    """After a partition healed: who holds the VIP, and whether the consumer follows it."""
    s = t.setup
    held = t.watch.holders()
    macs = {n.name: n.mac for n in s.nodes}
    mac = network.neighbour_mac(s.consumer.netns, s.vip)
    return {
        "holders_at_end": list(held),
        "one_holder": len(held) == 1,
        "arp_follows": len(held) == 1 and mac == macs[held[0]],
        "answered_by_at_end": answered_by(s.consumer, s.vip, s.port),
    }


def ms(t: int | None, origin: int) -> float | None:
    return None if t is None else round((t - origin) / 1e6, 3)


def longest_silence(
    times: list[int], from_ns: int, to_ns: int, began_before: int | None = None
) -> tuple[int, int]:
    """The longest gap between consecutive good answers that ends within the window, from the
    last answer before it (``to_ns`` closes a silence still running), among those that began
    before ``began_before`` if given. After a fault: the last good answer before it → the
    first after it, whatever was still in flight at the fault."""
    i = max(bisect.bisect_right(times, from_ns) - 1, 0)
    edges = [t for t in times[i:] if t <= to_ns] + [to_ns]
    gaps = list(zip(edges, edges[1:], strict=False))
    if began_before is not None:
        gaps = [g for g in gaps if g[0] < began_before]
    return max(gaps or [(from_ns, to_ns)], key=lambda g: g[1] - g[0])


def figures(
    t: Trial, fault: str, answers: list[tuple[int, int, str]], takeovers: list[tuple[int, str]]
) -> dict[str, Any]:
    fault_ns, end_ns = t.marks["fault"], t.marks["end"]
    times = [a[0] for a in answers]
    r: dict[str, Any] = {"marks_ms": {k: ms(v, fault_ns) for k, v in t.marks.items()}}
    late = [(when, node) for when, node in takeovers if when >= fault_ns]
    r["takeovers"] = [{"ms": ms(when, fault_ns), "node": node} for when, node in late]
    r["false_takeovers"] = sum(1 for _, node in late if node == t.other)
    if fault == "stress":
        gap = longest_silence(times, fault_ns, t.marks["window_end"])
        r["outage_ms"] = ms(gap[1], gap[0])
        r["vip_moves"] = t.watch.moves(fault_ns, t.marks["window_end"])
    else:
        # At a partition, the silences that began before the heal (the cut's may outlast it).
        gap = longest_silence(times, fault_ns, end_ns, t.marks.get("heal"))
        r["outage_ms"] = ms(gap[1], gap[0])
        r["first_answer_ms"] = ms(gap[1], fault_ns)
        at = bisect.bisect_left(times, gap[1])
        r["first_answer_by"] = answers[at][2] if at < len(answers) else None
        r["takeover_ms"] = next((x["ms"] for x in r["takeovers"] if x["node"] == t.other), None)
        r["vip_on_other_ms"] = ms(t.watch.first_holding(t.other, fault_ns), fault_ns)
    if fault == "partition":
        heal = t.marks["heal"]
        after = [x for x in times if x >= heal]  # silences that began after the heal
        gap = longest_silence(after, after[0], end_ns) if after else (heal, end_ns)
        r["heal_outage_ms"] = ms(gap[1], gap[0])
        r["settled_after_heal_ms"] = ms(t.watch.settled_at(heal, end_ns), heal)
    r["split_brain"] = t.watch.split_brain(fault_ns, end_ns)
    r["holders_at_end"] = list(t.watch.holders())
    return r


# --- a row: N trials of one (system, fault, advert) ----------------------------------------------


def row(
    system: System, fault: str, advert_s: float, n: int, rng: random.Random, args: Any
) -> dict[str, Any]:
    trials: list[dict[str, Any]] = []
    for k in range(n):
        try:
            r = trial(system, fault, advert_s, rng, args)
        except (TimeoutError, RuntimeError) as exc:
            trials.append({"error": str(exc)})
            log(f"{system.name} {fault} {advert_s:g} s {k + 1}/{n}: {exc}")
            continue
        trials.append(r)
        log(
            f"{system.name} {fault} {advert_s:g} s {k + 1}/{n}: outage {r['outage_ms']} ms, "
            f"takeovers {[x['node'] for x in r['takeovers']]}, split {r['split_brain']['samples']}"
        )
    return summarize(system, fault, advert_s, n, trials)


def summarize(
    system: System, fault: str, advert_s: float, n: int, trials: list[dict[str, Any]]
) -> dict[str, Any]:
    ok = [r for r in trials if "error" not in r]

    def of(key: str) -> dict[str, Any]:
        return stats([r[key] for r in ok if r.get(key) is not None])

    out: dict[str, Any] = {
        "system": system.name,
        "fault": fault,
        "advert_s": advert_s,
        "trials": len(trials),
        "trials_asked": n,
        "errors": [r["error"] for r in trials if "error" in r],
        "budget_ms": system.budget_ms(advert_s),
        "outage_ms": of("outage_ms"),
        "split_brain": {
            "trials_with": sum(1 for r in ok if r["split_brain"]["samples"]),
            "samples": sum(r["split_brain"]["samples"] for r in ok),
            "of": sum(r["split_brain"]["of"] for r in ok),
        },
        # The backup's takeovers under stress are false ones: flaps.
        "false_takeovers": sum(r["false_takeovers"] for r in ok) if fault == "stress" else None,
        "takeovers": sum(len(r["takeovers"]) for r in ok),
        "leftovers": sorted({ns for r in trials for ns in r.get("leftovers", [])}),
    }
    if fault == "stress":
        out["window_s"] = ok[0]["marks_ms"]["window_end"] / 1000 if ok else None
        out["vip_moves"] = sum(r["vip_moves"] for r in ok)
    else:
        for key in ("takeover_ms", "vip_on_other_ms", "first_answer_ms"):
            out[key] = of(key)
        # The killed holder's keepalived cannot remove its VIP: it stays on the interface.
        out["stale_vip_at_end"] = sum(1 for r in ok if len(r["holders_at_end"]) > 1)
    if fault == "partition":
        out["heal_outage_ms"] = of("heal_outage_ms")
        out["settled_after_heal_ms"] = of("settled_after_heal_ms")
        out["one_holder_after_heal"] = sum(1 for r in ok if r["one_holder"])
        out["arp_follows_after_heal"] = sum(1 for r in ok if r["arp_follows"])
    out["per_trial"] = trials
    return out


# --- the table ---------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    """The README table of bench/results/vip.json."""
    lines = [
        "| system | fault | advert | N | outage median | p95 | max | backup MASTER (median) | "
        "budget | split-brain samples | takeovers after the fault | after heal | vs last |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        o = r["outage_ms"]
        sb = r["split_brain"]
        take = r.get("takeover_ms", {}).get("median")
        healed = "-"
        if r["fault"] == "partition":
            h = r["heal_outage_ms"]
            settled = r["settled_after_heal_ms"]["median"]
            healed = (
                f"one holder {r['one_holder_after_heal']}/{o['n']}, ARP follows "
                f"{r['arp_follows_after_heal']}/{o['n']}; last VIP move {run.ms(settled)} ms "
                f"after the heal; outage then {run.ms(h['median'])} / {run.ms(h['max'])} ms"
            )
        failed = f" ({len(r['errors'])} failed)" if r["errors"] else ""
        lines.append(
            f"| {r['system']} | {FAULT_TEXT[r['fault']]} | {r['advert_s']:g} s | {o['n']}{failed} "
            f"| {run.ms(o['median'])} ms | {run.ms(o['p95'])} | {run.ms(o['max'])} | "
            f"{run.ms(take)} | {run.ms(r['budget_ms'])} ms | {sb['samples']} of {sb['of']} "
            f"({sb['trials_with']} trials) | {takeovers(r)} | {healed} | "
            f"{provenance.vs_last(r)} |"
        )
    return "\n".join(lines + ["", notes(results), "", *phase_table(results), "", *goals(results)])


def phase_table(results: dict[str, Any]) -> list[str]:
    """Where a failover's time goes: medians in ms after the fault."""
    lines = [
        "Where the time goes, median ms after the fault: the backup's VRRP MASTER as read from "
        "its notify FIFO, the VIP in its kernel (2 ms samples), the consumer's first answer.",
        "",
        "| system | fault | advert | budget | backup MASTER | VIP on the backup | first answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        if r["fault"] == "stress":
            continue
        cells = [run.ms(r[k]["median"]) for k in ("takeover_ms", "vip_on_other_ms")]
        cells.append(run.ms(r["first_answer_ms"]["median"]))
        lines.append(
            f"| {r['system']} | {FAULT_TEXT[r['fault']]} | {r['advert_s']:g} s | "
            f"{run.ms(r['budget_ms'])} | " + " | ".join(cells) + " |"
        )
    return lines


def goals(results: dict[str, Any]) -> list[str]:
    """The issue's goals, met or missed, from the rows of both systems."""
    rows = {(r["system"], r["fault"], r["advert_s"]): r for r in results["runs"]}

    def median(system: str, fault: str, advert: float) -> float | None:
        r = rows.get((system, fault, advert))
        return r["outage_ms"].get("median") if r and r["outage_ms"].get("n") else None

    out = ["Goals (nfvha against keepalived, same run):", ""]
    nk, kk = median("nfvha", "kill", 0.01), median("keepalived", "kill", 0.01)
    if nk is not None and kk:
        verdict = "met" if nk <= kk / 10 else "missed"
        out.append(
            f"- Processes killed: nfvha's median ≤ 1/10 of keepalived's at 0.01 s: {nk:.1f} "
            f"against {kk:.1f} ms, ratio {nk / kk:.2f}: **{verdict}**."
        )
    for advert in sorted({a for _, _, a in rows}, reverse=True):
        for fault, text in (("cut", "Link cut"), ("partition", "Partition (at the cut)")):
            n, k = median("nfvha", fault, advert), median("keepalived", fault, advert)
            if n is not None and k is not None:
                verdict = "met" if n <= k else "missed"
                out.append(
                    f"- {text} at {advert:g} s, outage no longer than keepalived's: {n:.1f} "
                    f"against {k:.1f} ms: **{verdict}**."
                )
        stress = rows.get(("nfvha", "stress", advert))
        if stress is not None and stress["false_takeovers"] is not None:
            kstress = rows.get(("keepalived", "stress", advert)) or {}
            verdict = "met" if stress["false_takeovers"] == 0 else "missed"
            out.append(
                f"- CPU stress at {advert:g} s, 0 false takeovers: nfvha "
                f"{stress['false_takeovers']} (keepalived {kstress.get('false_takeovers')}): "
                f"**{verdict}**."
            )
    splits = sum(r["split_brain"]["samples"] for r in results["runs"] if r["system"] == "nfvha")
    out.append(f"- Split-brain samples of nfvha, all rows: {splits} (goal 0).")
    return out


def takeovers(r: dict[str, Any]) -> str:
    if r["fault"] == "stress":
        return f"**{r['false_takeovers']} false**" if r["false_takeovers"] else "0 false"
    return f"{r['takeovers']} in {r['outage_ms']['n']} trials"


def notes(results: dict[str, Any]) -> str:
    c = results["systems"].get("keepalived", {})
    parts = [
        "nfvha: `nfvha run` in network mode netns, the same responder as a 2n hot standby "
        "(sdk: false, state: none), the VIP moved by the HA manager; a process exit is seen at "
        "once (pidfd), a silent node by 3 missed UDP health checks at an interval equal to the "
        "advert (its budget), sent from the manager's own node over the bridge; no standby "
        "manager. For nfvha, 'backup MASTER' is the VIP claim (AddressClaimed) in its trace.",
        f"keepalived: {c.get('version', '?')}, VRRPv{c.get('vrrp')}, {c.get('adverts')}, "
        f"priorities a {c.get('priority', {}).get('a')} / b {c.get('priority', {}).get('b')}, "
        f"preemption {'on' if c.get('preempt') else 'off'}; {c.get('options')}.",
        f"Probe: GET every {PROBE_MS:g} ms from the consumer's namespace. Outage: last good "
        "answer before the fault → first after it (stress: the longest silence in the "
        f"{results.get('stress_s')} s window, one busy loop pinned per core; partition: the "
        f"silence at the cut, {results.get('partition_s')} s before the heal, then the longest "
        "that began after the heal). A cut's instant is when the bridge port was down. Budget: "
        "keepalived's Master_Down_Interval, 3 × advert + (256 − 100)/256 × advert.",
        "Split-brain samples: kernel samples (every "
        f"{SAMPLE_S * 1000:g} ms, fault → trial end) with the VIP on two nodes at once (each "
        "sample reads every node twice; a node counts if both reads found the VIP, so a move "
        "between one node's read and the next is not taken for an overlap).",
    ]
    for r in results["runs"]:
        if r["fault"] == "kill" and r.get("stale_vip_at_end"):
            parts.append(
                f"{r['system']} kill at {r['advert_s']:g} s: the VIP stayed on the killed "
                f"node's interface in {r['stale_vip_at_end']} of {r['outage_ms']['n']} trials "
                "(nothing removes it once keepalived is dead): its split-brain samples."
            )
            break
    return " ".join(parts)


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10, help="trials per row, kill and cut")
    parser.add_argument("--n-partition", type=int, default=5, help="trials per partition row")
    parser.add_argument(
        "--n-slow", type=int, default=5, help="cap on trials at adverts of 1 s or more (~10 s each)"
    )
    parser.add_argument("--adverts", type=float, nargs="*", default=list(ADVERTS))
    parser.add_argument("--faults", nargs="*", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--stress-s", type=float, default=STRESS_S, help="stress window")
    parser.add_argument("--partition-s", type=float, default=PARTITION_S)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=RESULTS / "vip.json")
    args = parser.parse_args()
    exe = keepalived.binary()
    if exe is None:
        log("keepalived is not installed (Debian package keepalived; `make daemons`)")
        return 1
    ok, why = network.available()
    if not ok:
        log(f"network namespaces unavailable: {why}")
        return 1
    prov = provenance.provenance()
    rng = random.Random(args.seed)
    systems: list[System] = [Nfvha(), Keepalived(exe)]
    started = time.monotonic()
    runs = []
    for system in systems:
        for fault in args.faults:
            for advert_s in args.adverts:
                n = {"partition": args.n_partition, "stress": 1}.get(fault, args.n)
                if args.n_slow is not None and advert_s >= 1.0 and fault != "stress":
                    n = min(n, args.n_slow)
                runs.append(row(system, fault, advert_s, n, rng, args))
    results = {
        "provenance": prov,
        "machine": run.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_s": round(time.monotonic() - started, 1),
        "seed": args.seed,
        "probe_ms": PROBE_MS,
        "sample_ms": SAMPLE_S * 1000,
        "stress_s": args.stress_s,
        "partition_s": args.partition_s,
        "systems": {s.name: s.config() for s in systems},
        "runs": runs,
    }
    run.compare_with_last(results, "vip", lambda r: (r["system"], r["fault"], r["advert_s"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    left = network.namespaces_of(DEPLOYMENT) + network.namespaces_of(Nfvha.deployment)
    if left:
        log(f"namespaces left behind: {left}")
    return 0 if not left and all(not r["errors"] for r in runs) else 1


if __name__ == "__main__":
    run.exit_cleanly_on_sigterm()
    sys.exit(main())
