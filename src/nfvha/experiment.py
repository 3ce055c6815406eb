"""Fault experiments: run a deployment, drive the probe, inject faults into the active, and read
outage, lost updates and the recovery phases back from the probe and the trace.

Used by ``nfvha demo`` and by the benchmark; both report what this measured, nothing else.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nfvha.config import Deployment
from nfvha.core.ha import Life
from nfvha.runtime.engine import Engine
from nfvha.runtime.trace import Record, Trace


@dataclass(slots=True)
class FaultOutcome:
    fault: str
    target: str
    fault_ns: int
    outage_ms: float | None  # consumer side; None if no answer came after the fault
    lost: int
    last_good_ns: int = 0  # the consumer's last good answer before the fault
    first_good_ns: int = 0  # and its first good answer after it
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
        snap = engine.vim.snapshot()
        if any(s != "up" for s in snap["hosts"].values()):  # type: ignore[union-attr]
            return False
        if any(vm["state"] != "up" for vm in snap["vms"].values()):  # type: ignore[union-attr]
            return False
    for vnf in engine.vnfs.values():
        mgr = vnf.manager
        if not mgr.snapshot()["service"]["up"]:  # type: ignore[index]
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
    fault: str = "kill",
    interval_ms: float = 1.0,
    spacing_s: float = 1.0,
    lead_s: float = 0.5,
    state_dir: Path | None = None,
    target: Callable[[Engine], str] | None = None,
) -> Experiment:
    """Inject ``faults`` faults, ``spacing_s`` apart (and each once the deployment is steady
    again), under the probe. The target is the serving active VNFC unless ``target`` says."""
    vnf = deployment.vnfs[0]
    with tempfile.TemporaryDirectory(prefix="nfvha-exp-") as tmp:
        work = Path(tmp)
        trace = Trace()
        engine = Engine(deployment, base_dir, trace, state_dir or work / "state")
        await engine.start()
        try:
            await wait_steady(engine)
            answers_path = work / "answers.csv"
            probe = await _start_probe(vnf.service.address, interval_ms, 3600, answers_path)
            await _wait_for_answers(answers_path)
            await asyncio.sleep(lead_s)
            injected: list[tuple[str, int]] = []
            for _ in range(faults):
                started = time.monotonic()
                victim = target(engine) if target else vnf_active(engine, vnf.name)
                engine.inject(fault, victim)
                injected.append((victim, trace.records[-1]["t"]))
                await wait_steady(engine)
                await asyncio.sleep(max(0.0, spacing_s - (time.monotonic() - started)))
            probe.send_signal(signal.SIGINT)
            out, _ = await probe.communicate()
            if probe.returncode != 0:
                raise RuntimeError(f"probe failed with exit code {probe.returncode}")
            probe_result = json.loads(out)
            answers = _read_answers(answers_path)
        finally:
            await engine.shutdown()
    ends = [t for _, t in injected[1:]] + [None]
    outcomes = [
        FaultOutcome(
            fault,
            target,
            t,
            *_consumer_view(answers, t, end),
            phases_ms=phases(trace.records, t, target, until_ns=end),
        )
        for (target, t), end in zip(injected, ends, strict=True)
    ]
    return Experiment(
        deployment.name, vnf.redundancy.model, probe_result, outcomes, trace.records, answers
    )


def vnf_active(engine: Engine, vnf_name: str) -> str:
    active = engine.vnfs[vnf_name].manager.snapshot()["service"]["active"]  # type: ignore[index]
    if not active:
        raise RuntimeError(f"{vnf_name} has no active VNFC")
    return active[0]


async def _start_probe(address: str, interval_ms: float, duration_s: float, answers: Path):
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nfvha",
        "probe",
        f"udp://{address}",
        "--interval-ms",
        str(interval_ms),
        "--duration",
        str(duration_s),
        "--json",
        "--answers-out",
        str(answers),
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


REPLY_IN_FLIGHT_NS = 50_000_000  # an answer sent just before the fault may arrive after it


def _consumer_view(
    answers: list[tuple[int, int, str]], fault_ns: int, until_ns: int | None = None
) -> tuple[float | None, int, int, int]:
    """Around one fault: the outage (the longest gap between consecutive good answers from just
    before the fault until the next fault), the lost count, and the gap's two answers' times.
    The longest gap, not the one straddling the fault's timestamp: a reply the failed active
    sent just before it died can arrive just after, and the outage starts after it."""
    times = [t for t, _, _ in answers]
    i = bisect.bisect_right(times, fault_ns)
    if i == 0 or i == len(answers):
        return None, 0, 0, 0
    first = bisect.bisect_left(times, fault_ns - REPLY_IN_FLIGHT_NS)
    last = bisect.bisect_left(times, until_ns) if until_ns is not None else len(times)
    last = max(last, i + 1)
    gap, at = max((times[k] - times[k - 1], k) for k in range(max(first, 1), last))
    before_max = max(total for _, total, _ in answers[:i])
    lost = sum(1 for _, total, _ in answers[i : i + 2000] if 0 < total <= before_max)
    return gap / 1e6, lost, times[at - 1], times[at]


# What ends each phase of a failover, as recorded in the trace.
PHASE_MARKS = (
    (
        "detected",
        lambda r, target: (
            r["kind"] == "event" and r["src"] == target and "isolating" in r.get("why", "")
        ),
    ),
    ("isolated", lambda r, target: r["name"] == "CleanupDone" and r["src"] == target),
    (
        "assigned",
        lambda r, target: r["name"] in ("AssignRole", "StartVnfc") and r["kind"] == "command",
    ),
    (
        "serving",
        lambda r, target: r["name"] == "RoleConfirmed" and r["data"].get("role") == "active",
    ),
    ("repaired", lambda r, target: r["name"] == "RoleConfirmed" and r["src"] == target),
)


def phases(
    records: list[Record], fault_ns: int, target: str, until_ns: int | None = None
) -> dict[str, float]:
    """Milliseconds from the fault to each phase mark, read from the trace in order, up to the
    next fault. Without redundancy the restart is the recovery: there is no separate repair."""
    out: dict[str, float] = {}
    start = bisect.bisect_left([r["t"] for r in records], fault_ns)
    marks = iter(PHASE_MARKS)
    name, match = next(marks)
    for rec in records[start:]:
        if until_ns is not None and rec["t"] >= until_ns:
            break
        if match(rec, target):
            out[name] = round((rec["t"] - fault_ns) / 1e6, 3)
            try:
                name, match = next(marks)
            except StopIteration:
                break
    return out
