"""The service-access scenarios as the scenario runner runs them (section 3.1 of the seed): a
virtual IP that follows the active of a hot standby (network mode netns, the probe in the
consumers' namespace), and pools behind a load balancer that is itself HA (real HAProxy, the
probe through its frontend): a pooled VNFC killed (case 1), a pooled VM crashed (case 2), the
active HAProxy instance killed. Each runs once with a name and a port of its own and leaves no
process, cgroup or namespace behind.

Every part of the verdict is asserted except the sub-second target (a wall-clock figure): the
expected chains, no forbidden record, answers after the fault, no lost update, the answerer.
The chains are checked again here from the trace, independently of the runner's matcher."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from nfvha.config import lb_config_path
from nfvha.drivers import network
from nfvha.drivers.loadbalancer import HaproxyError, parse_servers_state, runtime_command
from nfvha.lab import scenario as sc
from nfvha.runtime.paths import runtime_dir as deployment_dir
from tests.integration.support.cgroups import cgroup_v2_writable
from tests.integration.support.trace import dump_records, index, match_steps
from tests.integration.test_daemons import daemon_path, free_tcp_port
from tests.integration.test_lb_pool import short_runtime  # noqa: F401  (a fixture)
from tests.integration.test_scenarios import cgroups_gone  # noqa: F401  (a fixture)

NETNS_OK, NETNS_WHY = network.available()
needs_netns = pytest.mark.skipif(
    not NETNS_OK, reason=f"network namespaces unavailable: {NETNS_WHY}"
)
needs_cgroups = pytest.mark.skipif(
    not cgroup_v2_writable(), reason="a scenario with hosts needs a cgroup v2 tree for the NFVI"
)

SERVICE_SCENARIOS = ["lb-ha", "lb-vm-pool", "lb-vnfc-pool", "vip-failover"]


def unique(name: str) -> sc.Scenario:
    """Scenario ``name`` with a deployment name and (on loopback) a service port of its own."""
    raw = sc.load(name).model_dump()
    dep = raw["deployment"]
    dep["name"] = f"{name}-{uuid.uuid4().hex[:6]}"
    if dep["network"]["mode"] == "loopback":  # netns: the port is in the nodes' namespaces
        dep["vnfs"][0]["service"]["address"] = f"127.0.0.1:{free_tcp_port()}"
    return sc.Scenario.model_validate(raw)


def run(name: str, cgroups: list[str], between: Any = None) -> tuple[sc.ScenarioOutcome, str]:
    scenario = unique(name)
    cgroups.append(scenario.deployment.name)
    outcome = asyncio.run(sc.run(name, scenario, sc.directory(), between=between))
    exp = outcome.experiment
    context = (
        f"\nbindings {outcome.bindings}\nchains {json.dumps(outcome.chains, indent=1)}"
        f"\nverdict {outcome.verdict()}\nprobe {exp.probe}\ntrace:\n{dump_records(exp.records)}"
    )
    print(f"{name}: outage {outcome.outage_ms:.1f} ms, probe errors {exp.probe['error_kinds']}")
    return outcome, context


def assert_passes(outcome: sc.ScenarioOutcome, context: str) -> None:
    """The verdict passes, but for the sub-second target; and the chains hold, read here."""
    v = outcome.verdict()
    assert v["sequence_matches"] and outcome.forbidden_seen == [], context
    assert v["answered_after_every_fault"] and v["lost_acknowledged"] == 0, context
    assert not v["two_actives_seen"], context
    assert v["pass"] is v["sub_second"], context  # nothing else fails it
    records = outcome.experiment.records
    after = records[index(records, kind="fault") :]
    for n, chain in enumerate(outcome.scenario.expect, 1):
        found = match_steps(after, chain, outcome.bindings)
        assert isinstance(found, list), f"chain {n}: {found}{context}"


def test_shipped_service_scenarios() -> None:
    assert [n for n in sc.names() if not n.startswith("uc")] == SERVICE_SCENARIOS
    hit = {n: sc.load(n).fault.vnf for n in SERVICE_SCENARIOS}
    assert hit == {
        "lb-ha": "web-lb",
        "lb-vm-pool": None,
        "lb-vnfc-pool": None,
        "vip-failover": None,
    }


def test_fault_vnf_must_exist() -> None:
    raw = sc.load("lb-ha").model_dump()
    raw["fault"]["vnf"] = "nope"
    with pytest.raises(ValueError, match="fault.vnf: no VNF 'nope' \\(known: web, web-lb\\)"):
        sc.Scenario.model_validate(raw)


@needs_netns
@pytest.mark.timeout(60)
def test_vip_failover(runtime_dir: Path, cgroups_gone: list[str]) -> None:  # noqa: F811
    outcome, context = run("vip-failover", cgroups_gone)
    assert_passes(outcome, context)
    # The probe sent from the consumers' namespace to the virtual IP, and after the failover
    # only the standby that took the address over answered.
    probe = outcome.experiment.probe
    assert probe["target"] == "udp://10.77.0.100:7710", context
    assert probe["netns"].endswith("-consumer"), context
    assert outcome.answerers == [outcome.bindings["successor"]], context
    assert outcome.verdict()["answered_by"]["seen"] == [outcome.bindings["successor"]], context
    assert network.namespaces_of(outcome.scenario.deployment.name) == [], "namespaces left"


@pytest.mark.timeout(60)
def test_lb_vnfc_pool(short_runtime: Path, cgroups_gone: list[str]) -> None:  # noqa: F811
    daemon_path("haproxy")  # skips, naming the package, when it is missing
    outcome, context = run("lb-vnfc-pool", cgroups_gone)
    assert_passes(outcome, context)
    probe = outcome.experiment.probe
    assert probe["kind"] == "http" and probe["netns"] == "", context
    # The frontend answered all along: both actives, then the survivor, then both again.
    assert outcome.bindings["failed"] in ("web-a", "web-b"), context


@needs_cgroups
@pytest.mark.timeout(60)
def test_lb_vm_pool(short_runtime: Path, cgroups_gone: list[str]) -> None:  # noqa: F811
    daemon_path("haproxy")
    outcome, context = run("lb-vm-pool", cgroups_gone)
    assert_passes(outcome, context)
    assert outcome.bindings["vm"] == f"vm-{outcome.bindings['failed']}", context


@pytest.mark.timeout(60)
def test_lb_ha(short_runtime: Path, cgroups_gone: list[str]) -> None:  # noqa: F811
    daemon_path("haproxy")
    pools: list[dict[str, dict[str, str]]] = []
    name: list[str] = []

    async def pool_of(vnfc: str) -> dict[str, str]:
        """An instance's pool from its admin socket; a restarted instance may answer its health
        check a moment before its admin socket: asked again until it answers."""
        sock = lb_config_path(deployment_dir(name[0]), vnfc).parent / "admin.sock"
        errors: list[str] = []
        for _ in range(50):
            try:
                answer = await runtime_command(sock, "show servers state pool", timeout=0.2)
                return {s.name: s.admin for s in parse_servers_state(answer)}
            except HaproxyError as exc:
                errors.append(str(exc))
                await asyncio.sleep(0.02)
        raise AssertionError(f"{vnfc}'s admin socket never answered: {errors[-3:]}")

    async def read_pools() -> None:
        """Once steady after the fault: both instances' pools."""
        pools.append({vnfc: await pool_of(vnfc) for vnfc in ("web-lb-a", "web-lb-b")})

    scenario = unique("lb-ha")
    name.append(scenario.deployment.name)
    cgroups_gone.append(scenario.deployment.name)
    outcome = asyncio.run(sc.run("lb-ha", scenario, sc.directory(), between=read_pools))
    exp = outcome.experiment
    context = f"\nverdict {outcome.verdict()}\npools {pools}\n{dump_records(exp.records)}"
    print(f"lb-ha: outage {outcome.outage_ms:.1f} ms, probe errors {exp.probe['error_kinds']}")
    assert_passes(outcome, context)
    assert outcome.bindings["failed"] in ("web-lb-a", "web-lb-b"), context
    # The restarted instance carries the same pool as the one that took over: the spare's
    # server in maintenance, the two actives' ready.
    want = {"web-a": "ready", "web-b": "ready", "web-c": "maint"}
    assert pools == [{"web-lb-a": want, "web-lb-b": want}], context
