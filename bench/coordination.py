"""Managers coordinated by etcd (issue 10): takeover, failover beside the embedded default, and a
partitioned active VM. Writes bench/results/coordination.json and prints the README table.

A 3-member etcd cluster on loopback (the tests' launcher: heartbeat 50 ms, election 500 ms);
`coordination: etcd://...` with the default lease (TTL 2 s, renewed every 0.5 s). Each figure is
read from the trace (CLOCK_MONOTONIC, the clock of the faults' timestamps) and from a 1 ms INC
probe (the consumer's side).

1. Takeover: the leading `nfvha run` SIGKILLed, 10 times each way. *Same machine*: its hot
   standby (`nfvha run --standby`) gets the machine's lock, revokes the dead leader's lease and
   is elected at once. *Another machine*: a `nfvha manager --member host-K` instance (another
   member name: it cannot know the leader dead) watches the leader key; the dead leader's
   witness (runtime/witness.py, on the leader's machine) revokes the lease when the kernel says
   the leader exited. *Machine lost*: the leader's witness is killed with it, as a machine's
   loss takes both: the standby waits for etcd to expire the lease (TTL 2 s, then 1). Measured:
   kill -> the new leader's `Leading` note (elected) and its `Adopting` note (acting), and the
   probe's longest silence (the data path while the VNFCs are healthy).
2. UC1 (`vnfc-crash` of the active) and UC2 (`vm-crash` of the active's VM, 2 hosts) under the
   probe, embedded and etcd coordination in alternating blocks of 5 in one run, 10 each: the
   outage (longest silence per fault) with etcd against the embedded default.
3. Partition: netns mode, 2 hosts, `nfvi: {transport: tls, fencing: watchdog}`, the probe in
   the consumers' namespace on the VIP; the active's VM link cut (its bridge port down), 5
   times per lease (1000 and 2000 ms), healed once the standby serves. Measured: cut -> the
   guest fences itself (its log), self-fence -> the first answer of the new active (the gap:
   must be > 0), and the total outage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import manager
import provenance
import run
import yaml

from nfvha.drivers import network
from nfvha.lab.experiment import consumer_view
from nfvha.lab.stats import summary as stats
from nfvha.runtime.control import request

sys.path.append(str(Path(__file__).resolve().parent.parent))  # last: the tests' etcd launcher
from tests.integration.support.etcd import EtcdCluster  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TAKEOVERS = 10
FAULTS = 10  # per fault kind and coordination, in blocks of BLOCK
BLOCK = 5
CUTS = 5  # per lease
LEASES_MS = (1000, 2000)
# Absolute ceilings, ms (median, max).
CEILINGS = {
    "takeover": (1000.0, 1000.0),  # the goal: kill -> new leader acting <= 1 s
    "takeover data path": (10.0, 50.0),  # no outage while the VNFCs are healthy (probe jitter)
}
WITHIN_MS = 10.0  # etcd's failover outage median within this of the embedded default's
PARTITION_SLACK_MS = 500.0  # total outage of a cut <= the lease + this
SELF_FENCED = re.compile(r"event=self-fenced agent=(\S+) at_ns=(\d+)")
Log = Callable[[str], None]


def with_etcd(cluster: EtcdCluster, ttl_s: int = 2) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["coordination"] = {"backend": "etcd", "endpoints": cluster.endpoints, "ttl_s": ttl_s}

    return edit


def wait_led_by_another(dep: manager.Deployment, pid: int) -> dict[str, Any]:
    return manager.wait_for(lambda: dep.steady_status(pid), "a new leader, steady")


def first_after(records: list[dict], name: str, t_ns: int) -> dict | None:
    return next((r for r in records if r["name"] == name and r["t"] > t_ns), None)


def ms(a_ns: int | None, b_ns: int | None) -> float | None:
    return None if a_ns is None or b_ns is None else round((b_ns - a_ns) / 1e6, 3)


def judged(measure: str, what: str, values: list[float | None], ceiling, n: int) -> dict:
    got = [v for v in values if v is not None]
    row: dict[str, Any] = {"measure": measure, "what": what, "ms": stats(got)}
    manager.judge(row, ceiling, {"every_one_measured": len(got) == n})
    return row


# --- 1. takeover -----------------------------------------------------------------------------


def takeovers(
    cluster: EtcdCluster, elsewhere: bool, log: Log, ttl_s: int = 2, machine_lost: bool = False
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="nfvha-bc-"))
    extra = ("--member", "host-0") if elsewhere else ()
    dep = manager.Deployment(work, with_etcd(cluster, ttl_s), not elsewhere, extra=extra)
    probe, kills, standbys, left = None, [], [], []
    leader = dep.proc.pid
    try:
        leader = manager.wait_for(dep.steady_status, "steady deployment")["manager_pid"]
        probe = manager.start_probe(dep, work / "answers.csv")
        for k in range(TAKEOVERS):
            if elsewhere:  # the next instance, on "another machine"
                standbys.append(standby_instance(dep, work, k + 1))
            else:
                manager.wait_for(lambda k=k: dep.standbys_started() >= k + 1, "hot standby")
            time.sleep(manager.LEAD_S)
            if machine_lost:  # the leader's machine goes, and the leader's witness with it
                kill_witness_of(leader)
            kill_ns = dep.kill(leader)
            leader = wait_led_by_another(dep, leader)["manager_pid"]
            kills.append(kill_ns)
            log(f"takeover {k + 1}/{TAKEOVERS} ({'elsewhere' if elsewhere else 'here'})")
        time.sleep(0.5)
        end_ns = time.monotonic_ns()
        manager.stop_probe(probe)
        probe = None
    finally:
        if probe is not None:
            probe.kill()
            probe.wait()
        left = dep.stop(leader)
        for proc in standbys:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    where = "the same machine"
    if elsewhere and machine_lost:
        where = (
            f"another machine, the leader's machine lost (leader and witness killed: the lease "
            f"expires, TTL {ttl_s} s)"
        )
    elif elsewhere:
        where = f"another machine (the leader's witness revokes its lease; TTL {ttl_s} s)"
    result = takeover_rows(dep, work, kills, end_ns, where, not left)
    shutil.rmtree(work, ignore_errors=True)
    return result


def takeover_rows(
    dep: manager.Deployment, work: Path, kills: list[int], end_ns: int, where: str, clean: bool
) -> dict[str, Any]:
    """Kill -> elected and acting, from the trace; the longest silence at the probe."""
    records = manager.read_trace(dep.trace)
    answers = manager.read_answers(work / "answers.csv")
    ends = kills[1:] + [end_ns]
    per = []
    for kill_ns, until in zip(kills, ends, strict=True):
        elected = first_after(records, "Leading", kill_ns)
        acting = first_after(records, "Adopting", kill_ns)
        view = consumer_view(answers, kill_ns, until)
        per.append(
            {
                "elected_ms": ms(kill_ns, elected and elected["t"]),
                "acting_ms": ms(kill_ns, acting and acting["t"]),
                "outage_ms": round(view.outage_ms, 3),
                "answered": view.answered,
            }
        )
    rows = [
        judged(
            "takeover",
            f"standby on {where}: kill → new leader acting (Adopting)",
            [p["acting_ms"] for p in per],
            CEILINGS["takeover"],
            TAKEOVERS,
        ),
        judged(
            "takeover data path",
            f"standby on {where}: longest silence at the 1 ms INC probe, kill → next kill",
            [p["outage_ms"] for p in per],
            CEILINGS["takeover data path"],
            TAKEOVERS,
        ),
    ]
    rows[0]["elected_ms"] = stats([p["elected_ms"] for p in per if p["elected_ms"] is not None])
    rows[1]["checks"]["every_kill_answered"] = all(p["answered"] for p in per)
    rows[1]["met"] = all(rows[1]["checks"].values())
    return {"rows": rows, "per_kill": per, "stopped_clean": clean}


def kill_witness_of(leader: int) -> None:
    """SIGKILL the leader's witness (runtime/witness.py), as a machine's loss would."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_bytes().rpartition(b")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == leader and b"nfvha.runtime.witness" in cmdline:
                pid = int(stat.parent.name)
                os.kill(pid, signal.SIGKILL)
                break
    else:
        raise RuntimeError(f"leader {leader} has no witness")
    manager.wait_for(lambda: dead(pid), "the witness dead")


def dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0] == b"Z"
    except OSError:
        return True


def standby_instance(dep: manager.Deployment, work: Path, k: int) -> subprocess.Popen[bytes]:
    err = work / f"manager-{k}.err"
    with open(err, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nfvha", "manager", str(dep.config), "--member", f"host-{k}"]
            + ["--state-dir", str(work / "state"), "--trace", str(dep.trace)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=dep.env,
        )
    manager.wait_for(lambda: "waiting to lead" in err.read_text(), f"manager host-{k} waiting")
    return proc


# --- 2. UC1 and UC2 beside the embedded default -------------------------------------------


def failovers(cluster: EtcdCluster, fault: str, log: Log) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"embedded": [], "etcd": []}
    for block in range(2 * FAULTS // BLOCK):
        mode = "embedded" if block % 2 == 0 else "etcd"

        def edit(raw: dict[str, Any], mode: str = mode) -> None:
            if mode == "etcd":
                with_etcd(cluster)(raw)
            if fault == "vm-crash":
                raw["hosts"] = [{"name": "host-1"}, {"name": "host-2"}]

        out[mode] += fault_block(edit, fault)
        log(f"{fault} block {block + 1}: {mode}")
    return out


def fault_block(edit: Callable[[dict[str, Any]], None], fault: str) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="nfvha-bc-"))
    dep = manager.Deployment(work, edit, standby_manager=False)
    probe, faults, leader = None, [], dep.proc.pid
    try:
        st = manager.wait_for(dep.steady_status, "steady deployment")
        leader = st["manager_pid"]
        probe = manager.start_probe(dep, work / "answers.csv")
        for _ in range(BLOCK):
            st = manager.wait_for(dep.steady_status, "steady deployment")
            time.sleep(manager.LEAD_S)
            active = st["vnfs"][0]["service"]["active"][0]
            target = st["placement"][active] if fault == "vm-crash" else active
            t_ns = time.monotonic_ns()
            request(dep.socket, {"op": "fault", "kind": fault, "target": target}, timeout=5)
            faults.append(t_ns)
            manager.wait_for(
                lambda a=active: (
                    (s := dep.steady_status()) and s["vnfs"][0]["service"]["active"] != [a]
                ),
                "the failover",
            )
        time.sleep(manager.LEAD_S)
        end_ns = time.monotonic_ns()
        manager.stop_probe(probe)
        probe = None
    finally:
        if probe is not None:
            probe.kill()
            probe.wait()
        dep.stop(leader)
    answers = manager.read_answers(work / "answers.csv")
    ends = faults[1:] + [end_ns]
    shutil.rmtree(work, ignore_errors=True)
    return [
        round(consumer_view(answers, a, b).outage_ms, 3) for a, b in zip(faults, ends, strict=True)
    ]


