"""The simulator: deterministic, and every invariant can fire (shown on broken policies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfvha.config import ConfigError, Deployment
from nfvha.config import load as load_deployment
from nfvha.core import checkpoint as ck
from nfvha.core import vim as v
from nfvha.core.dispatcher import ManagerClasses as Policies
from nfvha.core.ha import Decision, HAManager, Role
from nfvha.core.vim import Vim
from nfvha.core.vnfm import Vnfm
from nfvha.faults import SIMULATED
from nfvha.lab.scenario import load as load_scenario
from nfvha.sim import faults as fs
from nfvha.sim.runner import entities, fuzz, random_schedule, shrink, simulate

# The use cases' own fuzzing draws no manager crash: those with hosts are fuzzed apart (see
# "the manager dies with hosts"), with a known gap of the runtime's design.
NO_MANAGER_CRASH = tuple(k for k in SIMULATED if k != "manager-crash")

EXAMPLES = Path(__file__).parents[1] / "src" / "nfvha" / "examples"


def deployment(name: str = "uc2", sync: str | None = None, **policies) -> Deployment:
    raw = load_scenario(name).deployment.model_dump()
    for vnf in raw["vnfs"]:
        vnf["policies"].update(policies)
        if sync is not None:
            vnf["state_sync"] = sync
    return Deployment.model_validate(raw)


def hostless(name: str) -> Deployment:
    """A use case's VNFs as plain processes on the manager's machine: the topology in which
    the runtime adopts the VNFCs a dead manager left (so the one that takes manager crashes)."""
    raw = load_scenario(name).deployment.model_dump(exclude_unset=True)
    raw.pop("hosts", None)
    return Deployment.model_validate(raw)


def example(name: str) -> Deployment:
    return load_deployment(EXAMPLES / f"{name}.yaml")[0]


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_trace_byte_for_byte() -> None:
    dep = deployment()
    schedule = random_schedule(dep, 7, duration=40, mean_gap=1.0)
    first = simulate(dep, 7, schedule).sim.trace_text()
    second = simulate(dep, 7, random_schedule(dep, 7, duration=40, mean_gap=1.0)).sim.trace_text()
    assert first == second
    assert len(first.splitlines()) > 100


def test_another_seed_another_schedule() -> None:
    dep = deployment()
    assert random_schedule(dep, 1, 40, 1.0) != random_schedule(dep, 2, 40, 1.0)


# --- the real policies hold ---------------------------------------------------------------


@pytest.mark.parametrize("name", [f"uc{i}" for i in range(1, 10)])
def test_fuzz_every_use_case(name: str) -> None:
    runs, failed = fuzz(deployment(name), 40, duration=30, mean_gap=1.0, kinds=NO_MANAGER_CRASH)
    assert failed is None, failed.violation
    assert runs == 40


def test_a_late_answer_to_an_earlier_start_does_not_stop_the_current_one() -> None:
    """Found by the fuzzer (seed 1001): a start on a frozen VM times out after the VNFC was
    restarted twice since; the late StartFailed must not stop the running start."""
    schedule = [
        fs.Fault(14.754528, "vnfc-hang", "vnfc-1"),
        fs.Fault(14.797159, "vm-hang", "vm-vnfc-1"),
        fs.Fault(16.57203, "vnfc-hang", "vnfc-1"),
    ]
    outcome = simulate(deployment("uc2"), 1001, schedule)
    assert outcome.ok, outcome.violation


def test_a_vm_crash_while_its_host_is_cut_off_is_seen_by_heartbeat() -> None:
    """Found by the fuzzer (uc3, with the disk-full and port-taken faults in the mix): the
    guest's exit report was lost with the link, and the VNFC waited for a repair for ever."""
    schedule = [
        fs.Fault(19.762035, "link-cut", "host-1", 0.133),
        fs.Fault(19.785785, "vm-crash", "vm-vnfc-1"),
    ]
    outcome = simulate(deployment("uc3"), 1, schedule)
    assert outcome.ok, outcome.violation


def test_a_full_disk_refuses_writes_reports_and_clears() -> None:
    outcome = simulate(deployment("uc3"), 1, [fs.Fault(2.0, "disk-full", "counter", 1.0)])
    assert outcome.ok, outcome.violation
    names = [r["name"] for r in outcome.sim.records if r["kind"] == "event"]
    assert names.index("StoreFailed") < names.index("StoreRecovered")


