"""The simulator: deterministic, and every invariant can fire (shown on broken policies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfvha.config import ConfigError, Deployment
from nfvha.core import checkpoint as ck
from nfvha.core import vim as v
from nfvha.core.dispatcher import ManagerClasses as Policies
from nfvha.core.ha import Decision, HAManager, Role
from nfvha.core.vim import Vim
from nfvha.core.vnfm import Vnfm
from nfvha.lab.scenario import load as load_scenario
from nfvha.sim import faults as fs
from nfvha.sim.runner import fuzz, random_schedule, shrink, simulate


def deployment(name: str = "uc2", **policies) -> Deployment:
    raw = load_scenario(name).deployment.model_dump()
    for vnf in raw["vnfs"]:
        vnf["policies"].update(policies)
    return Deployment.model_validate(raw)


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
    runs, failed = fuzz(deployment(name), 40, duration=30, mean_gap=1.0)
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
    runs, failed = fuzz(deployment("uc2"), 300, first_seed=1000, duration=20, mean_gap=0.7)
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

    def write(self, vnfc, epoch, request, updates):
        if self.writer != (vnfc, epoch):
            return super().write(vnfc, epoch, request, updates)
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
            {},
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
