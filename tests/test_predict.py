"""nfvha predict: the Monte Carlo agrees with the closed-form Markov results, the arithmetic of
nines and downtime, the outage distribution per failure kind, and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha import config
from nfvha.config import Deployment
from nfvha.sim import predict as pr
from nfvha.sim.world import DEFAULT_LATENCIES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NFVHA = Path(sys.executable).parent / "nfvha"


def example(name: str, **reliability: Any) -> Deployment:
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    if reliability:
        raw["reliability"] = reliability
    if "vm" in reliability or "host" in reliability:
        raw["hosts"] = [{"name": "host-1"}, {"name": "host-2"}]
    return Deployment.model_validate(raw)


# --- the Monte Carlo against the closed form ------------------------------------------------------


@pytest.mark.parametrize("name", ["predict-single.yaml", "predict-2n.yaml"])
def test_shipped_examples_agree_with_the_closed_form(name: str) -> None:
    """Repairs of 30 min every 20 h: double failures dominate the 2n downtime."""
    result = pr.predict(example(name), runs=20, years=1.0, seed=1)
    (s,) = result.services
    assert s.closed is not None
    assert s.closed_inside, (s.availability, s.closed.availability)
    assert s.outages_per_year.mean > 400
    # tight: the interval is a small part of the unavailability
    assert s.availability.high - s.availability.low < 0.3 * (1 - s.availability.mean)


@pytest.mark.parametrize("model", ["none", "2n"])
def test_failover_and_hang_detection_terms_agree(model: str) -> None:
    """Measured start-up (no MTTR), half the failures hangs: for 2n the downtime is all
    failovers (lambda * f with f = d + cleanup + assign), for none all restarts."""
    name = "predict-2n.yaml" if model == "2n" else "predict-single.yaml"
    dep = example(name, vnfc={"mtbf_h": 1.0, "hang_fraction": 0.5})
    result = pr.predict(dep, runs=20, years=0.05, seed=7)
    (s,) = result.services
    assert s.closed is not None and s.closed_inside, (s.availability, s.closed.availability)
    crash, hang = s.by_kind["vnfc-crash"], s.by_kind["vnfc-hang"]
    lat, hc = DEFAULT_LATENCIES, dep.vnfs[0].policies.health_check
    detect_hang = hc.failure_threshold * hc.interval_ms / 1000
    if model == "2n":
        assert crash.median_ms == pytest.approx(1000 * pr.failover_s(lat, lat.exit_seen), abs=0.01)
        assert hang.median_ms == pytest.approx(1000 * pr.failover_s(lat, detect_hang), abs=0.01)
    else:
        # the consumer sees each restart CONSUMER_S after the manager's serving instant
        restart_crash = pr.repair_s(lat, lat.exit_seen) + pr.CONSUMER_S
        restart_hang = pr.repair_s(lat, detect_hang) + pr.CONSUMER_S
        assert crash.median_ms == pytest.approx(1000 * restart_crash, abs=0.01)
        assert hang.median_ms == pytest.approx(1000 * restart_hang, abs=0.01)
    assert crash.count > 100 and hang.count > 100
    assert crash.median_ms <= crash.p95_ms <= crash.max_ms


def test_vm_and_host_failures_are_simulated_without_a_closed_form() -> None:
    dep = example(
        "predict-2n.yaml",
        vnfc={"mtbf_h": 5, "mttr_h": 0.05},
        vm={"mtbf_h": 5, "mttr_h": 0.02, "hang_fraction": 0.5},
        host={"mtbf_h": 10, "mttr_h": 0.1},
    )
    result = pr.predict(dep, runs=3, years=0.02, seed=3)
    (s,) = result.services
    assert s.closed is None and s.closed_inside is None
    assert {"vnfc-crash", "vm-crash", "vm-hang", "host-crash"} <= set(s.by_kind)
    assert 0.9 < s.availability.mean < 1.0
    assert result.latencies.vm_boot == pytest.approx(72.0)
    assert result.latencies.host_boot == pytest.approx(360.0)


def test_same_seed_same_prediction() -> None:
    dep = example("predict-2n.yaml", vnfc={"mtbf_h": 2, "mttr_h": 0.1})
    first = pr.predict(dep, runs=3, years=0.01, seed=5).to_json()
    assert first == pr.predict(dep, runs=3, years=0.01, seed=5).to_json()
    assert first != pr.predict(dep, runs=3, years=0.01, seed=6).to_json()


def test_failure_schedule_is_a_poisson_process_per_kind() -> None:
    import random

    rel = config.Reliability.model_validate({"vnfc": {"mtbf_h": 1.0, "hang_fraction": 0.25}})
    entities = {"vnfc": ["a", "b"], "vm": ["x"], "host": ["h"], "vnf": []}
    faults = pr.failure_schedule(random.Random(1), entities, rel, 10.0, 1000 * pr.HOUR_S)
    assert all(10.0 <= f.at < 10.0 + 1000 * pr.HOUR_S for f in faults)
    assert {f.target for f in faults} == {"a", "b"}
    assert len(faults) == pytest.approx(2000, rel=0.1)  # 2 VNFCs x 1000 h / 1 h
    hangs = sum(f.kind == "vnfc-hang" for f in faults) / len(faults)
    assert hangs == pytest.approx(0.25, abs=0.03)


# --- arithmetic -----------------------------------------------------------------------------------


def test_nines_and_downtime() -> None:
    assert pr.nines(0.999) == pytest.approx(3.0)
    assert pr.nines(0.99999) == pytest.approx(5.0)
    assert pr.nines(1.0) == math.inf
    assert pr.downtime_min_per_year(0.999) == pytest.approx(525.6)
    assert pr.downtime_min_per_year(0.99999) == pytest.approx(5.256)


def test_confidence_interval_uses_the_exact_t_quantile() -> None:
    est = pr.Estimate.of([1.0, 2.0, 3.0])
    assert est.mean == 2.0
    assert est.high - est.mean == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    assert pr.t95(20) == pytest.approx(2.093, abs=5e-4)
    assert pr.t95(30) == pytest.approx(2.045, abs=5e-4)  # not 1.96: df = 29
    assert pr.t95(1000) == pytest.approx(1.962, abs=5e-4)
    assert est.contains(2.5) and not est.contains(5.0)


def test_by_default_runs_until_the_unavailability_is_known_within_5_percent() -> None:
    dep = example("predict-single.yaml", vnfc={"mtbf_h": 2, "mttr_h": 0.05})
    result = pr.predict(dep, years=0.05, seed=1)
    (s,) = result.services
    assert result.precision == 0.05 and result.runs >= pr.MIN_RUNS
    assert s.unavailability_rel_ci is not None and s.unavailability_rel_ci <= 0.05


def test_closed_forms() -> None:
    mtbf, r = 100.0, 1.0
    u1 = r / (mtbf + r)
    assert pr.availability_none(mtbf, r, consumer=0.0) == pytest.approx(1 - u1)
    # the consumer sees each outage c longer
    assert pr.availability_none(mtbf, r, consumer=0.1) == pytest.approx(1 - 1.1 / (mtbf + r))
    # without failover time, 2n is down only when both VNFCs are: independent, U = U1^2
    assert pr.availability_2n(mtbf, r, 0.0, consumer=0.0) == pytest.approx(1 - u1**2)
    f = 0.01
    expected = 1 - (u1**2 + (1 - u1) ** 2 * f / mtbf)
    assert pr.availability_2n(mtbf, r, f, consumer=0.0) == pytest.approx(expected)
    # ... and c after each return from both down (rate 2 pi0 / r)
    with_c = 1 - (u1**2 * (1 + 2 * 0.1 / r) + (1 - u1) ** 2 * f / mtbf)
    assert pr.availability_2n(mtbf, r, f, consumer=0.1) == pytest.approx(with_c)


def test_closed_form_applies_only_to_vnfc_failures_of_none_and_2n() -> None:
    lat = DEFAULT_LATENCIES
    two_n = example("predict-2n.yaml")
    assert pr.closed_form(two_n, "counter", lat) is not None
    with_vm = example("predict-2n.yaml", vnfc={"mtbf_h": 5}, vm={"mtbf_h": 5})
    assert pr.closed_form(with_vm, "counter", lat) is None
    stateless = yaml.safe_load((EXAMPLES / "counter-stateless.yaml").read_text())
    stateless["reliability"] = {"vnfc": {"mtbf_h": 5}}
    n_plus_m = Deployment.model_validate(stateless)
    assert pr.closed_form(n_plus_m, "counter", lat) is None


def test_mttr_replaces_the_start_up_and_the_start_deadline_follows() -> None:
    dep = example("predict-single.yaml")
    lat = pr.latencies_for(dep.reliability)
    assert lat.spawn == pytest.approx(1800.0)
    assert lat.vm_boot == DEFAULT_LATENCIES.vm_boot
    assert pr.prepared(dep, lat).vnfs[0].policies.start_timeout_s > lat.spawn


# --- configuration --------------------------------------------------------------------------------


def test_reliability_kinds_are_optional(tmp_path: Path) -> None:
    text = (EXAMPLES / "counter-2n.yaml").read_text() + "reliability:\n  vm: {mtbf_h: 100}\n"
    (tmp_path / "d.yaml").write_text(text + "hosts: [{name: h1}, {name: h2}]\n")
    dep, _ = config.load(tmp_path / "d.yaml")
    assert dep.reliability is not None
    assert dep.reliability.vnfc is None and dep.reliability.vm.mttr_h is None


def test_vm_reliability_without_hosts_is_refused(tmp_path: Path) -> None:
    """Without hosts the runtime runs plain processes: no VM could fail, so none is invented."""
    text = (EXAMPLES / "counter-2n.yaml").read_text() + "reliability:\n  vm: {mtbf_h: 100}\n"
    (tmp_path / "d.yaml").write_text(text)
    with pytest.raises(config.ConfigError, match="needs 'hosts'"):
        config.load(tmp_path / "d.yaml")


@pytest.mark.parametrize(
    ("reliability", "where"),
    [
        ({"vnfc": {"mtbf_h": 0}}, "reliability.vnfc.mtbf_h"),
        ({"vm": {"mtbf_h": 10, "mttr_h": -1}}, "reliability.vm.mttr_h"),
        ({"vnfc": {"mtbf_h": 10, "hang_fraction": 1.5}}, "reliability.vnfc.hang_fraction"),
        ({"host": {"mtbf_h": 10, "hang_fraction": 0.5}}, "reliability.host.hang_fraction"),
        ({"switch": {"mtbf_h": 10}}, "reliability.switch"),
    ],
)
def test_bad_reliability_names_the_path(tmp_path: Path, reliability: dict, where: str) -> None:
    raw = yaml.safe_load((EXAMPLES / "counter-2n.yaml").read_text())
    raw["reliability"] = reliability
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(config.ConfigError, match=f": {where}: "):
        config.load(tmp_path / "d.yaml")


def test_without_reliability_it_refuses() -> None:
    with pytest.raises(pr.PredictError, match="no 'reliability'"):
        pr.predict(example("counter-2n.yaml"))
    with pytest.raises(pr.PredictError, match="no MTBF"):
        pr.predict(example("counter-2n.yaml", vm=None))


# --- the command line -----------------------------------------------------------------------------


def nfvha(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NFVHA), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_cli_json() -> None:
    done = nfvha("predict", "examples/predict-2n.yaml", "--runs", "4", "--years", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["runs"] == 4 and out["years"] == 0.2 and out["seed"] == 1
    (s,) = out["services"]
    assert s["service"] == "count" and s["model"] == "2n"
    assert s["availability"]["ci95"][0] <= s["availability"]["mean"] <= s["availability"]["ci95"][1]
    assert s["downtime_min_per_year"]["mean"] > 0
    assert s["outages_by_kind"]["vnfc-crash"]["count"] > 0
    assert s["closed_form"]["model"] == "2n"
    assert isinstance(s["closed_form"]["inside_ci95"], bool)


def test_cli_text() -> None:
    done = nfvha("predict", "examples/predict-single.yaml", "--runs", "3", "--years", "0.1")
    assert done.returncode == 0, done.stderr
    assert "availability" in done.stdout and "closed form" in done.stdout
    assert "vnfc-crash" in done.stdout


def test_cli_without_reliability_exits_2() -> None:
    done = nfvha("predict", "examples/counter-2n.yaml")
    assert done.returncode == 2
    assert "reliability" in done.stderr


def test_cli_bad_reliability_exits_2_naming_the_path(tmp_path: Path) -> None:
    text = (EXAMPLES / "predict-2n.yaml").read_text().replace("mtbf_h: 20 ", "mtbf_h: -1 ")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = nfvha("predict", str(path))
    assert done.returncode == 2
    assert "reliability.vnfc.mtbf_h" in done.stderr
