"""Fault experiments: run a deployment, drive the probe, inject faults into the active, and read
outage, lost updates and the recovery phases back from the probe and the trace.

Used by ``nfvha demo`` and by the benchmark; both report what this measured, nothing else.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nfvha.config import Deployment
from nfvha.core.ha import Life
from nfvha.lab.probe import DEFAULT_SOCKETS, Acknowledged
from nfvha.runtime.engine import Engine
from nfvha.runtime.nodes import CONSUMER
from nfvha.runtime.trace import Record, Trace


@dataclass(frozen=True, slots=True)
class ConsumerView:
    """What the consumer saw around one fault, from its good answers in the fault's window
    (from just before the fault to the next fault, or to the end of the probe)."""

    outage_ms: float  # the longest silence in the window; to the window's end if unanswered
    answered: bool  # a good answer came after the fault, within the window
    lost: int  # INC answers in the window whose total was acknowledged before
    last_good_ns: int  # the longest silence: the good answer before it
    first_good_ns: int  # and the one that ended it (the window's end if none did)
    failover_from_ns: int  # the silence that began at the fault: its last good answer
    failover_to_ns: int  # and the first good answer after it (the window's end if none)


@dataclass(slots=True)
class FaultOutcome:
    fault: str
    target: str
    fault_ns: int
    outage_ms: float  # consumer side: the longest silence (ConsumerView)
    answered: bool  # False: no good answer after the fault; the outage ran to the window's end
    lost: int
    last_good_ns: int = 0  # the longest silence's last good answer before it
    first_good_ns: int = 0  # and its first good answer after it
    failover_from_ns: int = 0  # the silence that began at the fault (may be shorter)
    failover_to_ns: int = 0
    phases_ms: dict[str, float] = field(default_factory=dict)  # from the fault, per the trace


@dataclass(slots=True)
class Experiment:
    deployment: str
    model: str
    probe: dict[str, Any]
    faults: list[FaultOutcome]
    records: list[Record]
    answers: list[tuple[int, int, str]] = field(default_factory=list)  # (t_ns, total, vnfc)

    def summary(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "model": self.model,
            "probe": self.probe,
            "faults": [asdict(f) for f in self.faults],
        }


def is_steady(engine: Engine) -> bool:
    """Every service up, nothing starting or being cleaned up, every running VNFC confirmed,
    every host and VM up."""
    if engine.vim is not None:
        snap: dict[str, Any] = engine.vim.snapshot()
        if any(s != "up" for s in snap["hosts"].values()):
            return False
        if any(vm["state"] != "up" for vm in snap["vms"].values()):
            return False
    for vnf in engine.vnfs.values():
        mgr = vnf.manager
        view: dict[str, Any] = mgr.snapshot()
        if not view["service"]["up"]:
            return False
        for c in mgr.vnfcs.values():
            if c.life in (Life.STARTING, Life.FAILED) or (
                c.life is Life.RUNNING and not c.confirmed
            ):
                return False
    return True


async def wait_steady(engine: Engine, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not is_steady(engine):
        if time.monotonic() > deadline:
            raise TimeoutError(f"deployment not steady after {timeout_s:g} s: {engine.status()}")
        await asyncio.sleep(0.005)


async def run_faults(
    deployment: Deployment,
    base_dir: Path,
    *,
    faults: int = 1,
    fault: str = "vnfc-crash",
    interval_ms: float = 1.0,
    spacing_s: float = 1.0,
    lead_s: float = 0.5,
    state_dir: Path | None = None,
    target: Callable[[Engine], str] | None = None,
    between: Callable[[], Awaitable[None]] | None = None,
    sockets: int = DEFAULT_SOCKETS,
    probe_kind: str | None = None,
    probe_path: str = "/",
) -> Experiment:
    """Inject ``faults`` faults, ``spacing_s`` apart (and each once the deployment is steady
    again), under the probe. The target is the serving active VNFC unless ``target`` says.
    ``between`` runs after each fault once steady again (a baseline measured interleaved with
    the faults, under the same load). ``probe_kind``: the probe's scheme (default: the
    service's protocol), ``probe_path`` its path for http."""
    vnf = deployment.vnfs[0]
    with tempfile.TemporaryDirectory(prefix="nfvha-exp-") as tmp:
        work = Path(tmp)
        trace = Trace()
        engine = Engine(deployment, base_dir, trace, state_dir or work / "state")
        await engine.start()
        probe = None
        try:
            await wait_steady(engine)
            answers_path = work / "answers.csv"
            url, netns = consumer_target(engine, vnf.name, probe_kind, probe_path)
            probe = await _start_probe(url, netns, interval_ms, 3600, answers_path, sockets)
            await _wait_for_answers(answers_path)
            await asyncio.sleep(lead_s)
            injected: list[tuple[str, int]] = []
            for _ in range(faults):
                started = time.monotonic()
                victim = target(engine) if target else vnf_active(engine, vnf.name)
                engine.inject(fault, victim)
                injected.append((victim, trace.records[-1]["t"]))
                await wait_steady(engine)
                if between is not None:
                    await between()
                await asyncio.sleep(max(0.0, spacing_s - (time.monotonic() - started)))
            stopped_ns = time.monotonic_ns()
            probe.send_signal(signal.SIGINT)
            out, _ = await probe.communicate()
            if probe.returncode != 0:
                raise RuntimeError(f"probe failed with exit code {probe.returncode}")
            probe_result = json.loads(out)
            answers = _read_answers(answers_path)
        finally:
            if probe is not None and probe.returncode is None:  # the run failed: not left behind
                probe.kill()
                await probe.wait()
            await engine.shutdown()
    ends = [t for _, t in injected[1:]] + [stopped_ns]
    repeats = acknowledged_repeats([total for _, total, _ in answers])
    outcomes = [
        outcome(fault, target, t, consumer_view(answers, t, end, repeats), trace.records, end)
        for (target, t), end in zip(injected, ends, strict=True)
    ]
    return Experiment(
        deployment.name, vnf.redundancy.model, probe_result, outcomes, trace.records, answers
    )