def test_fuzz_a_few_hundred_seeds() -> None:
    runs, failed = fuzz(
        deployment("uc2"), 300, first_seed=1000, duration=20, mean_gap=0.7, kinds=NO_MANAGER_CRASH
    )
    assert failed is None, failed.violation


# --- each invariant fires on a policy broken for it ------------------------------------------


class FailoverOnSuspicion(HAManager):
    """Moves the role as soon as a failure is suspected, without waiting for the cleanup."""

    def _fail(self, c, reason, now, *, responsive):
        was_active = c.role is Role.ACTIVE
        decision = super()._fail(c, reason, now, responsive=responsive)
        if not was_active:
            return decision
        c.role = Role.NONE
        _, commands = self._failover(c)
        return Decision(decision.commands + tuple(commands), decision.why)


class TwoActivesAtStart(HAManager):
    def _role_for_newcomer(self) -> Role:
        return Role.ACTIVE


class AckWithoutKeeping(ck.CheckpointService):
    """Acknowledges writes it neither replicates nor keeps."""

    def write(self, vnfc, epoch, request, updates, version=None):
        if self.writer != (vnfc, epoch):
            return super().write(vnfc, epoch, request, updates, version)
        return [ck.Ack(vnfc, request)]


class EscalatesOneLate(HAManager):
    def __post_init__(self) -> None:
        super().__post_init__()
        for c in self.vnfcs.values():
            c.intensity.max_restarts += 1


class VnfmRestartsVms(Vnfm):
    """Restarts VMs itself: the VIM's job, outside a VNFM's scope."""

    def handle(self, event, now):
        decision = super().handle(event, now)
        if isinstance(event, v.NotifyVmFailed):
            extra = (v.StartVm(vm=event.vm, host=event.host, restore=False),)
            return Decision(decision.commands + extra, decision.why)
        return decision


class WaitsForASuccessorThatIsNotComing(HAManager):
    """The repair of a VNFC waits for the new active even when that one failed too."""

    def _revive_stranded(self, besides):
        return [], ""


class VimThatNeverRepairs(Vim):
    def _maybe_restart(self, vm, text):
        return Decision((), f"{text}; not repairing it")


def crash(at: float, kind: str, target: str) -> fs.Fault:
    return fs.Fault(at, kind, target)


@pytest.mark.parametrize(
    ("invariant", "policies", "schedule", "extra"),
    [
        (
            "isolation-before-failover",
            Policies(ha=FailoverOnSuspicion),
            [crash(1.0, "vnfc-hang", "vnfc-1")],
            {},
        ),
        ("two-actives", Policies(ha=TwoActivesAtStart), [], {}),
        (
            "acknowledged-state",
            Policies(checkpoints=AckWithoutKeeping),
            [crash(1.0, "vnfc-crash", "vnfc-1"), crash(1.0, "vnfc-crash", "vnfc-2")],
            {"sync": "manager"},  # the broken service in the path of every write
        ),
        (
            "escalation",
            Policies(ha=EscalatesOneLate),
            [crash(1.0 + i, "vnfc-crash", n) for i in range(4) for n in ("vnfc-1", "vnfc-2")],
            {"restart_max": 2},
        ),
        ("scope", Policies(vnfm=VnfmRestartsVms), [crash(1.0, "vm-crash", "vm-vnfc-1")], {}),
        (
            "stranded",
            Policies(ha=WaitsForASuccessorThatIsNotComing),
            [crash(1.0, "vnfc-crash", "vnfc-1"), fs.Fault(1.0, "port-taken", "counter", 0.5)],
            {},
        ),
        (
            "eventual-repair",
            Policies(vim=VimThatNeverRepairs),
            [crash(1.0, "vm-crash", "vm-vnfc-1")],
            {},
        ),
    ],
)
def test_each_invariant_fires_on_a_broken_policy(invariant, policies, schedule, extra) -> None:
    dep = deployment("uc2", **extra)
    good = simulate(dep, 1, schedule)
    assert good.ok, good.violation  # the real policies pass the very same schedule
    bad = simulate(dep, 1, schedule, policies=policies)
    assert bad.violation is not None and bad.violation.name == invariant, bad.violation


