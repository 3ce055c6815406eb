"""The manager dies in a deployment with hosts: the host and guest agents outlive it (as its
VNFCs do) and reconnect; the new manager adopts the agents that say hello again within
ADOPT_WAIT_S, removes and boots anew the hosts and VMs whose agent does not, then adopts the
VNFCs still running (``Dispatcher.adopt``, with the escalations the dead one recorded)."""

from __future__ import annotations

import pytest

from nfvha.config import Deployment
from nfvha.lab.scenario import load as load_scenario
from nfvha.sim import faults as fs
from nfvha.sim.runner import random_schedule, simulate
from nfvha.sim.world import ADOPT_WAIT_S
from tests.test_sim import after

CRASH = "manager-crash"


def deployment(name: str = "uc2", **policies) -> Deployment:
    raw = load_scenario(name).deployment.model_dump()
    for vnf in raw["vnfs"]:
        vnf["policies"].update(policies)
    return Deployment.model_validate(raw)


def test_a_manager_crash_with_hosts_adopts_every_agent_and_restarts_nothing() -> None:
    dep = deployment("uc2")
    outcome = simulate(dep, 1, [fs.Fault(2.0, CRASH, "manager")], settle=3.0)
    assert outcome.ok, outcome.violation
    sim, records = outcome.sim, outcome.sim.records
    (agents,) = after(records, 2.0, "AgentsAdopted")
    assert agents["data"]["booted"] == []
    assert set(agents["data"]["adopted"]) == set(sim.hosts) | set(sim.vms)
    assert agents["t"] < (2.0 + 0.1) * 1e9, "all back: no wait for ADOPT_WAIT_S"
    for kind in ("StartVnfc", "StartVm", "StartHost", "FenceHost", "CleanupVm", "Cleanup"):
        assert not after(records, 2.0, kind), f"{kind} after the crash"
    assert not after(records, 2.0, "AssignRole", role="active"), "the role did not move"
    kept = after(records, 2.0, "KeepRole", role="active")
    assert [r["dst"] for r in kept] == ["vnfc-1"]
    assert all(c.gen == 1 and c.alive for c in sim.vnfcs.values()), "each still its first life"
    assert all(vm.gen == 0 for vm in sim.vms.values()) and sim.lost == []


@pytest.mark.parametrize("name", ["uc2", "uc4", "uc6"])
@pytest.mark.parametrize("down", [0.0, 0.5, 1.5])
def test_no_running_vnfc_is_restarted_by_a_manager_crash(name: str, down: float) -> None:
    """Hot standby (the takeover), a restart within a lease, one after every lease expired:
    the VNFCs keep their processes (adopted, not restarted)."""
    dep = deployment(name)
    outcome = simulate(dep, 1, [fs.Fault(2.0, CRASH, "manager", down)], settle=4.0)
    assert outcome.ok, outcome.violation
    assert not after(outcome.sim.records, 2.0, "StartVnfc")
    assert all(c.gen == 1 and c.alive for c in outcome.sim.vnfcs.values())


def test_a_host_crash_while_no_manager_runs_is_repaired_by_the_next() -> None:
    """host-2 (vnfc-2's VM) dies while no manager runs: nobody sees it. Its agent does not come
    back: the new manager waits ADOPT_WAIT_S, boots host-2 and its VM anew, adopts vnfc-1 and
    starts vnfc-2 again. The wait and the boots (1.45 s) outlast the role lease (1 s): vnfc-1
    fences itself before it can resume, and is made active again (same process)."""
    dep = deployment("uc2")
    schedule = [fs.Fault(2.0, CRASH, "manager", 0.5), fs.Fault(2.1, "host-crash", "host-2")]
    outcome = simulate(dep, 1, schedule, settle=5.0)
    assert outcome.ok, outcome.violation
    sim, records = outcome.sim, outcome.sim.records
    assert not after(records, 2.1, "HostFailed"), "no manager: not seen; then booted anew"
    (agents,) = after(records, 2.0, "AgentsAdopted")
    assert agents["t"] == pytest.approx((2.5 + ADOPT_WAIT_S) * 1e9, abs=1e3)
    assert sorted(agents["data"]["booted"]) == ["host-2", "vm-vnfc-2"]
    (started,) = after(records, 2.0, "StartVnfc")
    assert started["dst"] == "vnfc-2"
    assert [r["src"] for r in after(records, 2.0, "LeaseExpired")] == ["vnfc-1"]
    (promoted,) = after(records, 2.0, "AssignRole", role="active")
    assert promoted["dst"] == "vnfc-1" and promoted["t"] >= agents["t"]
    assert sim.vnfcs["vnfc-1"].gen == 1 and sim.vnfcs["vnfc-1"].role == "active"
    assert sim.vnfcs["vnfc-2"].alive and sim.vnfcs["vnfc-2"].role == "standby"
    assert sim.hosts["host-2"].alive and sim.vms["vm-vnfc-2"].alive


