"""The use cases UC1-UC9 as the scenario runner runs them: the deployment, the fault under the
1 ms probe, the trace against the expected message chains. Each scenario runs with a name and a
port of its own (the shipped files use uc1..uc9 and 7721-7729), and leaves no process and no
cgroup behind. Also the CLI: `nfvha scenario list`, `run --json --report`, an unknown name.

The chains are checked twice: by the runner's own verdict, and here, independently, from the
trace (so a matcher that accepts anything would not pass)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from nfvha.core.placement import plan
from nfvha.lab import scenario as sc
from tests.integration.support.cgroups import cgroup_v2_writable, leftover_cgroups
from tests.integration.support.deployments import unique_scenario
from tests.integration.support.processes import reap_zombie_children
from tests.integration.support.trace import (
    assert_twin_agrees,
    dump_records,
    index,
    match_steps,
    max_simultaneous_live_actives,
    select,
)

# Only the tests that run a scenario need it: listing and name checks run anywhere.
needs_cgroups = pytest.mark.skipif(
    not cgroup_v2_writable(), reason="scenarios declare hosts: the NFVI needs a cgroup v2 tree"
)

SCENARIOS = [f"uc{i}" for i in range(1, 10)]
STATEFUL = {"uc1", "uc2", "uc3", "uc4"}  # the counter keeps a total: lost updates are visible


@pytest.fixture
def cgroups_gone(runtime_dir: Path):
    """Deployments the test ran; afterwards none may have left its cgroup directory. Zombies
    the in-process engine left to this process are reaped (see test_nfvi.py, zombies)."""
    names: list[str] = []
    yield names
    reap_zombie_children()
    left = leftover_cgroups(names)
    if left:
        pytest.fail(f"cgroup directories left behind (removed now): {left}")


def test_shipped_scenarios_are_uc1_to_uc9() -> None:
    assert sc.names() == SCENARIOS
    for name in SCENARIOS:
        scenario = sc.load(name)
        assert scenario.deployment.hosts, f"{name} runs without an NFVI"
        assert scenario.title.startswith(f"{name.upper()}:"), scenario.title


@needs_cgroups
@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name: str, runtime_dir: Path, cgroups_gone: list[str]) -> None:
    scenario = unique_scenario(name)
    cgroups_gone.append(scenario.deployment.name)
    outcome = asyncio.run(sc.run(name, scenario, sc.directory()))
    exp = outcome.experiment
    records = exp.records
    context = (
        f"\nbindings {outcome.bindings}\nchains {json.dumps(outcome.chains, indent=1)}"
        f"\nprobe {exp.probe}\ntrace:\n{dump_records(records)}"
    )

    # Who was hit: the active, on its VM and host.
    bindings = outcome.bindings
    placement = plan(scenario.deployment)
    assert placement is not None
    assert bindings["vm"] == placement.vnfc_vm[bindings["failed"]], context
    assert bindings["host"] == placement.vm_host[bindings["vm"]], context
    faults = [r for r in records if r["kind"] == "fault"]
    assert len(faults) == scenario.fault.times, context
    target = bindings["vm"] if scenario.fault.kind.startswith("vm-") else bindings["failed"]
    assert all(f["name"] == scenario.fault.kind and f["dst"] == target for f in faults), context

    # The expected sequence: by the runner's verdict ...
    assert [c for c in outcome.chains if not c["ok"]] == [], context
    assert outcome.forbidden_seen == [], context
    assert outcome.matches, context
    # ... and independently, from the trace after the (first) fault.
    first = index(records, kind="fault")
    after = records[first:]
    for n, chain in enumerate(scenario.expect, 1):
        found = match_steps(after, chain, bindings)
        assert isinstance(found, list), f"chain {n}: {found}{context}"
    seen_forbidden = sorted({r["name"] for r in after if r["name"] in scenario.forbid})
    assert seen_forbidden == [], context

    # Nothing acknowledged is lost; never two actives (consumer's view and the trace's).
    verdict = outcome.verdict()
    assert verdict["sequence_matches"] is True, context
    assert exp.probe["lost"] == 0 and verdict["lost_acknowledged"] == 0, context
    assert all(f.lost == 0 for f in exp.faults), context
    assert exp.probe["interleaved"] is False and verdict["two_actives_seen"] is False, context
    assert max_simultaneous_live_actives(records, placement.vnfc_vm, placement.vm_host) == 1, (
        context
    )
    # The service answered after every fault (the probe saw it come back).
    assert all(f.answered for f in exp.faults), context
    if name in STATEFUL:
        assert exp.probe["max_total"] > 0, context  # so that "0 lost" says something

    if name == "uc9":
        # restart_max 2: failures 1 and 2 are repaired in place, failure 3 escalates.
        assert outcome.escalated_on == 3, context
        escalations = select(records, kind="message", name="Escalate")
        assert len(escalations) == 1, context
        assert escalations[0]["data"]["vnfc"] == bindings["failed"], context
        assert escalations[0]["data"]["failures"] == 3, context
        fault_at = [i for i, r in enumerate(records) if r["kind"] == "fault"]
        escalate = index(records, kind="message", name="Escalate")
        assert fault_at[2] < escalate, context
        between = records[fault_at[0] : fault_at[2]]
        assert not select(between, name="StartVm"), context  # no VM repair before failure 3
        assert len(select(between, kind="command", name="StartVnfc")) == 2, context
    else:
        assert outcome.escalated_on is None, context
        assert not select(records, kind="message", name="Escalate"), context

    # The simulator, given the same faults at the same moments on the same roles, says the
    # same things on every channel, step for step: it is the system that runs.
    assert_twin_agrees(scenario.deployment, list(records), bindings["failed"], context)
