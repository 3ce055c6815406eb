"""Use cases 1, 3, 5: the active of each redundancy model fails (killed, or hung) under a
consumer's load; the service comes back, nothing acknowledged is lost, there are never two
actives, and the trace shows isolate-before-failover and recover-before-repair."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nfvha.lab.experiment import Experiment, run_faults
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    example,
    free_udp_port,
    unique_name,
)
from tests.integration.support.trace import (
    assert_twin_agrees,
    dump_records,
    index,
    max_simultaneous_actives,
    select,
)

MODELS = ["2n", "n+m", "none"]
HANG_HEALTH = {"interval_ms": 150, "timeout_ms": 150, "failure_threshold": 2}


def experiment(model: str, fault: str, tmp_path: Path, health: dict) -> Experiment:
    """One fault on the example's active under the probe; the simulated twin of the run must
    say the same things on every channel (tests/integration/support/trace.py)."""
    dep = example(model, name=unique_name(), port=free_udp_port(), health=health)
    exp = asyncio.run(
        run_faults(
            dep,
            tmp_path,
            faults=1,
            fault=fault,
            interval_ms=2.0,
            spacing_s=1.5,
            lead_s=0.3,
            state_dir=tmp_path / "state",
        )
    )
    assert_twin_agrees(dep, list(exp.records), exp.faults[0].target, dump_records(exp.records))
    return exp


def check_recovery(exp: Experiment, model: str) -> dict[str, int]:
    """What every failure of an active must look like, whatever detected it. Returns the indices
    of the landmarks in the trace."""
    recs = exp.records
    outcome = exp.faults[0]
    target = outcome.target
    context = f"\nprobe: {exp.probe}\ntrace:\n{dump_records(recs)}"

    fault = index(recs, kind="fault", dst=target)
    detected = index(recs, fault, kind="event", src=target, why_has="isolating")
    cleanup = index(recs, fault, kind="command", name="Cleanup", dst=target)
    isolated = index(recs, fault, kind="event", name="CleanupDone", src=target)
    assert recs[isolated]["data"]["ok"] is True, context
    assign = index(recs, fault, kind="command", name="AssignRole", role="active")
    successor = recs[assign]["dst"]
    epoch = recs[assign]["data"]["epoch"]
    confirmed = index(
        recs, assign, kind="event", name="RoleConfirmed", src=successor, role="active", epoch=epoch
    )
    restart = index(recs, fault, kind="command", name="StartVnfc", dst=target)
    reported = index(recs, fault, kind="message", name="ReportError", dst="vnfm")
    cleared = index(recs, reported, kind="message", name="ClearError", dst="vnfm")

    # Rule 1: isolate before failover.
    assert detected <= cleanup < isolated < assign, context
    # Rule 2: never two actives, at any point of the whole run.
    assert max_simultaneous_actives(recs) == 1, context
    if model == "none":
        # No redundancy: the successor is the failed VNFC itself, restarted after isolation.
        assert successor == target, context
        assert isolated < restart < assign, context
    else:
        assert successor != target, context
        # Rule 3: recover first (successor confirms active), repair after (restart the failed).
        assert confirmed < restart, context
    # Rule 4: the VNFM hears of the outage after the failure, and of the end of it after the
    # new active has confirmed.
    assert fault < reported < assign, context
    assert recs[reported]["data"]["vnfc"] == target, context
    assert confirmed < cleared, context
    assert recs[cleared]["data"]["vnfc"] == successor, context

    # The consumer's view: service back, answered by the new active, never by two at a time.
    probe = exp.probe
    assert outcome.answered, f"no answer after the fault{context}"
    assert not probe["interleaved"], context
    answerers = [r["vnfc"] for r in probe["runs"]]
    if model == "none":
        assert answerers == [target], context
    else:
        assert answerers == [target, successor], context
    if model != "n+m":  # n+m is stateless: its totals are always 0
        assert probe["lost"] == 0 and outcome.lost == 0, context
        assert probe["max_total"] > 0, context
    return {
        "fault": fault,
        "detected": detected,
        "cleanup": cleanup,
        "isolated": isolated,
        "assign": assign,
        "confirmed": confirmed,
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", MODELS)
def test_kill_active(model: str, tmp_path: Path) -> None:
    exp = experiment(model, "vnfc-crash", tmp_path, RELAXED_HEALTH)
    recs, target = exp.records, exp.faults[0].target
    marks = check_recovery(exp, model)
    # A crash is seen through the process exit, and a dead process gets no grace period.
    detected = recs[marks["detected"]]
    assert detected["name"] == "ProcessExited", dump_records(recs)
    assert "SIGKILL" in detected["data"]["status"]
    assert recs[marks["cleanup"]]["data"]["grace_s"] == 0
    window = recs[marks["fault"] : marks["isolated"]]
    assert not select(window, name="HealthCheckFailed", src=target), dump_records(recs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", MODELS)
def test_hang_active(model: str, tmp_path: Path) -> None:
    exp = experiment(model, "vnfc-hang", tmp_path, HANG_HEALTH)
    recs, target = exp.records, exp.faults[0].target
    marks = check_recovery(exp, model)
    context = dump_records(recs)
    # A hung process does not exit: only the health check can tell, after `threshold` misses
    # in a row.
    detected = recs[marks["detected"]]
    assert detected["name"] == "HealthCheckFailed", context
    threshold = HANG_HEALTH["failure_threshold"]
    assert f"{threshold} health checks missed in a row" in detected["why"], context
    streak = 0
    for rec in reversed(recs[: marks["detected"] + 1]):
        if rec.get("src") == target and rec["name"] == "HealthCheckFailed":
            streak += 1
        elif rec.get("src") == target and rec["name"] == "HealthCheckPassed":
            break
    assert streak == threshold, context
    window = recs[marks["fault"] : marks["cleanup"]]
    assert not select(window, name="ProcessExited", src=target), context
    # It exits only once isolation killed it, and that exit changes nothing.
    exited = index(recs, marks["cleanup"], kind="event", name="ProcessExited", src=target)
    assert exited < marks["isolated"], context
    assert "SIGKILL" in recs[exited]["data"]["status"], context
