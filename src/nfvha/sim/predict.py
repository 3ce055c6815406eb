"""Availability prediction: Monte Carlo over simulated years of the unchanged managers, with the
closed-form Markov results it is cross-checked against (docs/predict.md).

Each entity of a kind with a ``reliability`` entry fails at rate 1/MTBF (exponential times to
failure, drawn as one Poisson process per kind with a uniform target); its repair takes MTTR,
which replaces the simulator's start-up time for it (VNFC: ``Latencies.spawn``, VM: ``vm_boot``,
host: ``host_boot``). Everything else (detection, isolation, failover, restart order) is what
the managers do. A service is up while at least one of its VNFCs is alive, not hung, on a live
and unfrozen VM on a live and reachable host, holds the active role in the world, and the HA
manager has that role confirmed. The consumer sees it back ``consumer_s`` later (the request
in flight when the active died is never answered, the next must be sent and served): each
outage is lengthened by that, so the figures are the consumer's, as the benchmarks measure.

By default the runs go on until the 95 % confidence interval of every service's unavailability
is within +-5 % of it (``precision``), up to ``MAX_RUNS``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

from nfvha.config import Deployment, HealthCheck, Reliability
from nfvha.core.ha import Role
from nfvha.lab import stats
from nfvha.sim import faults as fs
from nfvha.sim.faults import Fault
from nfvha.sim.world import DEFAULT_LATENCIES, Latencies, Simulation

HOUR_S = 3600.0
YEAR_H = 8760.0  # a year is 365 days
MINUTES_PER_YEAR = YEAR_H * 60
KINDS = ("vnfc", "vm", "host")
FAULT_KINDS = {
    "vnfc": ("vnfc-crash", "vnfc-hang"),
    "vm": ("vm-crash", "vm-hang"),
    "host": ("host-crash", ""),
}
LATENCY_OF = {"vnfc": "spawn", "vm": "vm_boot", "host": "host_boot"}
# The consumer's share of an outage after the manager's "serving" instant: the median of
# (consumer's outage - serving) per kill in bench/results/failover.json, 2n (2.5 ms; n+m 1.8).
CONSUMER_S = 0.0025
PRECISION = 0.05  # default: runs until the unavailability's 95 % CI is within +-5 % of it
MIN_RUNS = 10
MAX_RUNS = 1000


class PredictError(ValueError):
    """The deployment cannot be predicted (no reliability data, or it never comes up)."""


# --- arithmetic ---------------------------------------------------------------------------------


def nines(availability: float) -> float:
    """-log10(1 - A): 0.999 is 3 nines; infinite for A = 1."""
    return math.inf if availability >= 1.0 else -math.log10(1.0 - availability)


def downtime_min_per_year(availability: float) -> float:
    """(1 - A) x 525 600 minutes (a year of 365 days)."""
    return (1.0 - availability) * MINUTES_PER_YEAR


def t95(runs: int) -> float:
    """The 95 % two-sided Student t quantile for ``runs`` samples (df = runs - 1), exact."""
    return stats.t_quantile(0.95, runs - 1)


@dataclass(frozen=True, slots=True)
class Estimate:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: list[float]) -> Estimate:
        """mean +- t * s / sqrt(R): the 95 % confidence interval from the run-to-run spread."""
        mean, half = stats.mean_ci(samples)
        return cls(mean, mean - half, mean + half)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_json(self, digits: int = 9) -> dict[str, Any]:
        return {
            "mean": _num(self.mean, digits),
            "ci95": [_num(self.low, digits), _num(self.high, digits)],
        }


def _num(value: float, digits: int) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else round(value, digits)


# --- the closed forms ---------------------------------------------------------------------------


def detection_s(lat: Latencies, hang_fraction: float, hc: HealthCheck) -> float:
    """Mean time from a failure to the HA manager knowing it: a crash's exit is seen after
    ``exit_seen``; a hang after ``failure_threshold`` missed health checks of ``interval_ms``:

        d = (1 - h) * exit_seen + h * failure_threshold * interval"""
    hang = hc.failure_threshold * hc.interval_ms / 1000
    return (1.0 - hang_fraction) * lat.exit_seen + hang_fraction * hang


def repair_s(lat: Latencies, detection: float) -> float:
    """MTTR_eff of one VNFC, failure to serving again (in the active role) when nothing else
    takes over: detect, isolate, start, come up, take the role:

        r = d + cleanup + fork + spawn + assign      (spawn = the configured MTTR)"""
    return detection + lat.cleanup + lat.fork + lat.spawn + lat.assign


def failover_s(lat: Latencies, detection: float, consumer: float = CONSUMER_S) -> float:
    """The consumer's outage in a failover to a running standby: detect, isolate the failed
    active, assign, and the consumer's share c until its first good answer:

    f = d + cleanup + assign + c"""
    return detection + lat.cleanup + lat.assign + consumer


def availability_none(mtbf_s: float, repair: float, consumer: float = CONSUMER_S) -> float:
    """No redundancy (one VNFC): an alternating renewal process, up for Exp(1/MTBF), down for
    the repair r; the consumer sees each outage c longer:

        A = 1 - (r + c) / (MTBF + r)"""
    return 1.0 - (repair + consumer) / (mtbf_s + repair)


def availability_2n(
    mtbf_s: float, repair: float, failover: float, consumer: float = CONSUMER_S
) -> float:
    """Active/standby (two VNFCs, each failing at lambda = 1/MTBF, repair r, mu = 1/r).

    Markov chain on the number of VNFCs up (2, 1, 0). Every failed VNFC is restarted on its
    own (the failed active once the standby has taken over, the standby at once; with both
    down both restart), so 2 -> 1 at 2 lambda, 1 -> 2 at mu, 1 -> 0 at lambda, 0 -> 1 at 2 mu:

        pi1 = (2 lambda / mu) pi2,   pi0 = (lambda / (2 mu)) pi1,
        pi2 = 1 / (1 + rho)^2,  pi1 = 2 rho / (1 + rho)^2,  pi0 = rho^2 / (1 + rho)^2,
        rho = lambda r

    that is, the two VNFCs are independent, each down with probability rho / (1 + rho) (which
    also makes pi0 insensitive to the distribution of r: the simulator's is fixed). The service
    is down in state 0 (and, as the consumer sees it, c longer after each return from it, at
    rate 2 mu pi0), and for the failover time f (c included) after each failure of the active
    while the standby is up (rate lambda pi2); a standby's failure costs nothing:

        U = pi0 (1 + 2 c / r) + pi2 lambda f,   A = 1 - U

    Approximations: the failed active comes back after r + assign (it is restarted once the
    standby has confirmed), counted as r; an outage that begins during a failover is counted
    once; failures during a VNFC's start-up (which restart it) are ignored: O(lambda r)
    relative."""
    lam = 1.0 / mtbf_s
    rho = lam * repair
    pi2, pi0 = 1.0 / (1.0 + rho) ** 2, rho**2 / (1.0 + rho) ** 2
    return 1.0 - (pi0 * (1.0 + 2.0 * consumer / repair) + pi2 * lam * failover)


@dataclass(frozen=True, slots=True)
class ClosedForm:
    model: str
    availability: float
    mtbf_s: float
    repair_s: float
    failover_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "availability": round(self.availability, 12),
            "nines": _num(nines(self.availability), 4),
            "downtime_min_per_year": round(downtime_min_per_year(self.availability), 4),
            "mtbf_h": self.mtbf_s / HOUR_S,
            "repair_s": round(self.repair_s, 6),
            "failover_s": None if self.failover_s is None else round(self.failover_s, 6),
        }


def closed_form(deployment: Deployment, vnf_name: str, lat: Latencies) -> ClosedForm | None:
    """The Markov result for a VNF of model none or 2n when only VNFCs fail (no VM or host
    reliability); None where it does not apply. ``lat``: the latencies in use (spawn = MTTR)."""
    rel = deployment.reliability
    if rel is None or rel.vnfc is None or rel.vm is not None or rel.host is not None:
        return None
    vnf = next(v for v in deployment.vnfs if v.name == vnf_name)
    model = vnf.redundancy.model
    if model not in ("none", "2n"):
        return None
    mtbf = rel.vnfc.mtbf_h * HOUR_S
    d = detection_s(lat, rel.vnfc.hang_fraction, vnf.policies.health_check)
    r = repair_s(lat, d)
    if model == "none":
        return ClosedForm(model, availability_none(mtbf, r), mtbf, r, None)
    f = failover_s(lat, d)
    return ClosedForm(model, availability_2n(mtbf, r, f), mtbf, r, f)


# --- the Monte Carlo ----------------------------------------------------------------------------


def latencies_for(reliability: Reliability, base: Latencies = DEFAULT_LATENCIES) -> Latencies:
    """The simulator's latencies with each given MTTR in place of its entity's start-up."""
    changes = {
        LATENCY_OF[kind]: r.mttr_h * HOUR_S
        for kind in KINDS
        if (r := getattr(reliability, kind)) is not None and r.mttr_h is not None
    }
    return replace(base, **changes)


def prepared(deployment: Deployment, lat: Latencies) -> Deployment:
    """The deployment as simulated: a start deadline (``start_timeout_s``) shorter than the
    VNFC's start-up (its MTTR) would fail every repair, so the start-up is added to it."""
    raw = deployment.model_dump()
    for vnf in raw["vnfs"]:
        policies = vnf["policies"]
        if policies["start_timeout_s"] <= lat.spawn:
            policies["start_timeout_s"] += lat.spawn
    return Deployment.model_validate(raw)


def failure_schedule(
    rng: random.Random,
    entities: dict[str, list[str]],
    reliability: Reliability,
    start: float,
    horizon: float,
) -> list[Fault]:
    """Exponential failures over [start, start + horizon): per fault kind one Poisson process
    with a uniform target (``faults.poisson``: n entities failing at 1/MTBF each). Hangs and
    crashes split a kind's failures: crashes at (1 - h)/MTBF, hangs at h/MTBF per entity."""
    mtbf_s: dict[str, float] = {}
    for kind in KINDS:
        rel = getattr(reliability, kind)
        if rel is None:
            continue
        crash, hang = FAULT_KINDS[kind]
        fraction = getattr(rel, "hang_fraction", 0.0)
        for name, share in ((crash, 1.0 - fraction), (hang, fraction)):
            if share > 0:
                mtbf_s[name] = rel.mtbf_h * HOUR_S / share
    drawn = fs.poisson(rng, entities, horizon, mtbf_s)
    return [Fault(start + f.at, f.kind, f.target) for f in drawn]


@dataclass(frozen=True, slots=True)
class Outage:
    vnf: str
    start: float
    end: float
    kind: str  # the fault that began it: the last one that took effect at or before its start

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


def serving(sim: Simulation, vnf: str) -> bool:
    """The service is up in the world: some VNFC alive, not hung, on a live unfrozen VM on a live
    reachable host, active in the world and confirmed active by its HA manager."""
    ha = sim.ha[vnf].vnfcs
    for spec in sim.specs[vnf].vnfcs:
        c = sim.vnfcs[spec.name]
        if not c.alive or c.hung or c.role != "active":
            continue
        if not sim.placed_reachable(c):
            continue
        state = ha[spec.name]
        if state.role is Role.ACTIVE and state.confirmed:
            return True
    return False


@dataclass
class ServiceWatch:
    """Observer: integrates each service's up time from ``begin`` and records its outages."""

    measuring: bool = False
    last_fault: str = "none"
    up: dict[str, bool] = field(default_factory=dict)
    up_s: dict[str, float] = field(default_factory=dict)
    changed: dict[str, float] = field(default_factory=dict)
    down_kind: dict[str, str] = field(default_factory=dict)
    outages: list[Outage] = field(default_factory=list)

    def on_command(self, sim: Any, source: str, cmd: Any) -> None:
        pass

    def on_decision(self, sim: Any, target: str, event: Any, decision: Any) -> None:
        pass

    def inject(self, sim: Simulation, fault: Fault) -> None:
        """Scheduled in place of ``sim.inject``: notes the fault kind when it takes effect."""
        if _takes_effect(sim, fault):
            self.last_fault = fault.kind
        sim.inject(fault)

    def begin(self, sim: Simulation) -> None:
        self.measuring = True
        for vnf in sim.specs:
            self.up[vnf], self.up_s[vnf], self.changed[vnf] = serving(sim, vnf), 0.0, sim.now
            self.down_kind[vnf] = "start-up"

    def after_step(self, sim: Simulation) -> None:
        if not self.measuring:
            return
        for vnf, was_up in self.up.items():
            if serving(sim, vnf) != was_up:
                self._flip(vnf, sim.now)

    def _flip(self, vnf: str, now: float) -> None:
        if self.up[vnf]:
            self.up_s[vnf] += now - self.changed[vnf]
            self.down_kind[vnf] = self.last_fault
        else:
            self.outages.append(Outage(vnf, self.changed[vnf], now, self.down_kind[vnf]))
        self.up[vnf], self.changed[vnf] = not self.up[vnf], now

    def finish(self, now: float) -> None:
        """Close the books at ``now``: an outage still open is counted up to here."""
        for vnf in self.up:
            self._flip(vnf, now)
        self.measuring = False


def _takes_effect(sim: Simulation, fault: Fault) -> bool:
    kind, target = fault.kind, fault.target
    if kind.startswith("vnfc-"):
        c = sim.vnfcs[target]
        return c.alive and not (kind == "vnfc-hang" and c.hung)
    if kind.startswith("vm-"):
        vm = sim.vms[target]
        return vm.alive and not (kind == "vm-hang" and vm.frozen)
    return sim.hosts[target].alive


@dataclass(frozen=True, slots=True)
class PredictionRun:
    seed: int
    horizon_s: float
    up_s: dict[str, float]
    outages: list[Outage]
    faults: int
    events: int

    def availability(self, vnf: str) -> float:
        return self.up_s[vnf] / self.horizon_s


def simulate_run(
    deployment: Deployment,
    seed: int,
    years: float,
    lat: Latencies | None = None,
    consumer_s: float = CONSUMER_S,
) -> PredictionRun:
    """One simulated stretch of ``years`` with failures drawn from ``seed``, measured after every
    service has come up (the initial start is not counted), as the consumer sees it."""
    rel = deployment.reliability
    if rel is None:
        raise PredictError("the deployment has no 'reliability' section")
    lat = lat or latencies_for(rel)
    dep = prepared(deployment, lat)
    watch = ServiceWatch()
    sim = Simulation(
        dep, seed, (), latencies=lat, checkpoint_every=None, record=False, observers=(watch,)
    )
    warm_up = 2 * (lat.fork + lat.spawn + lat.assign) + 1.0
    sim.run(warm_up)
    never = [vnf for vnf in sim.specs if not serving(sim, vnf)]
    if never:
        raise PredictError(f"the service of {', '.join(never)} does not come up in the simulator")
    entities = {"vnfc": list(sim.vnfcs), "vm": list(sim.vms), "host": list(sim.hosts), "vnf": []}
    horizon = years * YEAR_H * HOUR_S
    faults = failure_schedule(random.Random(seed), entities, rel, sim.now, horizon)
    for fault in faults:
        sim.at(fault.at, watch.inject, sim, fault)
    watch.begin(sim)
    end = sim.now + horizon
    sim.run(end)
    watch.finish(end)
    outages = as_consumer_sees(watch.outages, consumer_s, end)
    down = {vnf: 0.0 for vnf in sim.specs}
    for o in outages:
        down[o.vnf] += o.end - o.start
    up_s = {vnf: horizon - d for vnf, d in down.items()}
    return PredictionRun(seed, horizon, up_s, outages, len(faults), sim.events)


def as_consumer_sees(outages: list[Outage], consumer_s: float, end: float) -> list[Outage]:
    """Each outage lasts ``consumer_s`` longer for the consumer (its first good answer comes
    after the manager's serving instant), up to ``end``; outages that then overlap are one."""
    out: list[Outage] = []
    for o in sorted(outages, key=lambda o: (o.vnf, o.start)):
        stretched = replace(o, end=min(end, o.end + consumer_s))
        prev = out[-1] if out else None
        if prev is not None and prev.vnf == o.vnf and o.start <= prev.end:
            out[-1] = replace(prev, end=max(prev.end, stretched.end))
        else:
            out.append(stretched)
    return out


# --- the prediction -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindStats:
    count: int
    median_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, durations_ms: list[float]) -> KindStats:
        return cls(
            len(durations_ms),
            stats.percentile(durations_ms, 0.5),
            stats.percentile(durations_ms, 0.95),
            max(durations_ms),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "median_ms": round(self.median_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "max_ms": round(self.max_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class ServicePrediction:
    vnf: str
    service: str
    model: str
    availability: Estimate
    downtime_min: Estimate  # per year
    outages_per_year: Estimate
    by_kind: dict[str, KindStats]
    closed: ClosedForm | None

    @property
    def nines(self) -> Estimate:
        a = self.availability
        return Estimate(nines(a.mean), nines(a.low), nines(min(a.high, 1.0)))

    @property
    def unavailability_rel_ci(self) -> float | None:
        """Half-width of the 95 % interval relative to the unavailability (None if none)."""
        u = 1.0 - self.availability.mean
        if u <= 0 or math.isnan(self.availability.high):
            return None
        return (self.availability.high - self.availability.mean) / u

    @property
    def closed_inside(self) -> bool | None:
        return None if self.closed is None else self.availability.contains(self.closed.availability)

    def to_json(self) -> dict[str, Any]:
        return {
            "vnf": self.vnf,
            "service": self.service,
            "model": self.model,
            "availability": self.availability.to_json(),
            "unavailability_rel_ci95": None
            if self.unavailability_rel_ci is None
            else round(self.unavailability_rel_ci, 4),
            "nines": self.nines.to_json(4),
            "downtime_min_per_year": self.downtime_min.to_json(4),
            "outages_per_year": self.outages_per_year.to_json(4),
            "outages_by_kind": {k: s.to_json() for k, s in self.by_kind.items()},
            "closed_form": None
            if self.closed is None
            else {**self.closed.to_json(), "inside_ci95": self.closed_inside},
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    deployment: str
    runs: int
    years: float
    seed: int
    latencies: Latencies
    reliability: Reliability
    services: list[ServicePrediction]
    faults: int
    events: int
    precision: float | None = None  # the relative CI on unavailability asked for, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "runs": self.runs,
            "precision": self.precision,
            "years": self.years,
            "seed": self.seed,
            "reliability": self.reliability.model_dump(exclude_none=True),
            "repair_s": {k: getattr(self.latencies, LATENCY_OF[k]) for k in KINDS},
            "faults": self.faults,
            "events": self.events,
            "services": [s.to_json() for s in self.services],
        }


def predict(
    deployment: Deployment,
    runs: int | None = None,
    years: float = 1.0,
    seed: int = 1,
    precision: float = PRECISION,
    max_runs: int = MAX_RUNS,
) -> Prediction:
    """R runs (seeds seed .. seed + R - 1) of ``years`` each; per service the mean availability,
    downtime and outage rate with 95 % confidence intervals from the run-to-run spread, the
    outage durations per failure kind (all runs pooled) and, where it applies, the closed form.
    Without ``runs``: as many runs as it takes for every service's unavailability to be known
    within +-``precision`` (relative, 95 %), at least ``MIN_RUNS``, at most ``max_runs``."""
    rel = _check(deployment, runs, years)
    lat = latencies_for(rel)
    done: list[PredictionRun] = []
    want = runs or MIN_RUNS
    while len(done) < want:
        start = seed + len(done)
        done += [simulate_run(deployment, s, years, lat) for s in range(start, seed + want)]
        if runs is None:
            want = min(max_runs, _runs_for(done, deployment, precision))
    services = [_service(deployment, vnf, done, years, lat) for vnf in deployment.vnfs]
    return Prediction(
        deployment.name,
        len(done),
        years,
        seed,
        lat,
        rel,
        services,
        sum(r.faults for r in done),
        sum(r.events for r in done),
        precision if runs is None else None,
    )


def _check(deployment: Deployment, runs: int | None, years: float) -> Reliability:
    rel = deployment.reliability
    if rel is None:
        raise PredictError(
            "the deployment has no 'reliability' section: give mtbf_h (and mttr_h) for vnfc, "
            "vm or host"
        )
    if all(getattr(rel, kind) is None for kind in KINDS):
        raise PredictError("'reliability' gives no MTBF: set vnfc, vm or host")
    if runs is not None and runs < 2:
        raise PredictError("a confidence interval needs at least 2 runs")
    if years <= 0:
        raise PredictError("years must be positive")
    return rel


def _runs_for(done: list[PredictionRun], deployment: Deployment, precision: float) -> int:
    """Runs needed for a relative half-width ``precision`` on every service's unavailability:
    the half-width shrinks as 1/sqrt(R), so R (h / precision)^2 with h the current relative
    half-width; at least 10 more while short of it. No outage seen yet: double the runs."""
    need = len(done)
    for vnf in deployment.vnfs:
        u = Estimate.of([1.0 - r.availability(vnf.name) for r in done])
        if u.mean <= 0 or math.isnan(u.high):
            need = max(need, 2 * len(done))
            continue
        rel_half = (u.high - u.mean) / u.mean
        if rel_half > precision:
            need = max(need, len(done) + 10, math.ceil(len(done) * (rel_half / precision) ** 2))
    return need


def _service(
    deployment: Deployment, vnf: Any, done: list[PredictionRun], years: float, lat: Latencies
) -> ServicePrediction:
    avail = [r.availability(vnf.name) for r in done]
    counts = [sum(o.vnf == vnf.name for o in r.outages) / years for r in done]
    kinds: dict[str, list[float]] = {}
    for r in done:
        for o in r.outages:
            if o.vnf == vnf.name:
                kinds.setdefault(o.kind, []).append(o.ms)
    return ServicePrediction(
        vnf.name,
        vnf.service.name,
        vnf.redundancy.model,
        Estimate.of(avail),
        Estimate.of([downtime_min_per_year(a) for a in avail]),
        Estimate.of(counts),
        {k: KindStats.of(v) for k, v in sorted(kinds.items())},
        closed_form(deployment, vnf.name, lat),
    )
