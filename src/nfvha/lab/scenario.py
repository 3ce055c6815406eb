"""Scenarios: the seed's use cases as runnable files, checked against their expected sequence.

A scenario file holds a deployment, the fault to inject and the expected sequence: one or more
*chains*, each an ordered list of steps that must appear in the trace in that order after the
fault (other records may come between them; chains of different layers may interleave, since
the VNF level and the NFVI level act at the same time). ``forbid`` names records that must not
appear at all after the fault; ``escalates_on`` says on which failure the escalation must come.

Steps match records by ``name`` and optionally ``kind``, ``src``, ``dst`` and ``data`` fields.
Placeholders, resolved when the fault is injected: ``$failed`` (the active VNFC hit by the
fault), ``$successor`` (the other VNFC of a two-VNFC VNF), ``$vm``, ``$host`` (where ``$failed``
runs), ``$manager`` (its VNF's manager: ``ha:VNF`` or ``vnfm:VNF``).

The fault hits the first VNF's active unless ``fault.vnf`` names another VNF, such as the
implicit load balancer ``<vnf>-lb`` of a load-balanced first VNF. The probe is the consumer of
the first VNF: the service's protocol (udp, or tcp speaking the counter's lines), at the
address consumers use (its load balancer's frontend, if it has one; the virtual IP in network
mode netns), from the consumers' namespace in netns mode; ``probe`` may ask for http instead.
``answered_by`` names who must give every good answer after the failover (``$successor``:
the new active behind a virtual IP).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from nfvha.config import (
    ConfigError,
    Deployment,
    Strict,
    invalid,
    lb_vnf_name,
    read_mapping,
    with_load_balancers,
)
from nfvha.faults import TARGET_OF, FailureKind
from nfvha.lab import charts, report
from nfvha.lab.experiment import Experiment, applies, run_faults, vnf_active
from nfvha.runtime.engine import Engine
from nfvha.runtime.trace import Record, dump


class Step(Strict):
    name: str
    kind: str | None = None
    src: str | None = None
    dst: str | None = None
    data: dict[str, Any] = {}


class ScenarioFault(Strict):
    kind: FailureKind  # what it hits, the active or its VM or host, is in the name
    vnf: str | None = None  # whose active it hits; default: the first VNF
    times: int = Field(1, ge=1)
    every_s: float = Field(1.0, gt=0)


class ScenarioProbe(Strict):
    """The consumer's requests: by default the service's protocol (udp, tcp); http (a GET of
    ``path``, good on a 2xx status) where the service speaks HTTP, such as behind a load
    balancer whose health checks are http (HAProxy then balances in http mode)."""

    kind: Literal["udp", "tcp", "http"] | None = None
    path: str = Field("/", pattern=r"^/\S*$")


class Scenario(Strict):
    title: str
    seed: str
    deployment: Deployment
    fault: ScenarioFault
    expect: list[list[Step]] = Field(min_length=1)
    forbid: list[str] = []
    escalates_on: int | None = None
    redundant: bool = True  # the sub-second target applies (a VNF with redundancy)
    answered_by: str | None = None  # who answers after the failover (a VNFC or placeholder)
    probe: ScenarioProbe = ScenarioProbe()

    @model_validator(mode="after")
    def _fault_vnf(self) -> Scenario:
        vnfs = self.deployment.vnfs
        known = [v.name for v in vnfs] + [lb_vnf_name(v.name) for v in vnfs if v.load_balancer]
        if self.fault.vnf is not None and self.fault.vnf not in known:
            raise ValueError(f"fault.vnf: no VNF {self.fault.vnf!r} (known: {', '.join(known)})")
        return self


def directory() -> Path:
    return Path(str(resources.files("nfvha.scenarios")))


def names() -> list[str]:
    """The use cases in their order (uc1 ... uc9), then the other scenarios by name."""
    stems = [p.stem for p in directory().glob("*.yaml")]
    ucs = sorted((n for n in stems if re.fullmatch(r"uc\d+", n)), key=lambda n: int(n[2:]))
    return ucs + sorted(n for n in stems if n not in ucs)


def load(name_or_path: str) -> Scenario:
    """A scenario by name (uc1) or file; a ConfigError names the file, the path inside it
    (``expect[1][2].name``) and what is wrong."""
    path = Path(name_or_path)
    if not path.exists():
        path = directory() / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"no scenario {name_or_path!r} (known: {', '.join(names())})")
    raw = read_mapping(path)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise invalid(path, exc) from None


# --- running --------------------------------------------------------------------------------


@dataclass(slots=True)
class Round:
    """One repetition of the scenario's faults, checked on its own window of the trace."""

    bindings: dict[str, str]
    chains: list[dict[str, Any]]
    forbidden_seen: list[str]
    escalated_on: int | None

    def matches(self, scenario: Scenario) -> bool:
        escalation_ok = scenario.escalates_on is None or self.escalated_on == scenario.escalates_on
        return all(c["ok"] for c in self.chains) and not self.forbidden_seen and escalation_ok


