"""Invariants, checked at every step of a simulation. Each has a name; the first violation
stops the run (``Violation``) with the virtual time and what was seen.

- ``two-actives``: never more VNFCs that are alive and believe they are active than the
  model allows (one for 2n and none, N for n+m). An active that fenced itself (its lease
  expired while no manager ran) believes it is none: it no longer counts.
- ``isolation-before-failover``: when the active role is assigned, the holders it replaces are
  dead (confirmed gone), not merely suspected.
- ``acknowledged-state``: a VNFC confirming the active role, or keeping it under a new manager
  (adopted), holds every acknowledged checkpoint; acknowledgements outlive the manager. A write
  is acknowledged as its VNF's state_sync says (the world's ``acked``): by the manager, by the
  standby peer to peer (direct), or by the VNF's store (shared_storage, store).
- ``one-address-holder``: a service's virtual IP is on at most one VNFC's node at any time.
- ``escalation``: the HA manager escalates exactly on the failure after the maximum within the
  probation time (counted here independently, from its Cleanup commands), never otherwise. A
  manager's counts die with it: the count starts afresh for each new manager (a VNFC it
  finds silent counts once, by its Cleanup).
- ``scope``: every command is one its manager may issue, about entities in its scope.
- ``stranded``: every VNFC that is not running is on its way back (being cleaned up or started,
  or waiting for a new active that is coming, or for its VM's repair), in the pool of on-demand
  spares while enough actives are there or coming, or visibly escalated. Not checked while a
  new manager waits for the VNFCs to resume (it has not decided yet).
- ``eventual-repair`` (``check_end``): after a quiet period every host and VM is up and every
  VNFC runs with a role, or was reported unrepairable (escalated).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from nfvha.core import messages as m
from nfvha.core import routing
from nfvha.core.ha import Decision, Life, Role
from nfvha.core.messages import Traced

NAMES = (
    "two-actives",
    "isolation-before-failover",
    "one-address-holder",
    "acknowledged-state",
    "escalation",
    "scope",
    "stranded",
    "eventual-repair",
)


class Violation(Exception):
    def __init__(self, name: str, at: float, detail: str) -> None:
        super().__init__(f"invariant {name} violated at t={at:.6f} s: {detail}")
        self.name, self.at, self.detail = name, at, detail


def active_limit(sim: Any, vnf: str) -> int:
    r = sim.specs[vnf].redundancy
    return r.active if r.model == "n+m" else 1


@dataclass
class Invariants:
    # escalation, counted independently: failure times per VNFC since its VM was last repaired
    failures: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    expect_escalation: dict[str, bool] = field(default_factory=dict)
    vm_down: set[str] = field(default_factory=set)
    # VNFs whose managers acted this step: only they can have gained an active, so only they
    # are checked (no scan of every VNF per event).
    touched: set[str] = field(default_factory=set)

    def on_takeover(self, sim: Any) -> None:
        """A new manager leads: what the dead one counted is gone with it."""
        self.failures.clear()
        self.expect_escalation.clear()
        self.vm_down.clear()

    def on_command(self, sim: Any, source: str, cmd: Traced) -> None:
        if not routing.in_scope(source, cmd, sim.owner):
            raise Violation("scope", sim.now, f"{sim.label(source)} issued {cmd!r}")
        if isinstance(cmd, m.AssignRole) and cmd.role == "active":
            vnf = sim.owner[cmd.vnfc]
            others = [c for c in self._actives(sim, vnf) if c.name != cmd.vnfc]
            if len(others) >= active_limit(sim, vnf):
                names = ", ".join(c.name for c in others)
                raise Violation(
                    "isolation-before-failover",
                    sim.now,
                    f"{cmd.vnfc} made active while {names} still alive and active",
                )
        if isinstance(cmd, m.Cleanup):
            self._count_failure(sim, cmd.vnfc)
        if isinstance(cmd, m.KeepRole) and cmd.role == "active":
            self._holds_acknowledged(sim, cmd.vnfc, "keeps the active role")

    def on_decision(self, sim: Any, target: str, event: Traced, decision: Decision) -> None:
        if target in sim.specs:
            self.touched.add(target)
        if isinstance(event, m.VmLost):
            self.vm_down.add(event.vnfc)
            self.expect_escalation.pop(event.vnfc, None)  # isolated by its VM's loss
        elif isinstance(event, m.VmRestored):
            self.vm_down.discard(event.vnfc)
            self.failures[event.vnfc].clear()
        elif isinstance(event, m.CleanupDone) and event.vnfc in self.expect_escalation:
            self._check_escalation(sim, event, decision)
        elif isinstance(event, m.RoleConfirmed) and event.role == "active":
            vnf = sim.owner[event.vnfc]
            if sim.ha[vnf].vnfcs[event.vnfc].confirmed:
                self._holds_acknowledged(sim, event.vnfc, "serves")

    def after_step(self, sim: Any) -> None:
        touched, self.touched = self.touched, set()
        for vnf in sorted(touched):
            actives = self._actives(sim, vnf)
            if len(actives) > active_limit(sim, vnf):
                names = ", ".join(c.name for c in actives)
                raise Violation("two-actives", sim.now, f"{vnf}: {names} all alive and active")
            if len(holders := sim.vip_holders[vnf]) > 1:
                names = ", ".join(sorted(holders))
                raise Violation("one-address-holder", sim.now, f"{vnf}: held by {names}")
            if not getattr(sim, "adopting", False) and (stranded := self._stranded(sim, vnf)):
                raise Violation("stranded", sim.now, f"{vnf}: {stranded} stopped, not coming back")

    def check_end(self, sim: Any) -> None:
        nfvi = sim.vim.snapshot() if sim.vim is not None else {"hosts": {}, "vms": {}}
        down = [h for h, s in nfvi["hosts"].items() if s not in ("up", "fence-failed")]
        down += [vm for vm, s in nfvi["vms"].items() if s["state"] != "up"]
        for vnf, mgr in sim.ha.items():
            for c in mgr.vnfcs.values():
                world = sim.vnfcs[c.name]
                serving = world.alive and c.life is Life.RUNNING and c.confirmed
                spare_pool = c.life is Life.STOPPED and self._pooled(sim, vnf)
                if not (serving or spare_pool or c.life is Life.ESCALATED):
                    down.append(f"{c.name} ({c.life}, {c.role})")
        if down:
            raise Violation("eventual-repair", sim.now, "not repaired: " + ", ".join(down))

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _holds_acknowledged(sim: Any, vnfc: str, what: str) -> None:
        c, vnf = sim.vnfcs[vnfc], sim.owner[vnfc]
        if c.version < sim.acked[vnf]:
            raise Violation(
                "acknowledged-state",
                sim.now,
                f"{vnfc} {what} with version {c.version}; {sim.acked[vnf]} was acknowledged",
            )

    @staticmethod
    def _actives(sim: Any, vnf: str) -> list[Any]:
        return [
            sim.vnfcs[c.name]
            for c in sim.specs[vnf].vnfcs
            if sim.vnfcs[c.name].alive and sim.vnfcs[c.name].role == "active"
        ]

    def _stranded(self, sim: Any, vnf: str) -> str:
        mgr = sim.ha[vnf]
        coming = sum(
            1
            for c in mgr.vnfcs.values()
            if c.life in (Life.STARTING, Life.FAILED)
            or (c.life is Life.RUNNING and c.role is Role.ACTIVE)
        )
        enough = coming >= active_limit(sim, vnf)
        for c in mgr.vnfcs.values():
            if c.life is not Life.STOPPED or c.vm_down:
                continue
            waiting = c.name in mgr.awaiting_recovery and coming > 0
            if not (waiting or (self._pooled(sim, vnf) and enough)):
                return c.name
        return ""

    @staticmethod
    def _pooled(sim: Any, vnf: str) -> bool:
        r = sim.specs[vnf].redundancy
        return r.model == "n+m" and r.spare_start == "on_demand"

    def _count_failure(self, sim: Any, vnfc: str) -> None:
        policy = sim.specs[sim.owner[vnfc]].policies
        times = self.failures[vnfc]
        times.append(sim.now)
        while times and sim.now - times[0] > policy.restart_probation_s:
            times.popleft()
        self.expect_escalation[vnfc] = len(times) > policy.restart_max

    def _check_escalation(self, sim: Any, event: m.CleanupDone, decision: Decision) -> None:
        expected = self.expect_escalation.pop(event.vnfc)
        escalated = any(isinstance(c, m.Escalate) for c in decision.commands)
        if not event.ok:
            expected = True  # isolation not confirmed: always escalated
        elif event.vnfc in self.vm_down:
            return  # its VM is down: the repair waits for the VM, not for an escalation
        if escalated != expected:
            n = len(self.failures[event.vnfc])
            raise Violation(
                "escalation",
                sim.now,
                f"{event.vnfc}: {n} failures in the probation time, escalated={escalated}",
            )