def test_a_hung_vm_with_no_manager_is_removed_and_booted_anew() -> None:
    """The active's VM freezes while no manager runs: its guest agent cannot say hello, so
    its zone is removed (the active with it) and the VM booted anew; the standby is promoted."""
    dep = deployment("uc2")
    schedule = [fs.Fault(2.0, CRASH, "manager", 0.2), fs.Fault(2.05, "vm-hang", "vm-vnfc-1")]
    outcome = simulate(dep, 1, schedule, settle=5.0)
    assert outcome.ok, outcome.violation
    records = outcome.sim.records
    (agents,) = after(records, 2.0, "AgentsAdopted")
    assert agents["data"]["booted"] == ["vm-vnfc-1"]
    assert after(records, 2.0, "AssignRole", vnfc="vnfc-2", role="active")
    assert outcome.sim.vnfcs["vnfc-1"].alive


def hostless(name: str, **policies) -> Deployment:
    raw = deployment(name, **policies).model_dump(exclude_unset=True)
    raw.pop("hosts", None)
    return Deployment.model_validate(raw)


@pytest.mark.parametrize("dep", [hostless("uc2", restart_max=1)], ids=["uc2-hostless"])
def test_escalations_are_carried_over_to_the_new_manager(dep: Deployment) -> None:
    """vnfc-2 fails more often than restart_max (1) allows: escalated (no VM to repair). The
    manager dies; the new one adopts vnfc-1 and keeps vnfc-2 escalated: recorded as the
    runtime does, passed to Dispatcher.adopt, recorded again for the next manager."""
    schedule = [
        fs.Fault(1.0, "vnfc-crash", "vnfc-2"),
        fs.Fault(2.0, "vnfc-crash", "vnfc-2"),
        fs.Fault(3.0, CRASH, "manager"),
    ]
    outcome = simulate(dep, 1, schedule, settle=3.0)
    assert outcome.ok, outcome.violation
    records = outcome.sim.records
    assert after(records, 2.0, "Escalate", vnfc="vnfc-2")
    (adopted,) = after(records, 3.0, "ManagerAdopted")
    again = after(records, 3.0, "Escalate", vnfc="vnfc-2")
    assert again and again[0]["t"] == adopted["t"]
    assert not after(records, 3.0, "StartVnfc")
    assert outcome.sim.escalated == ["vnfc-2"], "recorded again for the next manager"


# --- fuzzing --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["uc2", "uc4", "uc6"])
def test_fuzz_with_hosts_and_manager_crashes_keeps_every_invariant(name: str) -> None:
    dep = deployment(name)
    crashes = 0
    for seed in range(1, 101):
        schedule = random_schedule(dep, seed, 30, 1.0)
        crashes += sum(f.kind == CRASH for f in schedule)
        outcome = simulate(dep, seed, schedule, record=False)
        assert outcome.violation is None, (seed, outcome.violation)
    assert crashes > 100


# --- found by fuzzing, fixed: news of a VM waits until the new manager has adopted ----------

GAP = [
    fs.Fault(2.273956, CRASH, "manager", 0.21),
    fs.Fault(2.387465, "vnfc-hang", "vnfc-2"),
    fs.Fault(2.554073, "vm-crash", "vm-vnfc-2"),
]