def outcome(
    fault: str, target: str, fault_ns: int, view: ConsumerView, records: list[Record], end: int
) -> FaultOutcome:
    return FaultOutcome(
        fault,
        target,
        fault_ns,
        view.outage_ms,
        view.answered,
        view.lost,
        view.last_good_ns,
        view.first_good_ns,
        view.failover_from_ns,
        view.failover_to_ns,
        phases(records, fault_ns, target, until_ns=end),
    )


def applies(vnf: Any) -> dict[str, bool]:
    """Which consumer-side checks can fire for a VNF: lost increments need state (a stateless
    counter answers total 0); two actives are a fault only where one active is meant."""
    return {"lost": vnf.state_mode != "none", "two_actives": vnf.redundancy.active == 1}


def vnf_active(engine: Engine, vnf_name: str) -> str:
    view: dict[str, Any] = engine.vnfs[vnf_name].manager.snapshot()
    active = view["service"]["active"]
    if not active:
        raise RuntimeError(f"{vnf_name} has no active VNFC")
    return active[0]


def consumer_target(
    engine: Engine, vnf_name: str, kind: str | None = None, path: str = "/"
) -> tuple[str, str | None]:
    """Where a consumer of the VNF sends its requests: the probe's target URL (``kind``, by
    default the service's protocol; tcp speaks the counter's lines, which a plain TCP
    responder answers with its name; http asks for ``path``) and the namespace to send from
    (the consumers' node in netns mode, else None). A load-balanced VNF is reached through its
    load balancer, which holds the address consumers use (its virtual IP in netns mode)."""
    spec = engine.vnfs[vnf_name].spec
    front = next((v.spec for v in engine.vnfs.values() if v.spec.balances == vnf_name), spec)
    address = front.service.address_in(engine.nodes.mode)
    kind = kind or spec.service.protocol
    url = f"{kind}://{address}" + (path if kind == "http" else "")
    return url, engine.nodes.netns(CONSUMER)


async def _start_probe(
    url: str, netns: str | None, interval_ms: float, duration_s: float, answers: Path, sockets: int
):
    where = ["--netns", netns] if netns else []
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nfvha",
        "probe",
        url,
        *where,
        "--interval-ms",
        str(interval_ms),
        "--duration",
        str(duration_s),
        "--json",
        "--answers-out",
        str(answers),
        "--sockets",
        str(sockets),
        stdout=asyncio.subprocess.PIPE,
    )


async def _wait_for_answers(path: Path, timeout_s: float = 20.0) -> None:
    """The probe (a separate process) takes a moment to start: wait until it gets answers."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.stat().st_size > 0):
        if time.monotonic() > deadline:
            raise TimeoutError("the probe got no answer from the service")
        await asyncio.sleep(0.01)


def _read_answers(path: Path) -> list[tuple[int, int, str]]:
    """(receive time ns, total, answering VNFC) of every good answer, in order."""
    rows = []
    for line in path.read_text().splitlines():
        t, _seq, total, vnfc = line.split(",", 3)
        rows.append((int(t), int(total), vnfc))
    return rows


REPLY_IN_FLIGHT_NS = 2_000_000  # a reply sent just before the fault arrives within this
LATE_READ_NS = 20_000_000  # ... unless the probe, descheduled, reads it this much later


def _after_late_replies(
    answers: list[tuple[int, int, str]], i: int, last: int, fault_ns: int
) -> tuple[int, int] | None:
    """When the first answers after the fault come from the VNFC that answered before it and
    another VNFC's answer ends them within LATE_READ_NS, they are the dying active's replies,
    read late by a descheduled probe: the failover is the silence from the last of them to the
    other's first (None if there is no such run)."""
    if i == 0:
        return None
    dying, j = answers[i - 1][2], i
    while j < last and answers[j][2] == dying and answers[j][0] <= fault_ns + LATE_READ_NS:
        j += 1
    if i < j < last and answers[j][2] != dying:
        return answers[j - 1][0], answers[j][0]
    return None


