"""Manager failover benchmark: the leading manager SIGKILLed N times under a 1 ms INC probe.

Writes bench/results/manager.json and prints the README table. Run with `make bench`.

`nfvha run` leads a copy of the shipped 2n example (a unique name, a free port, a runtime
directory of its own) with `--trace`; its hot standby manager waits to lead. Each round: once the
deployment is steady and a standby waits, the leader (status `manager_pid`) is SIGKILLed; the
round ends when status answers from a new leader and the deployment is steady again. From the
trace (CLOCK_MONOTONIC, the clock of the kill's timestamp): takeover is the kill to the new
leader's `Adopting` note, re-adoption the kill to its last `ManagerAdopted` note (one per VNF).
From the probe: the data-path outage of a kill is the longest silence between good answers from
the kill to the next kill (`consumer_view`). The example's VNF syncs its state directly
(`state_sync: direct`), so an INC's write does not depend on a manager either: the probe sends
INCs, and an ERR during a takeover counts as silence. One INC before the
kills and one after them check that nothing acknowledged was lost.

Each row is judged against absolute ceilings committed here and compared with the last committed
results. At the end the last leader is stopped with SIGTERM (a deliberate stop: its standby and
every VNFC go too); a process of the deployment still alive then is killed and fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import provenance
import run
import yaml

from nfvha.config import read_mapping
from nfvha.lab.experiment import consumer_view
from nfvha.lab.stats import summary as stats
from nfvha.runtime.control import ControlError, request

RESULTS = Path(__file__).parent / "results"

# Absolute ceilings per row, ms: (median, max). Reasons in the README.
CEILINGS = {
    "re-adoption": (200.0, 1000.0),  # the goal: <= 200 ms, never above 1 s
    "data-path outage": (10.0, 50.0),  # the probe's 1 ms interval + scheduling jitter, 2 cores
}
LEAD_S = 0.3  # steady and a standby waiting, then this long before each kill
PATIENCE_S = 15.0  # for anything to happen before it counts as never
POLL_S = 0.01

T = TypeVar("T")


# --- the verdicts and the table ------------------------------------------------------------------


def goal_text(ceiling: tuple[float, float]) -> str:
    return f"median ≤ {ceiling[0]:g}, max ≤ {ceiling[1]:g} ms"


def judge(row: dict[str, Any], ceiling: tuple[float, float], extra: dict[str, bool]) -> None:
    """Set the row's checks, goal and verdict: its figures under the ceilings and every other
    check holding (no figure, as when no kill was measured, fails)."""
    s = row["ms"]
    row["ceiling_ms"] = {"median": ceiling[0], "max": ceiling[1]}
    row["checks"] = {
        "median": s["median"] is not None and s["median"] <= ceiling[0],
        "max": s["max"] is not None and s["max"] <= ceiling[1],
        **extra,
    }
    row["goal"] = goal_text(ceiling)
    row["met"] = all(row["checks"].values())


def rows(kills: list[dict[str, Any]], wanted: int, lost: int | None) -> list[dict[str, Any]]:
    """The two judged rows from the per-kill figures. ``wanted``: kills asked for (a round that
    never got a new leader ends the run early and fails both rows); ``lost``: acknowledged
    increments lost over the whole run (None: not known, a failure)."""
    every = len(kills) == wanted
    readopted = [k["readopted_ms"] for k in kills if k["readopted_ms"] is not None]
    readoption = {
        "measure": "re-adoption",
        "what": "kill → the new leader's last ManagerAdopted (trace)",
        "ms": stats(readopted),
        "takeover_ms": stats([k["takeover_ms"] for k in kills if k["takeover_ms"] is not None]),
    }
    judge(
        readoption,
        CEILINGS["re-adoption"],
        {
            "every_kill_readopted": every and len(readopted) == wanted,
            "same_vnfcs": all(k["same_vnfcs"] for k in kills),
        },
    )
    outage = {
        "measure": "data-path outage",
        "what": "longest silence at the 1 ms INC consumer, kill → next kill (probe)",
        "ms": stats([k["outage_ms"] for k in kills]),
    }
    judge(
        outage,
        CEILINGS["data-path outage"],
        {"every_kill_answered": every and all(k["answered"] for k in kills), "lost": lost == 0},
    )
    return [readoption, outage]


def table(results: dict[str, Any]) -> str:
    """The README table of bench/results/manager.json."""
    lines = [
        "| measure | N | median | p95 | max | ceiling | vs last | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["runs"]:
        s = row["ms"]
        failed = [name for name, ok in row["checks"].items() if not ok]
        met = "yes" if row["met"] else f"**no** ({', '.join(failed)})"
        lines.append(
            f"| {row['measure']}: {row['what']} | {s['n']} | {run.ms(s['median'])} ms | "
            f"{run.ms(s['p95'])} | {run.ms(s['max'])} | {row['goal']} | "
            f"{provenance.vs_last(row)} | {met} |"
        )
    takeover = results["runs"][0]["takeover_ms"]
    p = results["probe"]
    lost = results["lost_acknowledged"]
    quiet = results.get("quiet_outage_ms") or stats([])
    lines += [
        "",
        f"Takeover, kill → the new leader's `Adopting` note (trace, N={takeover['n']}): median "
        f"{run.ms(takeover['median'])} ms, max {run.ms(takeover['max'])}. "
        f"{results['kills_done']} of {results['kills']} kills taken over; every VNFC process kept "
        f"(none restarted): {sum(k['same_vnfcs'] for k in results['per_kill'])} of "
        f"{results['kills_done']}. Probe: "
        f"{p['op']} every {results['probe_interval_ms']:g} ms from {p['sockets']} ports, "
        f"{p['sent']:,} sent, {p['answered']:,} answered; acknowledged increments lost: "
        f"{run.na(lost)}. The probe's normal jitter, windows as long without a kill after the "
        f"kills (N={quiet['n']}, {run.ms(results.get('quiet_window_ms'))} ms each): longest "
        f"silence median {run.ms(quiet['median'])} ms, max {run.ms(quiet['max'])}. "
        "Stopped clean (nothing of the deployment left): "
        f"{'yes' if results['stopped_clean'] else '**NO**'}.",
    ]
    return "\n".join(lines)


def compare_with_last(results: dict[str, Any]) -> None:
    """Each row against the same row of the last committed results (provenance's rule, on the
    row's median)."""
    previous, commit = provenance.last_committed("manager")
    before = {r["measure"]: r for r in (previous or {}).get("runs", [])}
    for row in results["runs"]:
        prev = before.get(row["measure"])
        shim: dict[str, Any] = {"outage_ms": row["ms"]}
        provenance.compare(shim, prev and {"outage_ms": prev["ms"]}, commit)
        row["previous"], row["regressed"] = shim["previous"], shim["regressed"]


# --- reading the trace and the probe --------------------------------------------------------------


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Every record of the shared trace file, in time order (a line the killed leader left
    half-written is skipped)."""
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return sorted(records, key=lambda r: r["t"])


def read_answers(path: Path) -> list[tuple[int, int, str]]:
    """(receive time ns, total, answering VNFC) of every good answer (t_ns,seq,total,vnfc)."""
    out = []
    for line in path.read_text().splitlines():
        t, _seq, total, vnfc = line.split(",", 3)
        out.append((int(t), int(total), vnfc))
    return out


def takeover(records: list[dict[str, Any]], kill_ns: int, until_ns: int, vnfs: int) -> dict:
    """From the trace, after one kill: the new leader's Adopting note and its managers'
    ManagerAdopted notes (ms after the kill), their reasons, and what happened until then."""
    window = [r for r in records if kill_ns <= r["t"] < until_ns]
    adopting = next((r for r in window if r["name"] == "Adopting"), None)
    decided = [r for r in window if r["name"] == "ManagerAdopted"]
    if adopting is not None:
        decided = [r for r in decided if r["t"] >= adopting["t"]]
    done = decided[-1] if len(decided) >= vnfs else None
    end = done["t"] if done else until_ns
    return {
        "takeover_ms": ms_after(adopting, kill_ns),
        "readopted_ms": ms_after(done, kill_ns),
        "adopting": (adopting or {}).get("data", {}).get("vnfcs"),
        "decisions": [{"vnf": r.get("src"), "why": r.get("why", "")} for r in decided],
        "restarted": [r.get("dst") for r in window if r["name"] == "StartVnfc" and r["t"] <= end],
        "timeline": [
            f"{(r['t'] - kill_ns) / 1e6:.1f} {r['kind']} {r['name']} {r.get('src', '')}".strip()
            for r in window
            if r["t"] <= end
        ][:40],
    }


def ms_after(record: dict[str, Any] | None, origin_ns: int) -> float | None:
    return None if record is None else round((record["t"] - origin_ns) / 1e6, 3)


# --- the deployment -------------------------------------------------------------------------------


def steady(status: dict[str, Any]) -> bool:
    """Every service up, every VNFC running with a role."""
    for vnf in status["vnfs"]:
        if not vnf["service"]["up"]:
            return False
        if any(c["state"] != "running" or c["role"] == "none" for c in vnf["vnfcs"]):
            return False
    return True


def vnfc_pids(status: dict[str, Any]) -> dict[str, int]:
    return {c["name"]: c["pid"] for vnf in status["vnfs"] for c in vnf["vnfcs"]}


def wait_for(probe: Callable[[], T | None], what: str, timeout_s: float = PATIENCE_S) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s:g} s")
        time.sleep(POLL_S)


def alive(pid: int) -> bool:
    """Running or stopped: not gone, not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def processes_of(runtime_dir: Path) -> list[int]:
    """Live processes of this deployment: their environment points into its runtime directory
    (`nfvha run` and the probe inherit NFVHA_RUNTIME_DIR, VNFCs get NFVHA_SOCKET there)."""
    prefix, found = str(runtime_dir), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = any(
            item.partition(b"=")[0] in (b"NFVHA_RUNTIME_DIR", b"NFVHA_SOCKET")
            and item.partition(b"=")[2].decode(errors="replace").startswith(prefix)
            for item in env
        )
        if ours and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


class Deployment:
    """`nfvha run` of a copy of the 2n example (or of the deployment file ``source``: files its
    commands name beside it are the caller's to put in ``work``), everything it needs in one
    temporary directory (its runtime directory there too: its processes are found by their
    environment)."""

    def __init__(
        self,
        work: Path,
        edit: Callable[[dict[str, Any]], None] | None = None,
        standby_manager: bool = True,
        source: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        if source is None:
            deployment, _ = run.bench_deployment("2n")
            raw = deployment.model_dump(mode="json")
        else:
            raw = read_mapping(source)
        if edit is not None:
            edit(raw)
        self.name = raw["name"] = f"bench-manager-{uuid.uuid4().hex[:8]}"
        self.vnfs = len(raw["vnfs"])
        self.address = raw["vnfs"][0]["service"]["address"]
        self.config = work / f"{self.name}.yaml"
        self.config.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.runtime = work / "rt"
        self.socket = self.runtime / self.name / "control.sock"
        self.trace = work / "trace.jsonl"
        self.stderr = work / "nfvha.err"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "NFVHA_RUNTIME_DIR": str(self.runtime),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        }
        with open(work / "nfvha.out", "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nfvha", "run", str(self.config)]
                + ["--state-dir", str(work / "state"), "--trace", str(self.trace)]
                + ([] if standby_manager else ["--no-standby-manager"])
                + list(extra),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )

    def status(self) -> dict[str, Any] | None:
        try:
            return request(self.socket, {"op": "status"}, timeout=2.0)
        except (ControlError, ValueError):
            return None

    def steady_status(self, not_led_by: int = 0) -> dict[str, Any] | None:
        st = self.status()
        return st if st and st["manager_pid"] != not_led_by and steady(st) else None

    def standbys_started(self) -> int:
        """Standby managers started so far: each says so on the stderr it inherits."""
        return self.stderr.read_text(errors="replace").count("waiting to lead")

    def kill(self, pid: int) -> int:
        """SIGKILL the leader; the kill's CLOCK_MONOTONIC timestamp (ns)."""
        pidfd = os.pidfd_open(pid)
        try:
            t_ns = time.monotonic_ns()
            os.kill(pid, signal.SIGKILL)
            select.select([pidfd], [], [], PATIENCE_S)
        finally:
            os.close(pidfd)
        if pid == self.proc.pid:
            self.proc.wait()  # ours: reaped; later leaders are the dead leader's children
        return t_ns

    def stop(self, pid: int) -> list[int]:
        """A deliberate stop of the leader (SIGTERM); the processes of the deployment still
        alive after it, killed."""
        with contextlib.suppress(ProcessLookupError):
            pidfd = os.pidfd_open(pid)
            os.kill(pid, signal.SIGTERM)
            select.select([pidfd], [], [], PATIENCE_S)
            os.close(pidfd)
        if self.proc.poll() is None and self.proc.pid == pid:
            self.proc.wait(timeout=PATIENCE_S)
        time.sleep(0.2)  # a process exiting right now is not a leftover
        left = processes_of(self.runtime)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if left:  # a manager killed cannot remove what it made: its namespaces, its cgroups
            remove_made(self.name)
        return left


