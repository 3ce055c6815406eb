"""Fault schedules: explicit (a YAML list) or drawn from a seed. The kinds are nfvha.faults's
(``SIMULATED``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from nfvha.config import Strict, invalid, read_yaml
from nfvha.faults import LASTING, MANAGER, SIMULATED, TARGET_OF, SimKind


@dataclass(frozen=True, slots=True, order=True)
class Fault:
    at: float  # seconds of virtual time
    kind: str
    target: str
    # faults in LASTING: how long until it heals; manager-crash: until a new manager leads
    # (0: the takeover latency)
    duration: float = 0.0

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"at": self.at, "kind": self.kind, "target": self.target}
        if self.duration:
            out["duration"] = self.duration
        return out


class ScheduledFault(Strict):
    """One entry of a schedule file; its target must exist in the deployment (the validation
    context: entity names per kind of target)."""

    at: float = Field(ge=0)
    kind: SimKind
    target: str
    duration: float = Field(0.0, ge=0)

    @field_validator("target")
    @classmethod
    def _known(cls, target: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")  # absent when the kind itself was wrong
        if info.context is not None and kind is not None:
            hits = TARGET_OF[kind]
            if target not in info.context.get(hits, ()):
                raise ValueError(f"no {hits} named {target!r}")
        return target


SCHEDULE = TypeAdapter(list[ScheduledFault])


def load(path: Path, entities: dict[str, list[str]]) -> list[Fault]:
    """A schedule file, in time order; a ConfigError names the file, the entry and the field."""
    try:
        entries = SCHEDULE.validate_python(read_yaml(path), context=entities)
    except ValidationError as exc:
        raise invalid(path, exc) from None
    return sorted(Fault(e.at, e.kind, e.target, e.duration) for e in entries)


def draw(
    rng: random.Random,
    entities: dict[str, list[str]],
    duration: float,
    mean_gap: float,
    kinds: tuple[str, ...] = SIMULATED,
) -> list[Fault]:
    """Faults at exponential gaps (mean ``mean_gap``) over ``duration``, kind and target drawn
    uniformly: faults during recovery from another are part of the mix. A manager crash is
    taken over by the hot standby manager (the takeover latency) or, half the time, by a
    manager that leads 0.1 to 2 s later (a restart): often longer than a role lease."""
    faults: list[Fault] = []
    at = 0.0
    usable = [k for k in kinds if entities.get(TARGET_OF[k])]
    while True:
        at += rng.expovariate(1.0 / mean_gap)
        if at >= duration:
            return faults
        kind = rng.choice(usable)
        target = rng.choice(entities[TARGET_OF[kind]])
        span = round(rng.uniform(0.1, 2.0), 3) if kind in LASTING else 0.0
        if kind in MANAGER and rng.random() < 0.5:
            span = round(rng.uniform(0.1, 2.0), 3)
        faults.append(Fault(round(at, 6), kind, target, span))


def poisson(
    rng: random.Random,
    entities: dict[str, list[str]],
    duration: float,
    mtbf_s: dict[str, float],
) -> list[Fault]:
    """Independent exponential failures: each entity of a kind fails at rate 1/MTBF. Drawn as
    one Poisson process per kind (rate n/MTBF) with a uniform target: O(faults), not
    O(entities), so it scales to data-centre sizes."""
    faults: list[Fault] = []
    for kind, mtbf in sorted(mtbf_s.items()):
        targets = entities[TARGET_OF[kind]]
        if not targets or mtbf <= 0:
            continue
        rate, at = len(targets) / mtbf, 0.0
        while (at := at + rng.expovariate(rate)) < duration:
            faults.append(Fault(at, kind, rng.choice(targets)))
    return sorted(faults)
