"""Run, fuzz and shrink simulations."""

from __future__ import annotations

import random
from dataclasses import dataclass

from nfvha.config import Deployment
from nfvha.core.dispatcher import ManagerClasses
from nfvha.faults import SIMULATED
from nfvha.sim import faults as fs
from nfvha.sim.invariants import Invariants, Violation
from nfvha.sim.world import DEFAULT_CLASSES, DEFAULT_LATENCIES, Latencies, Simulation

MANAGER = "manager"  # the one target of a manager-crash
SETTLE_S = 30.0  # quiet time after the last fault: longer than any repair chain


@dataclass(slots=True)
class SimOutcome:
    seed: int
    faults: list[fs.Fault]
    violation: Violation | None
    sim: Simulation

    @property
    def ok(self) -> bool:
        return self.violation is None


def entities(deployment: Deployment) -> dict[str, list[str]]:
    sim = Simulation(deployment, 0, record=False)
    return {
        "vnfc": list(sim.vnfcs),
        "vm": list(sim.vms),
        "host": list(sim.hosts),
        "vnf": [v.name for v in deployment.vnfs],
        # With or without hosts: the host and guest agents outlive the manager as its VNFCs do.
        "manager": [MANAGER],
    }


def random_schedule(
    deployment: Deployment,
    seed: int,
    duration: float,
    mean_gap: float,
    kinds: tuple[str, ...] = SIMULATED,
) -> list[fs.Fault]:
    return fs.draw(random.Random(seed), entities(deployment), duration, mean_gap, kinds)


def simulate(
    deployment: Deployment,
    seed: int,
    faults: list[fs.Fault],
    *,
    policies: ManagerClasses = DEFAULT_CLASSES,
    latencies: Latencies = DEFAULT_LATENCIES,
    record: bool = True,
    settle: float = SETTLE_S,
) -> SimOutcome:
    checker = Invariants()
    sim = Simulation(
        deployment,
        seed,
        faults,
        policies=policies,
        latencies=latencies,
        record=record,
        observers=(checker,),
    )
    end = (max((f.at + f.duration for f in faults), default=0.0)) + settle
    try:
        sim.run(end)
        checker.check_end(sim)
    except Violation as violation:
        return SimOutcome(seed, faults, violation, sim)
    return SimOutcome(seed, faults, None, sim)


def shrink(deployment: Deployment, outcome: SimOutcome, **kwargs) -> SimOutcome:
    """The shortest schedule (by removing faults, delta-debugging style) that still violates
    the same invariant."""
    assert outcome.violation is not None
    name = outcome.violation.name
    best = outcome

    def fails(subset: list[fs.Fault]) -> SimOutcome | None:
        trial = simulate(deployment, outcome.seed, subset, record=False, **kwargs)
        return trial if trial.violation and trial.violation.name == name else None

    chunk = max(1, len(best.faults) // 2)
    while chunk >= 1:
        i, shrunk = 0, False
        while i < len(best.faults):
            subset = best.faults[:i] + best.faults[i + chunk :]
            trial = fails(subset)
            if trial is not None:
                best, shrunk = trial, True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    final = simulate(deployment, outcome.seed, best.faults, **kwargs)  # with its trace
    return final if final.violation else best


def fuzz(
    deployment: Deployment,
    runs: int,
    *,
    first_seed: int = 1,
    duration: float = 30.0,
    mean_gap: float = 1.0,
    kinds: tuple[str, ...] = SIMULATED,
    **kwargs,
) -> tuple[int, SimOutcome | None]:
    """Random schedules for seeds first_seed.. ; returns (runs done, the first failure)."""
    for n, seed in enumerate(range(first_seed, first_seed + runs), 1):
        schedule = random_schedule(deployment, seed, duration, mean_gap, kinds)
        outcome = simulate(deployment, seed, schedule, record=False, **kwargs)
        if outcome.violation:
            return n, outcome
    return runs, None