def acknowledged_repeats(totals: list[int]) -> list[bool]:
    """Per answer (in receive order): does its total repeat one acknowledged before? Each that
    does proves a forgotten increment; the probe's own rule (``probe.Acknowledged``)."""
    acked = Acknowledged()
    return [acked.repeats(total) for total in totals]


def consumer_view(
    answers: list[tuple[int, int, str]],
    fault_ns: int,
    until_ns: int,
    repeats: list[bool] | None = None,
) -> ConsumerView:
    """Around one fault, the silences between consecutive good answers from the last one
    before the fault to ``until_ns`` (the next fault, or the probe's end). The window's end
    closes the last silence: a fault never answered has its outage run to the end of the
    window, and ``answered`` False.

    The outage is the longest silence, not the one straddling the fault's timestamp: a reply
    the failed active sent just before it died can arrive just after, and the outage starts
    after it. The failover silence is the longest that began by the fault (or within
    ``REPLY_IN_FLIGHT_NS`` after it) and ended after it: what a person looks for at the
    failover; a later, longer silence (during the repair, say) is the outage all the same."""
    times = [t for t, _, _ in answers]
    i = bisect.bisect_right(times, fault_ns)  # answers[i:] came after the fault
    last = max(bisect.bisect_left(times, until_ns), i)
    edges = times[i - 1 : last] if i > 0 else [fault_ns, *times[:last]]
    edges.append(until_ns)
    gaps = list(itertools.pairwise(edges))
    longest = max(gaps, key=lambda g: g[1] - g[0])
    at_fault = [g for g in gaps if g[0] <= fault_ns + REPLY_IN_FLIGHT_NS and g[1] > fault_ns]
    failover = _after_late_replies(answers, i, last, fault_ns) or max(
        at_fault, key=lambda g: g[1] - g[0], default=longest
    )
    if repeats is None:
        repeats = acknowledged_repeats([total for _, total, _ in answers])
    return ConsumerView(
        outage_ms=(longest[1] - longest[0]) / 1e6,
        answered=last > i,
        lost=sum(repeats[i:last]),
        last_good_ns=longest[0],
        first_good_ns=longest[1],
        failover_from_ns=failover[0],
        failover_to_ns=failover[1],
    )


# What ends each phase of a failover, read from the trace's structured fields (record kind,
# name, source, destination, data), never from the words of a why.
ISOLATING = ("Cleanup", "CleanupVm", "FenceHost")  # commands: the failed entity is isolated
ISOLATED = ("CleanupDone", "VmCleanedUp", "HostFenced")  # events: isolation confirmed


def _isolating(rec: Record, target: str) -> bool:
    return rec["kind"] == "command" and rec["name"] in ISOLATING and rec.get("dst") == target


def _isolated(rec: Record, target: str) -> bool:
    return (
        rec["kind"] == "event"
        and rec["name"] in ISOLATED
        and rec.get("src") == target
        and rec["data"].get("ok", True) is True
    )


def _assigned(rec: Record, target: str) -> bool:
    if rec["kind"] != "command":
        return False
    if rec["name"] == "AssignRole":
        return rec["data"].get("role") == "active"
    return rec["name"] == "StartVnfc"  # without redundancy the restart is the assignment


def _serving(rec: Record, target: str) -> bool:
    return (
        rec["kind"] == "event"
        and rec["name"] == "RoleConfirmed"
        and rec["data"].get("role") == "active"
    )


def _repaired(rec: Record, target: str) -> bool:
    return rec["kind"] == "event" and rec["name"] == "RoleConfirmed" and rec.get("src") == target


PHASE_MARKS = (
    ("isolated", _isolated),
    ("assigned", _assigned),
    ("serving", _serving),
    ("repaired", _repaired),
)


def phases(
    records: list[Record], fault_ns: int, target: str, until_ns: int | None = None
) -> dict[str, float]:
    """Milliseconds from the fault to each phase mark, read from the trace in order, up to the
    next fault. "detected" is the event on which the manager isolated the target (the record
    just before its isolating command: a decision's commands follow its event). Without
    redundancy the restart is the recovery: there is no separate repair."""
    out: dict[str, float] = {}
    start = bisect.bisect_left([r["t"] for r in records], fault_ns)
    window = [r for r in records[start:] if until_ns is None or r["t"] < until_ns]
    cause = None
    for k, rec in enumerate(window):
        if rec["kind"] == "event":
            cause = rec
        if _isolating(rec, target):
            out["detected"] = _ms((cause or rec)["t"], fault_ns)
            window = window[k + 1 :]
            break
    else:
        return out
    marks = iter(PHASE_MARKS)
    name, match = next(marks)
    for rec in window:
        if match(rec, target):
            out[name] = _ms(rec["t"], fault_ns)
            try:
                name, match = next(marks)
            except StopIteration:
                break
    return out


def _ms(t_ns: int, origin_ns: int) -> float:
    return round((t_ns - origin_ns) / 1e6, 3)