def test_a_failing_run_is_shrunk_to_the_fault_that_matters() -> None:
    dep = deployment("uc2")
    noise = [crash(5.0 + i, "vnfc-crash", "vnfc-2") for i in range(2)]
    schedule = sorted([*noise, crash(1.0, "vm-crash", "vm-vnfc-1")])
    broken = Policies(vim=VimThatNeverRepairs)
    outcome = simulate(dep, 1, schedule, policies=broken)
    assert outcome.violation is not None
    small = shrink(dep, outcome, policies=broken)
    assert small.violation is not None and small.violation.name == outcome.violation.name
    assert len(small.faults) < len(schedule)
    assert [f.kind for f in small.faults] == ["vm-crash"]


# --- schedules from files ------------------------------------------------------------------


def test_schedule_file_errors_name_the_entry(tmp_path: Path) -> None:
    ents = {"vnfc": ["a"], "vm": ["vm-a"], "host": ["h"], "vnf": []}
    path = tmp_path / "f.yaml"
    path.write_text("- {at: 1, kind: vnfc-crash, target: nobody}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: \[0\]\.target: no vnfc named 'nobody'$"):
        fs.load(path, ents)
    path.write_text("- {at: 1, kind: meteor, target: a}\n")
    with pytest.raises(ConfigError, match=r"\[0\]\.kind: Input should be 'vnfc-crash'"):
        fs.load(path, ents)
    path.write_text("- {at: 1, kind: vm-crash, target: vm-a}\n- {at: -1, kind: vm-crash}\n")
    with pytest.raises(ConfigError) as err:
        fs.load(path, ents)
    assert str(err.value).splitlines() == [
        f"{path}: [1].at: Input should be greater than or equal to 0",
        f"{path}: [1].target: Field required",
    ]
    path.write_text("{at: 1}\n")
    with pytest.raises(ConfigError, match=r"\(top level\): Input should be a valid list"):
        fs.load(path, ents)
    path.write_text(
        "- {at: 2, kind: vnfc-crash, target: a}\n- {at: 1, kind: vm-crash, target: vm-a}\n"
    )
    assert [f.at for f in fs.load(path, ents)] == [1.0, 2.0]


# --- the manager dies; a new one adopts ------------------------------------------------------


def after(records: list[dict], t: float, name: str, **data) -> list[dict]:
    """Records named ``name`` at or after ``t`` whose data has ``data``."""
    return [
        r
        for r in records
        if r["t"] >= t * 1e9
        and r["name"] == name
        and all(r.get("data", {}).get(k) == v for k, v in data.items())
    ]


def test_a_manager_crash_in_steady_state_keeps_the_active_and_loses_nothing() -> None:
    dep = example("counter-2n")
    outcome = simulate(dep, 1, [fs.Fault(2.0, "manager-crash", "manager")], settle=3.0)
    assert outcome.ok, outcome.violation
    sim, records = outcome.sim, outcome.sim.records
    kept = after(records, 2.0, "KeepRole")
    assert [(r["dst"], r["data"]["role"]) for r in kept] == [("counter-a", "active")]
    assert kept[0]["t"] == round((2.0 + sim.lat.takeover + sim.lat.resume) * 1e9)
    assert not after(records, 2.0, "StartVnfc"), "nothing restarted"
    assert not after(records, 2.0, "AssignRole", role="active"), "the role did not move"
    assert after(records, 2.0, "AssignRole", vnfc="counter-b", role="standby")  # resynchronised
    assert not after(records, 2.0, "LeaseExpired")  # the hot standby manager is within a lease
    assert sim.lost == []
    assert sim.vnfcs["counter-a"].gen == 1 and sim.vnfcs["counter-a"].role == "active"
    assert sim.acked["counter"] > 2.0 / 0.05 + 3.0 / 0.05 - 5, "writes go on under the new one"
    assert sim.vnfcs["counter-b"].version >= sim.acked["counter"] - 1  # replicated again


