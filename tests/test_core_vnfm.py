"""The VNFM relays, consents and escalates; the HA manager waits for the VM it lost."""

from __future__ import annotations

from nfvha.core import messages as m
from nfvha.core import vim as v
from nfvha.core.ha import Life, Role
from nfvha.core.vnfm import Vnfm
from tests.test_core_ha import Driver, steady_2n


def vnfm() -> Vnfm:
    return Vnfm("vnfm", {"c0": "vm0", "c1": "vm1"}, {"c0": "vnf", "c1": "vnf"})


def test_vm_failure_is_relayed_per_vnfc_and_consented() -> None:
    d = vnfm().handle(
        v.NotifyVmFailed(vm="vm0", vnf="vnf", host="h", reason="x", consent_needed=True), 1.0
    )
    assert d.commands == (m.VmLost(vnfc="c0", vm="vm0"), v.RepairConsent(vm="vm0", vnfm="vnfm"))


def test_auto_repair_needs_no_consent() -> None:
    d = vnfm().handle(
        v.NotifyVmFailed(vm="vm0", vnf="vnf", host="h", reason="x", consent_needed=False), 1.0
    )
    assert d.commands == (m.VmLost(vnfc="c0", vm="vm0"),)


def test_escalation_becomes_an_error_report_on_the_vm() -> None:
    d = vnfm().handle(m.Escalate(vnfc="c1", failures=4, probation_s=60, reason="r"), 1.0)
    assert d.commands == (v.VmErrorReport(vm="vm1", vnfm="vnfm", reason="c1: r"),)


def test_repair_is_relayed() -> None:
    d = vnfm().handle(v.NotifyVmRepaired(vm="vm1", vnf="vnf", host="h2"), 1.0)
    assert d.commands == (m.VmRestored(vnfc="c1", vm="vm1"),)


def test_vm_lost_after_the_failover_causes_no_second_one() -> None:
    d = steady_2n()
    d.feed(m.ProcessExited(vnfc="c0", status="killed"))
    d.feed(m.CleanupDone(vnfc="c0", ok=True))
    d.feed(m.RoleConfirmed(vnfc="c1", role="active", epoch=2))
    assert d.log[-1] == m.StartVnfc(vnfc="c0")  # repair started
    cmds = d.feed(m.VmLost(vnfc="c0", vm="vm0"))
    assert not any(isinstance(c, m.AssignRole) for c in cmds)
    assert d.role("c1") is Role.ACTIVE


def test_vm_lost_first_fails_over_once_and_holds_the_repair() -> None:
    d = steady_2n()
    cmds = d.feed(m.VmLost(vnfc="c0", vm="vm0"))
    assert m.AssignRole(vnfc="c1", role="active", epoch=2) in cmds
    assert not any(isinstance(c, m.Cleanup) for c in cmds)  # gone with its VM: isolated
    cmds = d.feed(m.RoleConfirmed(vnfc="c1", role="active", epoch=2))
    assert not any(isinstance(c, m.StartVnfc) for c in cmds), "repair before the VM is back"
    assert d.feed(m.ProcessExited(vnfc="c0", status="killed")) == ()  # the same failure, again
    cmds = d.feed(m.VmRestored(vnfc="c0", vm="vm0"))
    assert cmds == (m.StartVnfc(vnfc="c0"),)
    assert d.mgr.vnfcs["c0"].intensity.count == 0


def test_vm_lost_during_cleanup_confirms_isolation() -> None:
    d = steady_2n()
    d.feed(m.HealthCheckFailed(vnfc="c0", reason="t"))
    d.feed(m.HealthCheckFailed(vnfc="c0", reason="t"))
    d.feed(m.HealthCheckFailed(vnfc="c0", reason="t"))
    cmds = d.feed(m.VmLost(vnfc="c0", vm="vm0"))
    assert m.AssignRole(vnfc="c1", role="active", epoch=2) in cmds
    assert d.feed(m.CleanupDone(vnfc="c0", ok=True)) == ()  # late result: already isolated


def test_escalated_vnfc_is_restarted_after_its_vm_is_repaired() -> None:
    d = Driver("none", restart_max=0)
    d.up("c0")
    d.feed(m.ProcessExited(vnfc="c0", status="x"))
    cmds = d.feed(m.CleanupDone(vnfc="c0", ok=True))
    assert any(isinstance(c, m.Escalate) for c in cmds)
    assert d.mgr.vnfcs["c0"].life is Life.ESCALATED
    d.feed(m.VmLost(vnfc="c0", vm="vm0"))
    assert d.feed(m.VmRestored(vnfc="c0", vm="vm0")) == (m.StartVnfc(vnfc="c0"),)


def test_vm_lost_after_a_failed_cleanup_releases_the_role() -> None:
    d = steady_2n()
    d.feed(m.ErrorReported(vnfc="c0", reason="r"))
    cmds = d.feed(m.CleanupDone(vnfc="c0", ok=False, detail="unreachable"))
    assert not any(isinstance(c, m.AssignRole) for c in cmds)
    cmds = d.feed(m.VmLost(vnfc="c0", vm="vm0"))  # the VIM fenced it: now it is isolated
    assert m.AssignRole(vnfc="c1", role="active", epoch=2) in cmds
    assert not any(isinstance(c, m.StartVnfc) for c in cmds)