@dataclass(slots=True)
class ScenarioOutcome:
    name: str
    scenario: Scenario
    experiment: Experiment
    rounds: list[Round]

    # The first round, as a report shows it.
    @property
    def bindings(self) -> dict[str, str]:
        return self.rounds[0].bindings

    @property
    def chains(self) -> list[dict[str, Any]]:
        return self.rounds[0].chains

    @property
    def forbidden_seen(self) -> list[str]:
        return self.rounds[0].forbidden_seen

    @property
    def escalated_on(self) -> int | None:
        return self.rounds[0].escalated_on

    @property
    def matches(self) -> bool:
        """Every round matched its expected sequence (a round that did not fails the run)."""
        return all(r.matches(self.scenario) for r in self.rounds)

    @property
    def answered(self) -> bool:
        """A good answer came after every fault."""
        return all(f.answered for f in self.experiment.faults)

    @property
    def outage_ms(self) -> float:
        """The longest outage over the faults (one never answered runs to its window's end)."""
        return max(f.outage_ms for f in self.experiment.faults)

    @property
    def answerers(self) -> list[str]:
        """Who gave the good answers after each fault's failover, to the next fault (sorted)."""
        exp = self.experiment
        ends = [f.fault_ns for f in exp.faults[1:]] + [None]
        return sorted(
            {
                vnfc
                for f, end in zip(exp.faults, ends, strict=True)
                for t, _total, vnfc in exp.answers
                if t >= f.failover_to_ns and (end is None or t < end)
            }
        )

    def verdict(self) -> dict[str, Any]:
        outage = self.outage_ms if self.answered else float("inf")
        probe = self.experiment.probe
        checks = applies(self.scenario.deployment.vnfs[0])
        # Answers that alternate between actives are the design of an active/active pool.
        interleaved = probe["interleaved"] and checks["two_actives"]
        v = report.verdict(outage, probe["lost"], interleaved)
        v["outage_ms"] = round(self.outage_ms, 3)
        v["answered_after_every_fault"] = self.answered
        v["applies"] = checks
        v["sub_second_applies"] = self.scenario.redundant
        v["sequence_matches"] = self.matches
        v["pass"] = (
            self.matches
            and self.answered
            and v["lost_acknowledged"] == 0
            and not v["two_actives_seen"]
        )
        if self.scenario.answered_by is not None:
            wanted = _bind(self.scenario.answered_by, self.bindings)
            v["answered_by"] = {"expected": wanted, "seen": self.answerers}
            v["pass"] = v["pass"] and self.answerers == [wanted]
        if self.scenario.redundant:
            v["pass"] = v["pass"] and v["sub_second"]
        return v

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "title": self.scenario.title,
            "seed": self.scenario.seed,
            "bindings": self.bindings,
            "faults": [
                {
                    "target": f.target,
                    "outage_ms": f.outage_ms,
                    "answered": f.answered,
                    "lost": f.lost,
                    "phases_ms": f.phases_ms,
                }
                for f in self.experiment.faults
            ],
            "probe": self.experiment.probe,
            "chains": self.chains,
            "forbidden_seen": self.forbidden_seen,
            "escalated_on": self.escalated_on,
            "rounds_matching": [r.matches(self.scenario) for r in self.rounds],
            "verdict": self.verdict(),
        }


async def run(
    name: str,
    scenario: Scenario,
    base_dir: Path,
    rounds: int = 1,
    between: Callable[[], Awaitable[None]] | None = None,
) -> ScenarioOutcome:
    """Run the scenario's faults ``rounds`` times over, each round checked against the expected
    sequence in its own window of the trace, with the placeholders of its first fault.
    ``between``: as for ``experiment.run_faults``."""
    bindings: list[dict[str, str]] = []
    kind = scenario.fault.kind
    deployment = with_load_balancers(scenario.deployment, name)  # the implicit <vnf>-lb
    hit = scenario.fault.vnf or deployment.vnfs[0].name
    vnf = next(v for v in deployment.vnfs if v.name == hit)

    def pick(engine: Engine) -> str:
        """The serving active (or its VM, or its host) at each fault."""
        active = vnf_active(engine, vnf.name)
        now = {"failed": active, "manager": engine.label(vnf.name)}
        others = [c.name for c in vnf.vnfcs if c.name != active]
        if len(others) == 1:
            now["successor"] = others[0]
        if engine.placement is not None:
            now["vm"] = engine.placement.vnfc_vm[active]
            now["host"] = engine.nfvi.vm_host[now["vm"]]
        bindings.append(now)
        hits = TARGET_OF[kind]  # vnfc, vm or host
        return active if hits == "vnfc" else now[hits]

    exp = await run_faults(
        deployment,
        base_dir,
        faults=scenario.fault.times * rounds,
        fault=kind,
        spacing_s=scenario.fault.every_s,
        target=pick,
        between=between,
        probe_kind=scenario.probe.kind,
        probe_path=scenario.probe.path,
    )
    per = scenario.fault.times
    starts = [f.fault_ns for f in exp.faults[::per]]
    ends = starts[1:] + [None]
    checked = [
        check_round(scenario, exp.records, start, end, bindings[k * per])
        for k, (start, end) in enumerate(zip(starts, ends, strict=True))
    ]
    return ScenarioOutcome(name, scenario, exp, checked)


