"""The use cases UC1-UC9 as the scenario runner runs them: the deployment, the fault under the
1 ms probe, the trace against the expected message chains. Each scenario runs with a name and a
port of its own (the shipped files use uc1..uc9 and 7721-7729), and leaves no process and no
cgroup behind. Also the CLI: `nfvha scenario list`, `run --json --report`, an unknown name.

The chains are checked twice: by the runner's own verdict, and here, independently, from the
trace (so a matcher that accepts anything would not pass)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from nfvha.core.placement import plan
from nfvha.lab import scenario as sc
from tests.integration.support.cgroups import cgroup_v2_writable, leftover_cgroups
from tests.integration.support.deployments import unique_scenario
from tests.integration.support.processes import reap_zombie_children
from tests.integration.support.runs import cli
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
    # The use cases first, in order; then the others (test_service_scenarios.py).
    assert sc.names()[: len(SCENARIOS)] == SCENARIOS
    assert not any(n.startswith("uc") for n in sc.names()[len(SCENARIOS) :])
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


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_scenario_list() -> None:
    done = cli("scenario", "list")
    assert done.returncode == 0, done.stderr
    # One entry per scenario (rich may wrap an entry's tail onto a line of its own).
    lines = [line for line in done.stdout.splitlines() if re.match(r"uc\d+ ", line)]
    assert [line.split()[0] for line in lines] == SCENARIOS, done.stdout
    for line, name in zip(lines, SCENARIOS, strict=True):
        assert f"{name.upper()}:" in line, line


def test_cli_scenario_run_unknown_name() -> None:
    done = cli("scenario", "run", "nope")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no scenario 'nope'" in done.stderr, done.stderr
    assert "uc1" in done.stderr  # it says which ones exist
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


def svg_root(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()  # valid XML, or this raises
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), (path, root.tag)
    return root


@needs_cgroups
@pytest.mark.timeout(90)
def test_cli_scenario_run_json_report(
    tmp_path: Path, runtime_dir: Path, cgroups_gone: list[str]
) -> None:
    # uc1 as a file of its own (same stem, so the same scenario name), with a unique deployment
    # name and port: the CLI takes a scenario file as well as a shipped name.
    scenario = unique_scenario("uc1")
    cgroups_gone.append(scenario.deployment.name)
    path = tmp_path / "uc1.yaml"
    path.write_text(yaml.safe_dump(scenario.model_dump(), sort_keys=False))
    report = tmp_path / "report"
    env = {**os.environ, "NFVHA_RUNTIME_DIR": str(runtime_dir)}
    done = cli("scenario", "run", str(path), "--json", "--report", str(report), env=env)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stdout, done.stdout

    result = json.loads(done.stdout)
    context = f"\n{json.dumps(result, indent=1)}\nstderr:\n{done.stderr}"
    assert result["scenario"] == "uc1", context
    assert result["title"] == scenario.title, context
    assert result["bindings"]["failed"] != result["bindings"]["successor"], context
    verdict = result["verdict"]
    assert verdict["sequence_matches"] is True, context
    assert verdict["lost_acknowledged"] == 0, context
    assert verdict["two_actives_seen"] is False, context
    assert all(c["ok"] for c in result["chains"]), context
    assert result["forbidden_seen"] == [], context
    # The exit code is the verdict (the sub-second target is part of it: not asserted here).
    assert (done.returncode == 0) is verdict["pass"], context

    assert sorted(p.name for p in report.iterdir()) == [
        "outage.svg",
        "result.json",
        "sequence.svg",
        "trace.jsonl",
    ]
    records = [json.loads(line) for line in (report / "trace.jsonl").read_text().splitlines()]
    assert records, "empty trace.jsonl"
    assert all({"t", "kind", "name"} <= set(r) for r in records)
    assert [r["t"] for r in records] == sorted(r["t"] for r in records)
    fault = index(records, kind="fault", name="vnfc-crash", dst=result["bindings"]["failed"])
    index(
        records,
        fault,
        kind="command",
        name="AssignRole",
        dst=result["bindings"]["successor"],
        role="active",
    )
    index(records, kind="note", name="DeploymentStopped")
    svg_root(report / "sequence.svg")
    svg_root(report / "outage.svg")
    assert json.loads((report / "result.json").read_text()) == result