def test_a_manager_crash_during_a_failover_completes_under_the_new_manager() -> None:
    """The old active is isolated (2.0034) and the standby has been sent the active role, but
    the manager dies (2.004) before its confirmation (2.0045): the standby takes the role with
    nobody to hear it, resumes it with the new manager, which keeps it and restarts the other.
    Never two actives (checked at every step)."""
    dep = example("counter-2n")
    schedule = [
        fs.Fault(2.0, "vnfc-crash", "counter-a"),
        fs.Fault(2.004, "manager-crash", "manager"),
    ]
    outcome = simulate(dep, 1, schedule, settle=3.0)
    assert outcome.ok, outcome.violation
    records = outcome.sim.records
    assert [r["t"] for r in after(records, 2.0, "CleanupDone")][0] < 2.004e9
    assert not after(records, 2.0, "RoleConfirmed")[0]["t"] < 2.004e9, "not confirmed before"
    (kept,) = after(records, 2.004, "KeepRole")
    assert (kept["dst"], kept["data"]["role"], kept["data"]["epoch"]) == ("counter-b", "active", 2)
    (start,) = after(records, 2.004, "StartVnfc")
    assert start["dst"] == "counter-a" and start["t"] == kept["t"]
    assert after(records, 2.004, "RoleConfirmed", vnfc="counter-a", role="standby")
    assert outcome.sim.lost == []


def test_an_active_whose_lease_expires_with_no_manager_fences_itself_first() -> None:
    """No manager for 1.5 s, longer than the 1 s role lease: the active stops serving on its
    own; the new manager finds both fenced and makes one active again, with the state."""
    dep = example("counter-2n")
    outcome = simulate(dep, 1, [fs.Fault(2.0, "manager-crash", "manager", 1.5)], settle=3.0)
    assert outcome.ok, outcome.violation
    records, sim = outcome.sim.records, outcome.sim
    fenced = {r["src"]: r["t"] for r in after(records, 2.0, "LeaseExpired")}
    assert fenced == {"counter-a": 3.0e9, "counter-b": 3.0e9}
    promoted = after(records, 2.0, "AssignRole", role="active")
    assert promoted and promoted[0]["t"] > fenced["counter-a"]
    assert promoted[0]["t"] >= 3.5e9, "nobody is made active before a new manager leads"
    assert sim.lost == [] and not after(records, 2.0, "StartVnfc")


def test_a_silent_active_is_isolated_before_the_standby_is_promoted() -> None:
    """The active hangs while no manager runs: it cannot resume (nor fence itself); the new
    manager isolates it before the standby becomes active."""
    dep = example("counter-2n")
    schedule = [
        fs.Fault(2.0, "manager-crash", "manager", 0.3),
        fs.Fault(2.1, "vnfc-hang", "counter-a"),
    ]
    outcome = simulate(dep, 1, schedule, settle=3.0)
    assert outcome.ok, outcome.violation
    records = outcome.sim.records
    (adopted,) = after(records, 2.0, "ManagerAdopted")
    assert adopted["t"] == 3.3e9, "it waited one lease for the silent one"
    assert "counter-a silent" in adopted["why"]
    cleaned = after(records, 2.0, "CleanupDone", vnfc="counter-a", ok=True)[0]
    promoted = after(records, 2.0, "AssignRole", vnfc="counter-b", role="active")[0]
    assert cleaned["t"] <= promoted["t"] and records.index(cleaned) < records.index(promoted)
    assert outcome.sim.lost == []


def test_a_vnfc_that_dies_with_no_manager_is_started_by_the_new_one() -> None:
    dep = example("counter-single")  # checkpointed: the store's disk outlives the manager
    schedule = [
        fs.Fault(2.0, "manager-crash", "manager", 0.5),
        fs.Fault(2.2, "vnfc-crash", "counter-solo"),
    ]
    outcome = simulate(dep, 1, schedule, settle=3.0)
    assert outcome.ok, outcome.violation
    records = outcome.sim.records
    assert not after(records, 2.2, "ProcessExited"), "nobody saw it die"
    (started,) = after(records, 2.2, "ManagerStarted")  # nothing running: a fresh start
    assert started["t"] == 2.5e9
    assert outcome.sim.lost == [], "the acknowledged state was on disk"