def check_round(
    scenario: Scenario,
    records: list[Record],
    start_ns: int,
    end_ns: int | None,
    bindings: dict[str, str],
) -> Round:
    """The expected chains, the forbidden records and the escalation within one round."""
    window = [r for r in records if r["t"] >= start_ns and (end_ns is None or r["t"] < end_ns)]
    chains = [match_chain(chain, window, bindings) for chain in scenario.expect]
    forbidden = sorted({r["name"] for r in window if r["name"] in scenario.forbid})
    return Round(bindings, chains, forbidden, escalated_on(window))


def escalated_on(records: list[Record]) -> int | None:
    """On which fault of the window (1 for its first) the first escalation came: the faults
    injected before the first Escalate message, counted from the experiment's side."""
    faults = 0
    for rec in records:
        if rec["kind"] == "fault":
            faults += 1
        elif rec["kind"] == "message" and rec["name"] == "Escalate":
            return faults
    return None


def _bind(value: Any, bindings: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return bindings.get(value[1:], value)
    return value


def _matches(step: Step, rec: Record, bindings: dict[str, str]) -> bool:
    if rec["name"] != step.name or (step.kind and rec["kind"] != step.kind):
        return False
    if step.src and rec.get("src") != _bind(step.src, bindings):
        return False
    if step.dst and rec.get("dst") != _bind(step.dst, bindings):
        return False
    data = rec.get("data", {})
    return all(data.get(k) == _bind(v, bindings) for k, v in step.data.items())


def _describe(step: Step, bindings: dict[str, str]) -> str:
    parts = [step.name]
    if step.src or step.dst:
        parts.append(f"{_bind(step.src, bindings) or '*'} → {_bind(step.dst, bindings) or '*'}")
    if step.data:
        parts.append(", ".join(f"{k}={_bind(v, bindings)}" for k, v in step.data.items()))
    return " ".join(parts)


def match_chain(chain: list[Step], records: list[Record], bindings: dict[str, str]) -> dict:
    """Greedy in-order match; reports each step's time (ms after the fault) or where it broke."""
    origin = records[0]["t"] if records else 0
    steps, i = [], 0
    for step in chain:
        while i < len(records) and not _matches(step, records[i], bindings):
            i += 1
        found = i < len(records)
        steps.append(
            {
                "step": _describe(step, bindings),
                "ms": round((records[i]["t"] - origin) / 1e6, 3) if found else None,
            }
        )
        if not found:
            return {"ok": False, "steps": steps, "missing": steps[-1]["step"]}
        i += 1
    return {"ok": True, "steps": steps}


# --- reports --------------------------------------------------------------------------------


def write_report(outcome: ScenarioOutcome, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    exp = outcome.experiment
    first = exp.faults[0]
    trace_path = directory / "trace.jsonl"
    dump(exp.records, trace_path)
    consumer = None
    if first.failover_from_ns:  # the silence at the failover, drawn where it happened
        consumer = {"last_good_ns": first.failover_from_ns, "first_good_ns": first.failover_to_ns}
    start = first.fault_ns - 20_000_000
    # A message between managers is drawn once, as sent; its handling is the receiver's event.
    sent = {r["name"] for r in exp.records if r["kind"] == "message"}
    drawn = [
        r
        for r in exp.records
        if r["t"] >= start
        and r["kind"] != "note"
        and not (r["kind"] == "event" and r["name"] in sent)
    ]
    seq = directory / "sequence.svg"
    seq.write_text(charts.sequence_chart(drawn, outcome.scenario.title, consumer=consumer))
    answers = [(t, vnfc) for t, _total, vnfc in exp.answers]
    faults = [(f.fault_ns, f"{f.target}") for f in exp.faults]
    timeline = directory / "outage.svg"
    timeline.write_text(charts.outage_timeline(answers, faults, outcome.scenario.title))
    result = directory / "result.json"
    result.write_text(json.dumps(outcome.to_json(), indent=2) + "\n")
    return [trace_path, seq, timeline, result]
