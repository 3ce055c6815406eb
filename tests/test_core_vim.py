"""The VIM's rules: isolation before restart, consent, handled once, correlation, fencing."""

from __future__ import annotations

from typing import Any, Literal

from nfvha.core import vim as v


def build(repair: Literal["negotiation", "auto"] = "negotiation", hosts: int = 3) -> v.Vim:
    specs = [
        v.VmSpec("vm-a1", "h1", "a", repair),
        v.VmSpec("vm-a2", "h2", "a", repair),
        v.VmSpec("vm-b1", "h1", "b", repair),
    ]
    return v.Vim.build([f"h{i + 1}" for i in range(hosts)], specs, correlation_window_s=10)


def kinds(commands) -> list[str]:
    return [c.name for c in commands]


def test_vm_crash_is_isolated_then_notified_then_waits_for_consent() -> None:
    vim = build()
    d = vim.handle(v.VmFailed(vm="vm-a1", cause="exit"), 1.0)
    assert kinds(d.commands) == ["Alarm", "CleanupVm"]  # nothing is said before isolation
    d = vim.handle(v.VmCleanedUp(vm="vm-a1", ok=True), 1.1)
    assert kinds(d.commands) == ["NotifyVmFailed"]
    notify = d.commands[0]
    assert notify.vnf == "a" and notify.consent_needed
    d = vim.handle(v.RepairConsent(vm="vm-a1", vnfm="vnfm"), 1.2)
    assert d.commands == (v.StartVm(vm="vm-a1", host="h1", restore=True),)
    d = vim.handle(v.VmUp(vm="vm-a1", host="h1"), 2.0)
    assert v.NotifyVmRepaired(vm="vm-a1", vnf="a", host="h1") in d.commands


def test_consent_before_isolation_still_waits_for_it() -> None:
    vim = build()
    vim.handle(v.VmFailed(vm="vm-a1", cause="heartbeat"), 1.0)
    assert vim.handle(v.RepairConsent(vm="vm-a1", vnfm="vnfm"), 1.1).commands == ()
    d = vim.handle(v.VmCleanedUp(vm="vm-a1", ok=True), 1.2)
    assert kinds(d.commands) == ["NotifyVmFailed", "StartVm"]
    assert not d.commands[0].consent_needed


def test_auto_mode_restarts_without_asking() -> None:
    vim = build("auto")
    vim.handle(v.VmFailed(vm="vm-a1", cause="exit"), 1.0)
    d = vim.handle(v.VmCleanedUp(vm="vm-a1", ok=True), 1.1)
    assert kinds(d.commands) == ["NotifyVmFailed", "StartVm"]
    assert not d.commands[0].consent_needed


def test_error_report_from_the_vnfm_is_consent_and_is_not_echoed_back() -> None:
    vim = build()
    d = vim.handle(v.VmErrorReport(vm="vm-a1", vnfm="vnfm", reason="VNFC failed 4 times"), 1.0)
    assert "NotifyVmFailed" not in kinds(d.commands)
    d = vim.handle(v.VmCleanedUp(vm="vm-a1", ok=True), 1.1)
    assert kinds(d.commands) == ["StartVm"]


def test_the_same_vm_failure_is_handled_once() -> None:
    vim = build()
    vim.handle(v.VmFailed(vm="vm-a1", cause="exit"), 1.0)
    assert vim.handle(v.VmFailed(vm="vm-a1", cause="heartbeat"), 1.1).commands == ()
    d = vim.handle(v.VmErrorReport(vm="vm-a1", vnfm="vnfm", reason="x"), 1.2)
    assert d.commands == ()


def test_two_vms_of_one_host_mean_the_host_is_fenced_first() -> None:
    vim = build()
    vim.handle(v.VmFailed(vm="vm-a1", cause="exit"), 1.0)
    d = vim.handle(v.VmErrorReport(vm="vm-b1", vnfm="vnfm-b", reason="repeated"), 2.0)
    assert kinds(d.commands)[-1] == "FenceHost" and d.commands[-1].host == "h1"
    assert not any(isinstance(c, v.StartVm) for c in d.commands)
    d = vim.handle(v.HostFenced(host="h1", ok=True), 2.5)
    starts = [c for c in d.commands if isinstance(c, v.StartVm)]
    assert v.StartHost(host="h1") in d.commands
    # vm-b1 asked for (consent); vm-a1 still waits for its VNFM's consent
    assert [s.vm for s in starts] == ["vm-b1"]
    assert all(s.host != "h1" for s in starts)


def test_failures_outside_the_window_are_not_correlated() -> None:
    vim = build()
    vim.handle(v.VmFailed(vm="vm-a1", cause="exit"), 1.0)
    d = vim.handle(v.VmFailed(vm="vm-b1", cause="exit"), 20.0)
    assert "FenceHost" not in kinds(d.commands)