def test_acknowledged_writes_are_lost_only_with_every_copy() -> None:
    """The manager's replica and both VNFCs gone before a new manager leads: nothing holds the
    acknowledged writes any more. Noted, and not a violation; the new start serves from 0."""
    dep = example("counter-2n")
    schedule = [
        fs.Fault(2.0, "manager-crash", "manager", 0.5),
        fs.Fault(2.1, "vnfc-crash", "counter-a"),
        fs.Fault(2.2, "vnfc-crash", "counter-b"),
    ]
    outcome = simulate(dep, 1, schedule, settle=3.0)
    assert outcome.ok, outcome.violation
    assert [(vnf, kept) for _, vnf, _, kept in outcome.sim.lost] == [("counter", 0)]
    # Direct sync: with no manager the VNFCs are the only copies; the loss is noted when the
    # last of them dies, not when the next manager looks.
    assert after(outcome.sim.records, 2.2, "AcknowledgedStateLost")
    # One VNFC left is enough: it holds them.
    outcome = simulate(dep, 1, schedule[:2], settle=3.0)
    assert outcome.ok and outcome.sim.lost == []


def test_a_replica_rebuilt_after_every_lease_expired_holds_the_acknowledged_writes() -> None:
    """Found by the fuzzer (counter-2n and uc1 without hosts, seed 5646, mean gap 0.3 s; shrunk).
    The taken port fails counter-a's activation and the manager dies with its cleanup in hand:
    counter-a runs on with no role and no state; counter-b is the standby with every write.
    No manager for 1.28 s: counter-b's lease expires. Both resumed as ("none", 0), the rebuild
    ranked them equal and took counter-a's empty state, and made counter-a active with it.
    Fixed: the SDK resumes a fenced component with the epoch it last held (not 0); the core's
    ranking (role, epoch) then picks counter-b, and epochs no longer restart from 0."""
    schedule = [
        fs.Fault(29.147804, "port-taken", "counter", 1.51),
        fs.Fault(29.233541, "vnfc-hang", "counter-a"),
        fs.Fault(29.662595, "manager-crash", "manager", 1.284),
    ]
    outcome = simulate(example("counter-2n"), 5646, schedule)
    assert outcome.ok, outcome.violation


def test_manager_crashes_are_drawn_with_or_without_hosts() -> None:
    assert entities(hostless("uc1"))["manager"] == ["manager"]
    assert entities(deployment("uc1"))["manager"] == ["manager"]
    for dep in (deployment("uc2"), hostless("uc1")):
        drawn = {f.kind for seed in range(1, 5) for f in random_schedule(dep, seed, 30, 1)}
        assert "manager-crash" in drawn
    drawn = {
        f.kind
        for seed in range(1, 5)
        for f in random_schedule(deployment("uc2"), seed, 30, 1, NO_MANAGER_CRASH)
    }
    assert "manager-crash" not in drawn


FUZZED = [
    *(hostless(n) for n in ("uc1", "uc3", "uc5", "uc7")),
    *map(example, ("counter-2n", "counter-single", "counter-stateless", "vip-failover")),
]


@pytest.mark.parametrize("dep", FUZZED, ids=lambda d: d.name)
def test_fuzz_with_manager_crashes_keeps_every_invariant(dep: Deployment) -> None:
    runs, failed = fuzz(dep, 200, duration=30, mean_gap=1.0)
    assert failed is None, (failed.seed, failed.violation)
    assert runs == 200


class KeepsTheAddressOnCleanup(HAManager):
    """Claims the virtual IP for a new active but never takes it off a failed one."""

    def _with_address(self, decision: Decision) -> Decision:
        decision = super()._with_address(decision)
        kept = tuple(c for c in decision.commands if c.name != "ReleaseAddress")
        return Decision(kept, decision.why)


def test_the_virtual_ip_has_one_holder_and_the_check_fires_without_releases() -> None:
    dep = example("vip-failover")
    schedule = [crash(1.0, "vnfc-crash", "echo-a"), crash(3.0, "vnfc-hang", "echo-b")]
    good = simulate(dep, 1, schedule)
    assert good.ok, good.violation
    claims = [r["dst"] for r in good.sim.records if r["name"] == "ClaimAddress"]
    assert len(claims) >= 3 and claims[0] != claims[1]  # it moved with the active role
    bad = simulate(dep, 1, schedule, policies=Policies(ha=KeepsTheAddressOnCleanup))
    assert bad.violation is not None and bad.violation.name == "one-address-holder"