def failover_rows(outages: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for fault, label in (("vnfc-crash", "UC1 (VNFC killed)"), ("vm-crash", "UC2 (VM crashed)")):
        base, etcd = stats(outages[fault]["embedded"]), stats(outages[fault]["etcd"])
        ok = base["median"] is not None and etcd["median"] is not None
        row = {
            "measure": f"{label} outage, etcd against embedded",
            "what": "longest silence at the 1 ms INC probe per fault, same run",
            "ms": etcd,
            "embedded_ms": base,
            "goal": f"median within {WITHIN_MS:g} ms of embedded",
            "checks": {
                "within": ok and etcd["median"] <= base["median"] + WITHIN_MS,
                "every_one_measured": etcd["n"] == FAULTS and base["n"] == FAULTS,
            },
        }
        row["met"] = all(row["checks"].values())
        rows.append(row)
    return rows


# --- 3. a partitioned active VM ------------------------------------------------------------


PARTITION_VIP, PARTITION_PORT = "10.81.0.100", 7790


def partition_config(work: Path, lease_ms: int) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "nfvha", "cluster", "init", str(work / "cluster")]
        + ["--member", "manager", "--member", "host-1", "--member", "host-2"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    deployment, _ = run.bench_deployment("2n")
    raw = deployment.model_dump(mode="json")
    raw["hosts"] = [{"name": "host-1"}, {"name": "host-2"}]
    raw["network"] = {"mode": "netns", "subnet": "10.81.0.0/24"}
    raw["nfvi"] = {
        "transport": "tls",
        "cluster_dir": str(work / "cluster"),
        "fencing": "watchdog",
        "agent_lease_ms": lease_ms,
    }
    service = raw["vnfs"][0]["service"]
    service["address"], service["vip"] = f"127.0.0.1:{PARTITION_PORT}", PARTITION_VIP
    path = work / "partition.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def netns_probe(dep: manager.Deployment, st: dict[str, Any], work: Path) -> subprocess.Popen[str]:
    """The 1 ms INC probe on the VIP, from the consumers' namespace."""
    probe = subprocess.Popen(
        [sys.executable, "-m", "nfvha", "probe", f"udp://{PARTITION_VIP}:{PARTITION_PORT}"]
        + ["--op", "INC", "--interval-ms", "1", "--duration", "3600", "--json"]
        + ["--answers-out", str(work / "answers.csv")]
        + ["--netns", st["network"]["consumer_netns"]],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dep.env,
    )
    answers_file = work / "answers.csv"
    manager.wait_for(lambda: answers_file.exists() and answers_file.stat().st_size, "probe")
    return probe


def set_link(status: dict[str, Any], vnfc: str, state: str) -> int:
    net = status["network"]
    port = net["nodes"][status["placement"][vnfc]]["port"]
    cmd = ["ip", "-n", net["bridge_netns"], "link", "set", port, state]
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic_ns()


def partitions(lease_ms: int, log: Log) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="nfvha-bc-"))
    dep = manager.Deployment(work, standby_manager=False, source=partition_config(work, lease_ms))
    probe, cuts, leader = None, [], dep.proc.pid
    try:
        st = manager.wait_for(dep.steady_status, "steady deployment", timeout_s=60)
        leader = st["manager_pid"]
        probe = netns_probe(dep, st, work)
        for k in range(CUTS):
            st = manager.wait_for(dep.steady_status, "steady deployment", timeout_s=60)
            time.sleep(manager.LEAD_S)
            old = st["vnfs"][0]["service"]["active"][0]
            cut_ns = set_link(st, old, "down")
            try:
                manager.wait_for(
                    lambda o=old: (
                        (s := dep.status()) and s["vnfs"][0]["service"]["active"] not in ([], [o])
                    ),
                    "the standby promoted",
                )
                time.sleep(0.3)  # the new active's first answers
            finally:
                set_link(st, old, "up")
            cuts.append({"cut_ns": cut_ns, "old": old, "old_vm": st["placement"][old]})
            log(f"partition {k + 1}/{CUTS} (lease {lease_ms} ms)")
        time.sleep(manager.LEAD_S)
        end_ns = time.monotonic_ns()
        manager.stop_probe(probe)
        probe = None
    finally:
        if probe is not None:
            probe.kill()
            probe.wait()
        dep.stop(leader)
    fenced = [(vm, int(t)) for vm, t in SELF_FENCED.findall(dep.stderr.read_text())]
    answers = manager.read_answers(work / "answers.csv")
    ends = [c["cut_ns"] for c in cuts[1:]] + [end_ns]
    out = []
    for cut, until in zip(cuts, ends, strict=True):
        mine = [t for vm, t in fenced if vm == cut["old_vm"] and cut["cut_ns"] < t < until]
        fence_ns = mine[0] if mine else None
        first = next(((t, n) for t, n, v in answers if t > cut["cut_ns"] and v != cut["old"]), None)
        new, new_total = first if first else (None, None)
        # Answers of the old active that arrive after the new one's first: replies it sent
        # before the cut, held in its node's neighbour queue until the link came back. An
        # overlap would be one it *processed* after the new active: a total as high as the
        # new active's first.
        late = [(t, n) for t, n, v in answers if v == cut["old"] and new and new < t < until]
        view = consumer_view(answers, cut["cut_ns"], until)
        out.append(
            {
                "self_fence_ms": ms(cut["cut_ns"], fence_ns),
                "gap_ms": ms(fence_ns, new),
                "outage_ms": round(view.outage_ms, 3),
                "late_replies": len(late),
                "old_answered_after_new": any(n >= new_total for _, n in late),
            }
        )
    shutil.rmtree(work, ignore_errors=True)
    return out