def remove_made(name: str) -> None:
    """The network namespaces and the cgroup tree of deployment ``name`` (a failed run's)."""
    import asyncio

    from nfvha.drivers import network
    from nfvha.drivers.cgroups import Cgroups, NfviUnavailable

    network.remove_leftovers(name)
    with contextlib.suppress(NfviUnavailable):
        asyncio.run(Cgroups(name).remove())


def udp(address: str, op: str, seq: int) -> int | None:
    """One request; the total answered, None if none or not OK."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        try:
            s.sendto(f"{op} {seq}".encode(), (host, int(port)))
            parts = s.recv(2048).split()
        except OSError:
            return None
    return int(parts[2]) if len(parts) == 4 and parts[0] == b"OK" else None


def start_probe(dep: Deployment, answers: Path) -> subprocess.Popen[str]:
    probe = subprocess.Popen(
        [sys.executable, "-m", "nfvha", "probe", f"udp://{dep.address}", "--op", "INC"]
        + ["--interval-ms", "1", "--duration", "3600", "--json", "--answers-out", str(answers)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dep.env,
    )
    # The answers file is written in blocks: it grows once the probe has had answers.
    wait_for(lambda: answers.exists() and answers.stat().st_size > 0, "answer to the probe")
    return probe


def stop_probe(probe: subprocess.Popen[str]) -> dict[str, Any]:
    probe.send_signal(signal.SIGINT)
    out, _ = probe.communicate(timeout=PATIENCE_S)
    if probe.returncode != 0:
        raise RuntimeError(f"probe failed with exit code {probe.returncode}")
    return json.loads(out)


# --- the benchmark --------------------------------------------------------------------------------


def kill_leaders(dep: Deployment, n: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """N rounds: steady with a standby waiting, SIGKILL of the leader, a new leader steady. A
    round whose new leader never comes ends the rounds (recorded, without a new leader)."""
    kills: list[dict[str, Any]] = []
    for k in range(n):
        st = wait_for(dep.steady_status, "steady deployment")
        wait_for(lambda k=k: dep.standbys_started() >= k + 1, "standby manager waiting to lead")
        time.sleep(LEAD_S)
        st = wait_for(dep.steady_status, "steady deployment")
        leader = st["manager_pid"]
        kill_ns = dep.kill(leader)
        kill = {
            "kill_ns": kill_ns,
            "killed": leader,
            "active_before": st["vnfs"][0]["service"]["active"],
            "pids_before": vnfc_pids(st),
        }
        try:
            after = wait_for(lambda leader=leader: dep.steady_status(leader), "new leader")
        except TimeoutError as exc:
            kills.append({**kill, "leader": None, "error": str(exc)})
            log(f"kill {k + 1}: {exc}")
            break
        kill["steady_seen_ms"] = round((time.monotonic_ns() - kill_ns) / 1e6, 1)
        kill["leader"] = after["manager_pid"]
        kill["active_after"] = after["vnfs"][0]["service"]["active"]
        kill["pids_after"] = vnfc_pids(after)
        kills.append(kill)
        log(f"kill {k + 1}/{n}: leader {leader} -> {kill['leader']}")
    return kills


def quiet_windows(dep: Deployment, kills: list[dict[str, Any]]) -> tuple[int, list[tuple]]:
    """The probe's normal jitter, for comparison: once steady with a standby waiting after the
    last kill, as many windows without a kill as there were kills, each as long as the median
    kill-to-kill window. Returns when they began (the last kill's window ends there) and them."""
    wait_for(dep.steady_status, "steady deployment")
    wait_for(lambda: dep.standbys_started() >= len(kills) + 1, "standby manager waiting to lead")
    gaps = [b["kill_ns"] - a["kill_ns"] for a, b in itertools.pairwise(kills)]
    width = round(statistics.median(gaps)) if gaps else 500_000_000
    start = time.monotonic_ns()
    time.sleep(len(kills) * width / 1e9)
    return start, [(start + i * width, start + (i + 1) * width) for i in range(len(kills))]


def per_kill(
    kills: list[dict[str, Any]],
    records: list[dict[str, Any]],
    answers: list[tuple[int, int, str]],
    end_ns: int,
    vnfs: int,
) -> list[dict[str, Any]]:
    ends = [k["kill_ns"] for k in kills[1:]] + [end_ns]
    out = []
    for kill, until in zip(kills, ends, strict=True):
        view = consumer_view(answers, kill["kill_ns"], until)
        seen = takeover(records, kill["kill_ns"], until, vnfs)
        out.append(
            {
                **kill,
                **seen,
                "outage_ms": round(view.outage_ms, 3),
                "outage_at_ms": round((view.last_good_ns - kill["kill_ns"]) / 1e6, 3),
                "answered": view.answered,
                "same_vnfcs": kill.get("pids_after") == kill["pids_before"]
                and not seen["restarted"],
            }
        )
    return out


def measure(n: int, log: Callable[[str], None]) -> tuple[dict[str, Any], Path]:
    work = Path(tempfile.mkdtemp(prefix="nfvha-bm-"))
    dep = Deployment(work)
    probe: subprocess.Popen[str] | None = None
    kills: list[dict[str, Any]] = []
    quiet: list[tuple[int, int]] = []
    leader, left, probe_result, inc_before, inc_after = dep.proc.pid, [], None, None, None
    try:
        st = wait_for(dep.steady_status, "steady deployment")
        leader = st["manager_pid"]
        for seq in range(1, 11):
            inc_before = udp(dep.address, "INC", seq)
        probe = start_probe(dep, work / "answers.csv")
        kills = kill_leaders(dep, n, log)
        if kills and kills[-1].get("leader"):
            leader = kills[-1]["leader"]
            end_ns, quiet = quiet_windows(dep, kills)
        else:
            end_ns, quiet = time.monotonic_ns(), []
        probe, probe_result = None, stop_probe(probe)
        if kills and kills[-1].get("leader"):
            inc_after = udp(dep.address, "INC", 1 << 30)
    finally:
        if probe is not None:
            probe.kill()
            probe.wait()
        left = dep.stop(leader)
    answers = read_answers(work / "answers.csv")
    done = per_kill(kills, read_trace(dep.trace), answers, end_ns, dep.vnfs)
    quiet_ms = [consumer_view(answers, a, b).outage_ms for a, b in quiet]
    # One more INC after the probe continues from the highest total acknowledged to anyone.
    highest = max([inc_before or 0, *(total for _, total, _ in answers)])
    consistent = inc_before is not None and inc_after is not None and inc_after > highest
    lost = probe_result["lost"] if consistent else None
    results = {
        "provenance": None,  # set by main
        "machine": run.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "example": "2n",
        "kills": n,
        "kills_done": sum(1 for k in done if k.get("leader")),
        "probe_interval_ms": 1.0,
        "probe": {k: v for k, v in probe_result.items() if k != "runs"},
        "acknowledged": {"before": inc_before, "after_one_more": inc_after},
        "lost_acknowledged": lost,
        "stopped_clean": not left,
        "leftovers": left,
        "runs": rows(done, n, lost),
        "quiet_outage_ms": stats(quiet_ms),
        "quiet_window_ms": round((quiet[0][1] - quiet[0][0]) / 1e6, 1) if quiet else None,
        "per_kill": done,
    }
    return results, work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="kills of the leading manager")
    parser.add_argument("--out", type=Path, default=RESULTS / "manager.json")
    args = parser.parse_args()
    prov = provenance.provenance()
    print(f"manager SIGKILL x{args.n} ...", file=sys.stderr, flush=True)
    results, work = measure(args.n, lambda line: print(line, file=sys.stderr, flush=True))
    results["provenance"] = prov
    compare_with_last(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if not results["stopped_clean"]:
        print(
            f"FAILED: processes of the deployment left after its stop (killed now): "
            f"{results['leftovers']}; its files kept in {work}",
            file=sys.stderr,
        )
        return 1
    if all(row["met"] for row in results["runs"]):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(
            f"a row missed its goal; trace, probe answers and logs kept in {work}", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    run.exit_cleanly_on_sigterm()
    sys.exit(main())