def test_host_failure_restarts_vms_elsewhere_with_anti_affinity() -> None:
    vim = build("auto")
    d = vim.handle(v.HostFailed(host="h1", cause="heartbeat lost"), 1.0)
    assert kinds(d.commands) == ["Alarm", "FenceHost"]
    d = vim.handle(v.HostFenced(host="h1", ok=True), 1.5)
    notified = sorted(c.vm for c in d.commands if isinstance(c, v.NotifyVmFailed))
    assert notified == ["vm-a1", "vm-b1"]  # told once fenced, not before
    placed = {c.vm: c.host for c in d.commands if isinstance(c, v.StartVm)}
    assert placed["vm-a1"] == "h3"  # h2 already runs vm-a2 of the same VNF
    assert placed["vm-b1"] in ("h2", "h3")


def test_failed_fencing_restarts_nothing() -> None:
    vim = build("auto")
    vim.handle(v.HostFailed(host="h1", cause="heartbeat lost"), 1.0)
    d = vim.handle(v.HostFenced(host="h1", ok=False, detail="agent unreachable"), 1.5)
    assert kinds(d.commands) == ["Alarm"]
    view: dict[str, Any] = vim.snapshot()
    assert view["hosts"]["h1"] == "fence-failed"


def test_vm_without_a_free_host_waits_for_its_own() -> None:
    vim = build("auto", hosts=2)
    vim.handle(v.HostFailed(host="h1", cause="heartbeat lost"), 1.0)
    d = vim.handle(v.HostFenced(host="h1", ok=True), 1.5)
    placed = {c.vm: c.host for c in d.commands if isinstance(c, v.StartVm)}
    assert "vm-a1" not in placed  # h2 holds its sibling, h1 is down
    d = vim.handle(v.HostUp(host="h1"), 3.0)
    assert v.StartVm(vm="vm-a1", host="h1", restore=True) in d.commands


def test_failed_vm_cleanup_escalates_to_the_host() -> None:
    vim = build()
    vim.handle(v.VmFailed(vm="vm-a1", cause="heartbeat"), 1.0)
    d = vim.handle(v.VmCleanedUp(vm="vm-a1", ok=False, detail="stuck"), 1.1)
    assert d.commands[-1] == v.FenceHost(host="h1")


def test_a_vm_that_does_not_come_up_is_started_again() -> None:
    vim = build("auto")
    vim.handle(v.VmFailed(vm="vm-a1", cause="exit"), 1.0)
    vim.handle(v.VmCleanedUp(vm="vm-a1", ok=True), 1.1)
    d = vim.handle(v.VmStartFailed(vm="vm-a1", detail="host went away"), 2.0)
    assert kinds(d.commands) == ["StartVm"]


def build_with_standby() -> v.Vim:
    specs = [
        v.VmSpec("vm-a", "h1", "a", "auto", "failover_standby_vm", standby_host="h2"),
        v.VmSpec("vm-b", "h3", "b", "auto"),
    ]
    return v.Vim.build(["h1", "h2", "h3"], specs, correlation_window_s=10)


def test_a_failed_vm_is_repaired_by_its_standby_then_gets_a_new_one() -> None:
    vim = build_with_standby()
    vim.handle(v.VmFailed(vm="vm-a", cause="exit"), 1.0)
    d = vim.handle(v.VmCleanedUp(vm="vm-a", ok=True), 1.1)
    assert v.PromoteStandbyVm(vm="vm-a", host="h2") in d.commands  # not a boot
    assert not any(isinstance(c, v.StartVm) for c in d.commands)
    d = vim.handle(v.VmUp(vm="vm-a", host="h2"), 1.2)
    new = next(c for c in d.commands if isinstance(c, v.StartStandbyVm))
    assert new.host != "h2"  # never on the VM's own host
    vim.handle(v.StandbyVmUp(vm="vm-a", host=new.host), 2.0)
    assert vim.vms["vm-a"].standby == new.host


def test_without_a_ready_standby_the_vm_is_booted() -> None:
    vim = build_with_standby()
    vim.handle(v.StandbyVmFailed(vm="vm-a", host="h2", detail="died"), 0.5)
    vim.handle(v.VmFailed(vm="vm-a", cause="exit"), 1.0)
    d = vim.handle(v.VmCleanedUp(vm="vm-a", ok=True), 1.1)
    assert kinds(d.commands)[-1] == "StartVm"


def test_a_standby_dies_with_its_host_and_is_replaced_when_a_host_is_back() -> None:
    vim = build_with_standby()
    vim.handle(v.HostFailed(host="h2", cause="heartbeat"), 1.0)
    assert vim.vms["vm-a"].standby is None
    vim.handle(v.HostFenced(host="h2", ok=True), 1.1)
    d = vim.handle(v.HostUp(host="h2"), 2.0)
    assert any(isinstance(c, v.StartStandbyVm) and c.vm == "vm-a" for c in d.commands)