def partition_rows(per_lease: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for lease, cuts in per_lease.items():
        gaps = [c["gap_ms"] for c in cuts]
        row = {
            "measure": f"partition, agent lease {lease} ms",
            "what": "active VM's link cut: total outage at the 1 ms probe (consumer namespace)",
            "ms": stats([c["outage_ms"] for c in cuts]),
            "self_fence_ms": stats([c["self_fence_ms"] for c in cuts if c["self_fence_ms"]]),
            "gap_ms": stats([g for g in gaps if g is not None]),
            "gap_min_ms": min((g for g in gaps if g is not None), default=None),
            "late_replies": sum(c["late_replies"] for c in cuts),
            "goal": f"gap > 0 at every cut; outage ≤ lease + {PARTITION_SLACK_MS:g} ms",
        }
        s = row["ms"]
        row["checks"] = {
            "gap_positive": len(gaps) == CUTS and all(g is not None and g > 0 for g in gaps),
            "never_overlapping": not any(c["old_answered_after_new"] for c in cuts),
            "outage": s["max"] is not None and s["max"] <= lease + PARTITION_SLACK_MS,
        }
        row["met"] = all(row["checks"].values())
        rows.append(row)
    return rows


# --- 4. takeover with the host agents run by the hosts ---------------------------------------


def agent_takeovers(cluster: EtcdCluster, log: Log) -> dict[str, Any]:
    """The partition setup (netns, TLS guests, watchdog) with `nfvi.host_agents: external`: two
    `nfvha agent` processes find each new leader through etcd and are adopted by it."""
    work = Path(tempfile.mkdtemp(prefix="nfvha-bc-"))

    def external(raw: dict[str, Any]) -> None:
        with_etcd(cluster)(raw)
        raw["nfvi"]["host_agents"] = "external"

    source = partition_config(work, LEASES_MS[-1])
    dep = manager.Deployment(work, external, standby_manager=True, source=source)
    agents = [start_agent(dep, work, host) for host in ("host-1", "host-2")]
    probe, kills, leader, left = None, [], dep.proc.pid, []
    try:
        st = manager.wait_for(dep.steady_status, "steady deployment", timeout_s=60)
        leader = st["manager_pid"]
        probe = netns_probe(dep, st, work)
        for k in range(TAKEOVERS):
            manager.wait_for(lambda k=k: dep.standbys_started() >= k + 1, "hot standby")
            time.sleep(manager.LEAD_S)
            kill_ns = dep.kill(leader)
            leader = wait_led_by_another(dep, leader)["manager_pid"]
            kills.append(kill_ns)
            log(f"takeover {k + 1}/{TAKEOVERS} (host agents external)")
        time.sleep(0.5)
        end_ns = time.monotonic_ns()
        manager.stop_probe(probe)
        probe = None
    finally:
        if probe is not None:
            probe.kill()
            probe.wait()
        left = dep.stop(leader)
        for agent in agents:
            agent.kill()
            agent.wait()
    where = "the same machine, host agents external (`nfvha agent`, found through etcd)"
    result = takeover_rows(dep, work, kills, end_ns, where, not left)
    shutil.rmtree(work, ignore_errors=True)
    return result


def start_agent(dep: manager.Deployment, work: Path, host: str) -> subprocess.Popen[bytes]:
    """A host's own agent: not of the deployment's runtime (a stop leaves it running)."""
    env = {k: v for k, v in dep.env.items() if k != "NFVHA_RUNTIME_DIR"}
    with open(work / f"agent-{host}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "nfvha", "agent", str(dep.config), "--host", host],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


# --- the table --------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = ["| measure | N | median | p95 | max | goal | met |", "|---|---|---|---|---|---|---|"]
    for row in results["runs"]:
        s = row["ms"]
        failed = [name for name, ok in row["checks"].items() if not ok]
        met = "yes" if row["met"] else f"**no** ({', '.join(failed)})"
        extra = ""
        if "embedded_ms" in row:
            b = row["embedded_ms"]
            extra = f" (embedded: median {run.ms(b['median'])}, max {run.ms(b['max'])})"
        if "gap_ms" in row:
            extra = (
                f" (cut → self-fence median {run.ms(row['self_fence_ms']['median'])} ms; "
                f"self-fence → new active answers median {run.ms(row['gap_ms']['median'])}, "
                f"min {run.ms(row['gap_min_ms'])}; late replies of the old active, sent before "
                f"the cut and delivered at the heal: {row['late_replies']})"
            )
        if "elected_ms" in row:
            extra = f" (kill → elected median {run.ms(row['elected_ms']['median'])} ms)"
        lines.append(
            f"| {row['measure']}: {row['what']}{extra} | {s['n']} | {run.ms(s['median'])} ms | "
            f"{run.ms(s['p95'])} | {run.ms(s['max'])} | {row.get('goal', '')} | {met} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "coordination.json")
    args = parser.parse_args()
    prov = provenance.provenance()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="nfvha-bc-etcd-"))
    cluster = EtcdCluster(workdir)
    try:
        cluster.start_all()
        here = takeovers(cluster, elsewhere=False, log=log)
        there = takeovers(cluster, elsewhere=True, log=log)
        lost = takeovers(cluster, elsewhere=True, log=log, machine_lost=True)
        short = takeovers(cluster, elsewhere=True, log=log, ttl_s=1, machine_lost=True)
        outages = {f: failovers(cluster, f, log) for f in ("vnfc-crash", "vm-crash")}
        ok, why = network.available()
        hosted = agent_takeovers(cluster, log) if ok else {"rows": [], "per_kill": []}
    finally:
        cluster.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    per_lease = {lease: partitions(lease, log) for lease in LEASES_MS} if ok else {}
    results = {
        "provenance": prov,
        "machine": run.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "etcd": "3 members on loopback, heartbeat 50 ms, election 500 ms; lease TTL 2 s (default)",
        "runs": here["rows"]
        + there["rows"]
        + lost["rows"]
        + short["rows"]
        + hosted["rows"]
        + failover_rows(outages)
        + partition_rows(per_lease),
        "per_kill": {
            "here": here["per_kill"],
            "elsewhere": there["per_kill"],
            "machine_lost": lost["per_kill"],
            "machine_lost_ttl_1": short["per_kill"],
            "host_agents_external": hosted["per_kill"],
        },
        "outages": outages,
        "partitions": {str(k): v for k, v in per_lease.items()},
        "partition_skipped": None if ok else why,
        "stopped_clean": all(
            t.get("stopped_clean", True) for t in (here, there, lost, short, hosted)
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0 if results["stopped_clean"] else 1


if __name__ == "__main__":
    run.exit_cleanly_on_sigterm()
    sys.exit(main())