def test_a_vm_repaired_before_adoption_makes_no_second_active() -> None:
    outcome = simulate(deployment("uc2"), 43, GAP, settle=5.0)
    assert outcome.ok, outcome.violation


SECOND_CRASH = [
    fs.Fault(2.0, CRASH, "manager"),
    fs.Fault(2.001, "vm-hang", "vm-vnfc-2"),  # its agent will not come back: a 1 s wait
    fs.Fault(2.5, CRASH, "manager"),  # the new manager dies while it waits for the agents
]


def test_a_manager_that_dies_while_it_waits_for_the_agents_restarts_nothing() -> None:
    outcome = simulate(deployment("uc2"), 1, SECOND_CRASH, settle=5.0)
    assert outcome.ok, outcome.violation  # (it holds: the loss is of availability)
    assert outcome.sim.vnfcs["vnfc-1"].gen == 1, "vnfc-1 restarted"


# --- watchdog fencing: a cut host's guests fence themselves (core/watchdog.py) ---------------


def watchdog(name: str = "uc2", lease_ms: int = 1000) -> Deployment:
    raw = deployment(name).model_dump()
    raw["nfvi"].update(fencing="watchdog", agent_lease_ms=lease_ms)
    return Deployment.model_validate(raw)


def test_a_cut_host_fences_itself_before_it_counts_fenced_and_the_role_moves() -> None:
    dep = watchdog()
    outcome = simulate(dep, 1, [fs.Fault(2.0, "link-cut", "host-1", 5.0)], settle=4.0)
    assert outcome.ok, outcome.violation
    records = outcome.sim.records
    (fenced,) = after(records, 2.0, "SelfFenced")
    (isolated,) = after(records, 2.0, "HostFenced")  # the host is silent: the VIM fences it
    (moved,) = after(records, 2.0, "AssignRole", role="active")
    assert isolated["data"]["ok"]
    assert 2.0e9 + 1.0e9 <= fenced["t"] < isolated["t"] <= moved["t"]  # one lease after the cut
    assert records.index(isolated) < records.index(moved)
    assert moved["dst"] == "vnfc-2" and outcome.sim.lost == []


def test_a_cut_healed_within_the_lease_fences_nothing_and_moves_no_role() -> None:
    """Shorter than the heartbeat detection too: nobody noticed."""
    dep = watchdog()
    outcome = simulate(dep, 1, [fs.Fault(2.0, "link-cut", "host-1", 0.1)], settle=4.0)
    assert outcome.ok, outcome.violation
    assert not after(outcome.sim.records, 2.0, "SelfFenced")
    assert not after(outcome.sim.records, 2.0, "AssignRole", role="active")


@pytest.mark.parametrize("name", ["uc6"])
def test_fuzz_with_watchdog_fencing_keeps_every_invariant(name: str) -> None:
    dep = watchdog(name)
    cuts = 0
    for seed in range(1, 61):
        schedule = random_schedule(dep, seed, 30, 1.0)
        cuts += sum(f.kind == "link-cut" for f in schedule)
        outcome = simulate(dep, seed, schedule, record=False)
        assert outcome.violation is None, (seed, outcome.violation)
    assert cuts > 20


# --- found by fuzzing, open: a double fault within the lease (see the closing note) ----------

DOUBLE = [
    fs.Fault(25.46017, "link-cut", "host-2", 0.469),  # the standby's host cut off ...
    fs.Fault(25.607895, "host-crash", "host-1"),  # ... and the active's host lost within the lease
]


@pytest.mark.xfail(
    strict=True,
    reason="open: the restarted active is given the manager's lagging replica while the cut "
    "standby, which holds the newer acknowledged writes, waits for its watchdog; it fences "
    "itself later, so they are lost either way (a double fault), but the core should wait for "
    "its isolation before serving from an older copy",
)
def test_a_double_fault_within_the_lease_serves_no_older_state() -> None:
    outcome = simulate(watchdog("uc2"), 52, DOUBLE)
    assert outcome.violation is None, outcome.violation
