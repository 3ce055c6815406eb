"""The HA manager's operator rules and restart policy, without I/O: a planned switchover (the
active steps down and confirms before the standby is promoted), stop/start/restart/clear,
maintenance (observe, act when it ends), restart backoff and failure-timeout; and what a reload
may change in place (runtime/reload.py, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from nfvha.config import Deployment, Vnf
from nfvha.core import messages as m
from nfvha.core.ha import HAManager, Life, OperatorRefused, Role
from nfvha.runtime import reload
from tests.helpers import vnf_spec
from tests.test_core_ha import Driver, steady_2n


def with_policies(d: Driver, **policies: Any) -> Driver:
    spec = d.mgr.vnf
    d.mgr.reconfigure(
        spec.model_copy(update={"policies": spec.policies.model_copy(update=policies)})
    )
    return d


def operator(d: Driver, name: str, action: str) -> tuple[m.Message, ...]:
    return d.feed(m.OperatorRequest(vnfc=name, action=action))  # type: ignore[arg-type]


def switchover(d: Driver) -> tuple[m.Message, ...]:
    decision = d.mgr.switchover(d.now)
    return d._keep(decision.commands)


# --- switchover --------------------------------------------------------------------------------


def test_the_active_steps_down_and_confirms_before_the_standby_is_promoted() -> None:
    d = steady_2n()
    epoch = d.mgr.epoch
    assert switchover(d) == (m.AssignRole(vnfc="c0", role="standby", epoch=epoch),)
    assert d.role("c0") is Role.STANDBY and d.mgr.switching == ("c0", "c1")
    # Nothing is promoted until the old active confirms it no longer serves.
    cmds = d.feed(m.RoleConfirmed(vnfc="c0", role="standby", epoch=epoch))
    assert cmds == (m.AssignRole(vnfc="c1", role="active", epoch=epoch + 1),)
    d.feed(m.RoleConfirmed(vnfc="c1", role="active", epoch=epoch + 1))
    assert (d.role("c0"), d.role("c1")) == (Role.STANDBY, Role.ACTIVE)
    assert not any(isinstance(c, m.Cleanup | m.StartVnfc) for c in d.log[-2:])
    assert d.mgr.vnfcs["c0"].intensity.count == 0


def test_a_switchover_needs_a_serving_active_and_a_confirmed_standby() -> None:
    d = Driver("2n")
    d.up("c0")  # no standby yet
    with pytest.raises(OperatorRefused, match="confirmed standby"):
        d.mgr.switchover(d.now)
    with pytest.raises(OperatorRefused, match="model 2n"):
        Driver("none").mgr.switchover(0.0)
    d = steady_2n()
    switchover(d)
    with pytest.raises(OperatorRefused, match="under way"):
        d.mgr.switchover(d.now)


def test_a_standby_failing_during_a_switchover_leaves_the_old_active_active() -> None:
    d = steady_2n()
    epoch = d.mgr.epoch
    switchover(d)
    d.feed(m.ProcessExited(vnfc="c1", status="killed"))
    d.feed(m.CleanupDone(vnfc="c1", ok=True))
    # Restarted at once, it registers before c0 confirms: it must not be made active (c0,
    # which holds every acknowledged write, still holds the role).
    d.feed(m.ProcessStarted(vnfc="c1", pid=7))
    cmds = d.feed(m.ComponentRegistered(vnfc="c1"))
    assert m.AssignRole(vnfc="c1", role="standby", epoch=epoch) in cmds
    cmds = d.feed(m.RoleConfirmed(vnfc="c0", role="standby", epoch=epoch))
    assert m.AssignRole(vnfc="c0", role="active", epoch=epoch + 1) in cmds


def test_the_active_failing_while_it_steps_down_fails_over_to_the_standby() -> None:
    d = steady_2n()
    epoch = d.mgr.epoch
    switchover(d)
    d.feed(m.ProcessExited(vnfc="c0", status="killed"))
    cmds = d.feed(m.CleanupDone(vnfc="c0", ok=True))
    assert m.AssignRole(vnfc="c1", role="active", epoch=epoch + 1) in cmds
    assert d.mgr.switching is None


# --- stop, start, restart, clear ---------------------------------------------------------------


def test_a_stopped_active_hands_over_and_stays_stopped_until_started() -> None:
    d = steady_2n()
    cmds = operator(d, "c0", "stop")
    cleanup = next(c for c in cmds if isinstance(c, m.Cleanup))
    assert cleanup.grace_s > 0  # responsive: a graceful stop
    cmds = d.feed(m.CleanupDone(vnfc="c0", ok=True))
    assert any(isinstance(c, m.AssignRole) and c.vnfc == "c1" for c in cmds)
    d.feed(m.RoleConfirmed(vnfc="c1", role="active", epoch=d.mgr.epoch))
    assert not any(isinstance(c, m.StartVnfc) for c in d.log[-3:])
    assert d.mgr.vnfcs["c0"].life is Life.STOPPED and d.mgr.vnfcs["c0"].intensity.count == 0
    assert operator(d, "c0", "start") == (m.StartVnfc(vnfc="c0"),)


def test_a_planned_restart_is_not_counted_as_a_failure() -> None:
    d = Driver("none", restart_max=0)
    d.up("c0")
    operator(d, "c0", "restart")
    cmds = d.feed(m.CleanupDone(vnfc="c0", ok=True))
    assert m.StartVnfc(vnfc="c0") in cmds  # restart_max 0 would escalate a failure
    assert d.mgr.vnfcs["c0"].intensity.count == 0


def test_clear_starts_an_escalated_vnfc_and_start_refuses_one() -> None:
    d = Driver("none", restart_max=0)
    d.up("c0")
    d.feed(m.ProcessExited(vnfc="c0", status="x"))
    d.feed(m.CleanupDone(vnfc="c0", ok=True))
    assert d.mgr.vnfcs["c0"].life is Life.ESCALATED
    with pytest.raises(OperatorRefused, match="clear it first"):
        operator(d, "c0", "start")
    assert operator(d, "c0", "clear") == (m.StartVnfc(vnfc="c0"),)
    assert d.mgr.vnfcs["c0"].intensity.count == 0


def test_clear_retries_an_isolation_that_was_never_confirmed() -> None:
    d = steady_2n()
    d.feed(m.ProcessExited(vnfc="c0", status="x"))
    d.feed(m.CleanupDone(vnfc="c0", ok=False))  # escalated, still holding the role
    assert operator(d, "c0", "clear") == (m.Cleanup(vnfc="c0", grace_s=0.0),)


# --- maintenance ------------------------------------------------------------------------------


def test_maintenance_observes_failures_and_acts_when_it_ends() -> None:
    d = steady_2n()
    d._keep(d.mgr.set_maintenance(True, d.now).commands)
    assert d.feed(m.ProcessExited(vnfc="c1", status="killed")) == ()
    assert d.mgr.unattended == {"c1": "exited (killed) during maintenance"}
    assert d.mgr.vnfcs["c1"].life is Life.RUNNING  # not acted on
    cmds = d._keep(d.mgr.set_maintenance(False, d.now).commands)
    assert any(isinstance(c, m.Cleanup) and c.vnfc == "c1" for c in cmds)


def test_a_hang_that_ends_during_maintenance_is_forgotten() -> None:
    d = steady_2n()
    d.mgr.set_maintenance(True, d.now)
    for _ in range(3):
        d.feed(m.HealthCheckFailed(vnfc="c1", reason="timeout"))
    assert "c1" in d.mgr.unattended
    d.feed(m.HealthCheckPassed(vnfc="c1"))
    assert d.mgr.set_maintenance(False, d.now).commands == ()


# --- restart policy ---------------------------------------------------------------------------


def test_restarts_back_off_doubling_up_to_the_cap() -> None:
    d = with_policies(
        Driver("none", restart_max=10), restart_backoff_ms=100, restart_delay_max_ms=300
    )
    d.up("c0")
    delays = []
    for _ in range(4):
        d.feed(m.ProcessExited(vnfc="c0", status="x"))
        cmds = d.feed(m.CleanupDone(vnfc="c0", ok=True))
        if m.StartVnfc(vnfc="c0") in cmds:
            delays.append(0.0)
        else:
            timer = d.timers[-1]
            assert timer.timer == "restart"
            delays.append(timer.after_s)
            assert (
                d.feed(m.TimerExpired(vnfc="c0", timer="restart", token=timer.token - 1)) == ()
            )  # a stale delay is ignored
            assert d.feed(m.TimerExpired(vnfc="c0", timer="restart", token=timer.token)) == (
                m.StartVnfc(vnfc="c0"),
            )
        d.up("c0")
    assert delays == [0.0, 0.1, 0.2, 0.3]


def test_an_escalation_expires_after_the_failure_timeout() -> None:
    d = with_policies(Driver("none", restart_max=0), failure_timeout_s=5.0)
    d.up("c0")
    d.feed(m.ProcessExited(vnfc="c0", status="x"))
    d.feed(m.CleanupDone(vnfc="c0", ok=True))
    timer = d.timers[-1]
    assert (timer.timer, timer.after_s) == ("failure-timeout", 5.0)
    cmds = d.feed(m.TimerExpired(vnfc="c0", timer="failure-timeout", token=timer.token))
    assert cmds == (m.StartVnfc(vnfc="c0"),)
    assert d.mgr.vnfcs["c0"].intensity.count == 0


# --- reload -----------------------------------------------------------------------------------


def deployment(vnf: Vnf) -> Deployment:
    return Deployment.model_validate({"name": "d", "vnfs": [vnf.model_dump()]})


def test_reload_applies_policies_in_place_restarts_changed_vnfcs_refuses_the_shape() -> None:
    old = vnf_spec("2n")
    policies = old.policies.model_copy(update={"restart_max": 9})
    assert reload.plan(deployment(old), deployment(old)).unchanged
    in_place = reload.plan(
        deployment(old), deployment(old.model_copy(update={"policies": policies}))
    )
    assert (in_place.updated, in_place.restart, in_place.refused) == (["vnf"], [], [])
    vnfcs = [old.vnfcs[0].model_copy(update={"env": {"A": "1"}}), old.vnfcs[1]]
    changed = reload.plan(deployment(old), deployment(old.model_copy(update={"vnfcs": vnfcs})))
    assert changed.restart == [("vnf", "c0")] and not changed.refused
    moved = old.service.model_copy(update={"address": "127.0.0.1:1"})
    refused = reload.plan(deployment(old), deployment(old.model_copy(update={"service": moved})))
    assert refused.refused == ["VNF vnf: 'service' changed"]


def test_reconfigure_changes_the_start_limit_from_the_next_failure() -> None:
    mgr = HAManager(vnf_spec("none", restart_max=5))
    mgr.reconfigure(vnf_spec("none", restart_max=1))
    assert mgr.vnfcs["c0"].intensity.max_restarts == 1
