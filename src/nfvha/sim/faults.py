"""Fault schedules: explicit (a YAML list) or drawn from a seed. The kinds are nfvha.faults's
(``SIMULATED``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from nfvha.faults import LASTING, SIMULATED, TARGET_OF


@dataclass(frozen=True, slots=True, order=True)
class Fault:
    at: float  # seconds of virtual time
    kind: str
    target: str
    duration: float = 0.0  # faults in LASTING: how long until it heals

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"at": self.at, "kind": self.kind, "target": self.target}
        if self.duration:
            out["duration"] = self.duration
        return out


class ScheduleError(ValueError):
    pass


def load(path: Path, entities: dict[str, list[str]]) -> list[Fault]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f"{path}: cannot read the fault schedule: {exc}") from None
    if not isinstance(raw, list):
        raise ScheduleError(f"{path}: expected a list of faults")
    faults = []
    for i, item in enumerate(raw):
        where = f"{path}: [{i}]"
        if not isinstance(item, dict) or not {"at", "kind", "target"} <= item.keys():
            raise ScheduleError(f"{where}: a fault needs 'at', 'kind' and 'target'")
        kind, target = item["kind"], item["target"]
        if kind not in SIMULATED:
            raise ScheduleError(f"{where}.kind: {kind!r} is not one of {', '.join(SIMULATED)}")
        if target not in entities[TARGET_OF[kind]]:
            raise ScheduleError(f"{where}.target: no {TARGET_OF[kind]} named {target!r}")
        try:
            at, duration = float(item["at"]), float(item.get("duration", 0.0))
        except (TypeError, ValueError):
            raise ScheduleError(f"{where}: 'at' and 'duration' must be numbers") from None
        faults.append(Fault(at, kind, target, duration))
    return sorted(faults)


def draw(
    rng: random.Random,
    entities: dict[str, list[str]],
    duration: float,
    mean_gap: float,
    kinds: tuple[str, ...] = SIMULATED,
) -> list[Fault]:
    """Faults at exponential gaps (mean ``mean_gap``) over ``duration``, kind and target drawn
    uniformly: faults during recovery from another are part of the mix."""
    faults, at = [], 0.0
    usable = [k for k in kinds if entities[TARGET_OF[k]]]
    while True:
        at += rng.expovariate(1.0 / mean_gap)
        if at >= duration:
            return faults
        kind = rng.choice(usable)
        target = rng.choice(entities[TARGET_OF[kind]])
        span = round(rng.uniform(0.1, 2.0), 3) if kind in LASTING else 0.0
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
