"""The HA manager of one VNF: who is active, and what happens when a VNFC fails.

Rules (design brief 1, 2, 5, 6; each has tests in tests/test_core_ha.py):

1. Isolate before failover. A role leaves a failed VNFC only on ``CleanupDone(ok=True)`` for it.
   If cleanup cannot be confirmed, no role moves and the fault is escalated.
2. Never two actives (2n). A failed active keeps its role until it is isolated, so it still
   counts; a new active is chosen only when no VNFC holds the role.
3. Recover first, repair after. A VNFC whose role was taken over is restarted only once the
   new active has confirmed (it has claimed the service address and serves).
4. Error report and clear. When the last active of a service fails the VNFM gets
   ``ReportError``; when an active confirms again it gets ``ClearError``.
5. Escalation. More than ``restart_max`` failures of a VNFC within ``restart_probation_s``:
   the VNFC is not restarted again and the VNFM gets ``Escalate``.
6. A VM failure (``VmLost``, relayed by the VNFM from the VIM) isolates the VNFCs on it; it
   causes at most the one failover their loss calls for, never a second one, and their repair
   waits for ``VmRestored``. A VM failure is not the VNFC's fault: it does not count towards
   the VNFC's escalation, and a repaired VM clears the count.
7. A failed checkpoint store (``StoreFailed``) is an error report to the VNFM, cleared when a
   write is durable again (``StoreRecovered``). The VNFC is not restarted for it: a restart
   cannot free a disk, and it keeps answering reads from the durable state.
8. Nothing is stranded. A VNFC waiting for a new active before its repair is restarted at once
   when no new active is coming (the successor failed too, or there is none): every VNFC that
   is not running is on its way back, waits for its VM, or is escalated.
9. A new manager adopts, it does not restart (``adopt``). VNFCs still running when it takes
   over resume their sessions and keep their roles: the active claims with the highest epochs
   stay active (no reassignment), a stale claim is isolated; standbys are resynchronised. A
   running VNFC that did not resume within its lease may be an active cut off from everyone:
   it is isolated before anyone else is made active. VNFCs that are gone are started.
10. The service address (a virtual IP, ``service.vip``) has at most one holder. The VNFC made
   active claims it just before its assignment (``ClaimAddress``); every VNFC releases it
   before its cleanup or start (a no-op where not held: a new manager does not know who held
   it), and the holder before any other role (``ReleaseAddress``). Since a role moves only once its
   holder is isolated (rule 1), the old holder has released it before the new one claims it.
   An adopted active claims it again: the claim re-announces it.
11. A failover needs a healthy successor. An active that misses ``failure_threshold`` health
   checks while every running successor misses its own too is not isolated for it (a common
   cause, an overloaded machine or the checks' own path, is likelier, and isolating it would
   turn a slowdown into an outage); it is once a successor answers again, or at twice the
   threshold whatever the successors do. Nor is a standby or spare that misses its checks
   while every other running VNFC misses too: isolating it would leave the active without a
   successor, and so without this rule's patience, in the same slowdown. An exit or an error
   report is acted on at once.
12. Epochs only grow. A manager that starts a VNF whose state lives in a store with an epoch
   of its own (shared storage, etcd) continues above it (``continue_above``): a new active's
   claim would otherwise be refused by the store as stale, and the service never come up.

Theory of operation: every VNFC has a life (stopped, starting, running, failed = being cleaned
up, escalated) and a role (none, active, standby, spare). The runtime feeds events with the
current monotonic time; ``handle`` returns the commands to run and one sentence saying why.
The same failure reported twice (exit and health check, say) is acted on once, because only a
starting or running VNFC can fail.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from nfvha.config import Vnf
from nfvha.core import messages as m
from nfvha.core.escalation import RestartIntensity, restart_delay_s
from nfvha.core.messages import Decision as Decision  # the decision type, re-exported
from nfvha.core.messages import Traced


class Life(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"  # detected; cleanup in progress
    ESCALATED = "escalated"  # not restarted again; the VNFM has it


class Role(StrEnum):
    NONE = "none"
    ACTIVE = "active"
    STANDBY = "standby"
    SPARE = "spare"


class Resumed(NamedTuple):
    """What a running VNFC says of itself when it resumes its session with a new manager."""

    role: str
    epoch: int


class IllegalEvent(Exception):
    """An event about a VNFC this manager does not manage."""


class OperatorRefused(Exception):
    """An operator's request that cannot be carried out now; says why."""


# Observed, not acted on, while the VNF is in maintenance; acted on when it ends.
UNATTENDED = ("ProcessExited", "HealthCheckFailed", "ErrorReported")


@dataclass(slots=True)
class VnfcState:
    name: str
    intensity: RestartIntensity
    life: Life = Life.STOPPED
    role: Role = Role.NONE
    confirmed: bool = False
    pid: int | None = None
    misses: int = 0
    escalate: bool = False
    last_failure: str = ""
    vm_down: bool = False  # its VM failed: no restart until the VIM has repaired it
    start_token: int = 0  # which start a start deadline belongs to
    restart_token: int = 0  # which failure a restart delay or failure-timeout belongs to
    held: bool = False  # stopped by the operator (nfvha stop): not restarted until started


@dataclass(slots=True)
class HAManager:
    vnf: Vnf
    epoch: int = 0  # fencing token: bumped at every active assignment
    vnfcs: dict[str, VnfcState] = field(init=False)
    service_down_reported: bool = field(default=False, init=False)
    store_error: str = field(default="", init=False)
    awaiting_recovery: list[str] = field(default_factory=list, init=False)
    # A planned switchover under way: (the active handing over, the standby taking over).
    switching: tuple[str, str] | None = field(default=None, init=False)
    maintenance: bool = field(default=False, init=False)
    unattended: dict[str, str] = field(default_factory=dict, init=False)  # VNFC -> failure
    address_holder: str | None = field(default=None, init=False)  # rule 10

    def __post_init__(self) -> None:
        p = self.vnf.policies
        self.vnfcs = {
            c.name: VnfcState(c.name, RestartIntensity(p.restart_max, p.restart_probation_s))
            for c in self.vnf.vnfcs
        }

    # --- entry points -------------------------------------------------------------------------

    def reconfigure(self, vnf: Vnf) -> None:
        """A reload changed what applies in place (policies, repair, hooks): used from the
        next decision on; the failures counted so far stay."""
        self.vnf = vnf
        for c in self.vnfcs.values():
            c.intensity.max_restarts = vnf.policies.restart_max
            c.intensity.probation_s = vnf.policies.restart_probation_s

    def start(self, now: float) -> Decision:
        """Start the VNFCs that should run from the beginning."""
        r = self.vnf.redundancy
        names = list(self.vnfcs)
        if r.model == "n+m" and r.spare_start == "on_demand":
            names = names[: r.active]
        return self._with_address(
            Decision(
                tuple(cmd for n in names for cmd in self._start(self.vnfcs[n])),
                f"starting {', '.join(names)} ({self._model_text()})",
            )
        )

    def continue_above(self, epoch: int) -> None:
        """Rule 12: the next active assignment gets an epoch above ``epoch``."""
        self.epoch = max(self.epoch, epoch)

    def adopt(
        self,
        now: float,
        running: Mapping[str, int],
        resumed: Mapping[str, Resumed],
        escalated: Collection[str] = (),
    ) -> Decision:
        """Rule 9: take over from a manager that died. ``running``: VNFC -> pid of those still
        running; ``resumed``: those of them that said which role and epoch they hold (the
        others are silent); VNFCs not running are started, except those the dead manager had
        escalated (``escalated``): they stay escalated, reported to the VNFM again."""
        for name, pid in running.items():
            self.vnfcs[name].pid = pid
        kept_escalated = self._keep_escalated(escalated, running)
        silent = [n for n in running if n not in resumed]
        r = self.vnf.redundancy
        limit = r.active if r.model == "n+m" else 1
        claims = sorted(
            ((e.epoch, n) for n, e in resumed.items() if e.role == Role.ACTIVE), reverse=True
        )
        keep = {n for _, n in claims[:limit]}
        self.epoch = max([self.epoch, *(e.epoch for e in resumed.values())])
        commands: list[Traced] = []
        for name in keep:
            c = self.vnfcs[name]
            c.life, c.role, c.confirmed = Life.RUNNING, Role.ACTIVE, True
            commands += self._watch(c)
            commands.append(m.KeepRole(vnfc=name, role="active", epoch=resumed[name].epoch))
        suspects = [n for n in silent if n in self.vnfcs]
        for name in suspects:  # maybe an active cut off: it holds the role until isolated
            c = self.vnfcs[name]
            c.life, c.role = Life.RUNNING, Role.ACTIVE if not keep else Role.NONE
            commands += self._fail(c, "did not resume its session", now, responsive=False).commands
        for name, e in resumed.items():
            if name in keep:
                continue
            c = self.vnfcs[name]
            c.life = Life.RUNNING
            if e.role == Role.ACTIVE:  # a second claim, with an older epoch
                commands += self._fail(
                    c, f"claimed active with stale epoch {e.epoch}", now, responsive=False
                ).commands
                continue
            commands += self._watch(c)
            waiting = Role.STANDBY if r.model == "2n" else Role.SPARE
            role = waiting if suspects and not keep else self._role_for_newcomer()
            commands.append(self._assign(c, role))
        gone = [n for n, c in self.vnfcs.items() if c.life is Life.STOPPED]
        revived, _ = self._revive_stranded(besides="") if self._pooled() else ([], "")
        started = revived or [cmd for n in gone for cmd in self._start(self.vnfcs[n])]
        commands += started + kept_escalated
        decision = Decision(tuple(commands), self._adopted_text(keep, resumed, suspects, gone))
        return self._with_address(decision)

    def _keep_escalated(
        self, escalated: Collection[str], running: Mapping[str, int]
    ) -> list[Traced]:
        """An escalation outlives the manager that made it: a new manager does not restart
        what the VNFM was told it would not (Pacemaker keeps fail counts in the CIB)."""
        out: list[Traced] = []
        for name in sorted(escalated):
            c = self.vnfcs.get(name)
            if c is None or name in running:
                continue
            c.life, c.role = Life.ESCALATED, Role.NONE
            out.append(self._escalate(c, "escalated by the manager before this one"))
        return out

    def _adopted_text(
        self, keep: set[str], resumed: Mapping[str, Resumed], suspects: list[str], gone: list[str]
    ) -> str:
        parts = [f"adopted {', '.join(sorted(keep))} as active" if keep else "no active resumed"]
        others = sorted(set(resumed) - keep)
        if others:
            parts.append(f"{', '.join(others)} resumed")
        if suspects:
            parts.append(f"{', '.join(sorted(suspects))} silent: isolating before any role moves")
        if gone:
            parts.append(f"{', '.join(gone)} not running")
        return "; ".join(parts)

    def _pooled(self) -> bool:
        r = self.vnf.redundancy
        return r.model == "n+m" and r.spare_start == "on_demand"

    def _watch(self, c: VnfcState) -> list[m.Message]:
        """Health checks start at registration for the SDK; a plain process is watched from its
        start, since its first good check is its registration."""
        return [m.WatchHealth(vnfc=c.name, on=True)] if self.vnf.sdk else []

    def handle(self, event: m.Message, now: float) -> Decision:
        vnfc = self.vnfcs.get(event.vnfc)
        if vnfc is None:
            raise IllegalEvent(f"HA manager of {self.vnf.name}: unknown VNFC in {event!r}")
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is None:
            raise IllegalEvent(f"HA manager of {self.vnf.name}: no rule for {event.name}")
        if self.maintenance and event.name in UNATTENDED:
            return self._unattended(vnfc, event)
        decision: Decision = handler(vnfc, event, now)
        return self._with_address(decision)

    # --- events -------------------------------------------------------------------------------

    def _on_ProcessStarted(self, c: VnfcState, e: m.ProcessStarted, now: float) -> Decision:
        c.pid = e.pid
        if not self.vnf.sdk and c.life is Life.STARTING:
            # Without the SDK the first passing health check is the registration.
            return Decision(
                (m.WatchHealth(vnfc=c.name, on=True),),
                f"{c.name} started; waiting for its first good health check",
            )
        return Decision((), f"{c.name} started as pid {e.pid}; waiting for it to register")

    def _on_StartFailed(self, c: VnfcState, e: m.StartFailed, now: float) -> Decision:
        if e.token and e.token != c.start_token:
            return Decision((), f"ignored a late answer to an earlier start of {c.name}")
        if e.vm_unreachable and c.life is Life.STARTING:
            # The VNFM can see that it cannot reach the VM, not why: it waits for the VIM.
            c.life, c.vm_down = Life.STOPPED, True
            return Decision(
                (), f"{c.name} not started: its VM is unreachable; waiting for its repair"
            )
        return self._fail(c, f"could not start: {e.reason}", now, responsive=False)

    def _on_ComponentRegistered(self, c: VnfcState, e: m.Message, now: float) -> Decision:
        if c.life is not Life.STARTING:
            return Decision((), f"ignored registration of {c.name}: it is {c.life}")
        c.life, c.misses = Life.RUNNING, 0
        role = self._role_for_newcomer()
        commands = [*self._watch(c), self._assign(c, role)]
        return Decision(tuple(commands), f"{c.name} is up; it becomes {role}")

    def _on_HealthCheckPassed(self, c: VnfcState, e: m.Message, now: float) -> Decision:
        if not self.vnf.sdk and c.life is Life.STARTING:
            return self._on_ComponentRegistered(c, e, now)
        c.misses = 0
        if "health checks missed" in self.unattended.get(c.name, ""):  # it came back by itself
            del self.unattended[c.name]
        return Decision((), f"{c.name} healthy")

    def _on_HealthCheckFailed(self, c: VnfcState, e: m.HealthCheckFailed, now: float) -> Decision:
        if c.life is not Life.RUNNING:
            return Decision((), f"ignored health miss of {c.name}: it is {c.life}")
        c.misses += 1
        limit = self.vnf.policies.health_check.failure_threshold
        if c.misses < limit:
            return Decision((), f"{c.name} missed a health check ({c.misses}/{limit}): {e.reason}")
        if c.misses < 2 * limit and c.role is Role.ACTIVE and self._successors_missing(c):
            return Decision(
                (),
                f"{c.name} missed {c.misses} health checks, and so does every successor: a "
                f"common cause (an overloaded machine, the checks' own path) is likelier than "
                f"{c.name}; it keeps serving ({c.misses}/{2 * limit})",
            )
        if c.misses < 2 * limit and c.role is not Role.ACTIVE and self._others_missing(c):
            return Decision(
                (),
                f"{c.name} missed {c.misses} health checks, and so does every other VNFC: a "
                f"common cause is likelier than {c.name}, and isolating it would leave the "
                f"active no successor; it stays {c.role} ({c.misses}/{2 * limit})",
            )
        reason = f"{c.misses} health checks missed in a row ({e.reason})"
        return self._fail(c, reason, now, responsive=False)

    def _successors_missing(self, active: VnfcState) -> bool:
        """Rule 11: every running VNFC that could take over misses its health checks too."""
        waiting = Role.STANDBY if self.vnf.redundancy.model == "2n" else Role.SPARE
        return self._all_missing(active, lambda role: role is waiting)

    def _others_missing(self, successor: VnfcState) -> bool:
        """Rule 11, for a successor: every other running VNFC with a role misses too."""
        return self._all_missing(successor, lambda role: role is not Role.NONE)

    def _all_missing(self, but: VnfcState, counted: Callable[[Role], bool]) -> bool:
        """There are running VNFCs other than ``but`` whose role is ``counted``, and every one
        of them misses its health checks."""
        others = [
            c
            for c in self.vnfcs.values()
            if c is not but and c.life is Life.RUNNING and counted(c.role)
        ]
        return bool(others) and all(c.misses > 0 for c in others)

    def _on_ErrorReported(self, c: VnfcState, e: m.ErrorReported, now: float) -> Decision:
        return self._fail(c, f"reported an error: {e.reason}", now, responsive=True)

    def _on_ProcessExited(self, c: VnfcState, e: m.ProcessExited, now: float) -> Decision:
        c.pid = None
        if c.life in (Life.FAILED, Life.STOPPED, Life.ESCALATED):
            return Decision((), f"{c.name} exited ({e.status}); already {c.life}")
        return self._fail(c, f"exited ({e.status})", now, responsive=False)

    def _on_CleanupDone(self, c: VnfcState, e: m.CleanupDone, now: float) -> Decision:
        if c.life is not Life.FAILED:
            return Decision((), f"ignored cleanup result of {c.name}: it is {c.life}")
        if not e.ok:
            # Rule 1: without confirmed isolation nothing moves; only a wider zone can help.
            c.life = Life.ESCALATED
            revived, revived_text = self._revive_stranded(besides=c.name)
            return Decision(
                (self._escalate(c, f"cleanup failed ({e.detail}); isolation not confirmed"),)
                + tuple(revived),
                f"{c.name} could not be isolated; no role moves, escalated to the VNFM"
                + revived_text,
            )
        old_role = c.role
        if self.switching and self.switching[0] == c.name:  # stepping down, it failed:
            old_role, self.switching = Role.ACTIVE, None  # its standby takes over as usual
        elif self.switching and self.switching[1] == c.name:  # the standby taking over failed:
            self.switching = (self.switching[0], "")  # the old active is made active again
        c.life, c.role, c.confirmed, c.pid = Life.STOPPED, Role.NONE, False, None
        commands: list[m.Message] = []
        successor = None
        if old_role is Role.ACTIVE:
            successor, failover = self._failover(c)
            commands += failover
        revived, revived_text = self._revive_stranded(besides=c.name)
        repair, repair_text = self._repair(c, waiting_for=successor)
        commands += revived + repair
        moved = f"; {successor} takes over" if successor else ""
        return Decision(tuple(commands), f"{c.name} isolated{moved}; {repair_text}{revived_text}")

    def _on_TimerExpired(self, c: VnfcState, e: m.TimerExpired, now: float) -> Decision:
        if e.timer == "restart" and e.token == c.restart_token and self._restartable(c):
            return Decision(self._start(c), f"restart delay of {c.name} over; restarting it")
        if e.timer == "failure-timeout" and e.token == c.restart_token:
            return self._failures_expired(c)
        if e.timer != "start" or e.token != c.start_token or c.life is not Life.STARTING:
            return Decision((), f"{e.timer} deadline of {c.name} passed; nothing to do")
        limit = self.vnf.policies.start_timeout_s
        return self._fail(c, f"did not come up within {limit:g} s", now, responsive=False)

    def _restartable(self, c: VnfcState) -> bool:
        return c.life is Life.STOPPED and not c.vm_down and not c.held

    def _failures_expired(self, c: VnfcState) -> Decision:
        """Pacemaker's failure-timeout: the escalation expires with the failures counted."""
        if c.life is not Life.ESCALATED or c.vm_down or c.role is not Role.NONE:
            return Decision((), f"failure-timeout of {c.name}: it is {c.life}; nothing to do")
        c.intensity.clear()
        c.escalate, c.life = False, Life.STOPPED
        return Decision(self._start(c), f"failures of {c.name} expired; starting it again")

    def _on_VmLost(self, c: VnfcState, e: m.VmLost, now: float) -> Decision:
        already = c.vm_down
        c.vm_down = True
        if c.name in self.awaiting_recovery:
            self.awaiting_recovery.remove(c.name)
        if c.life in (Life.STARTING, Life.RUNNING):
            # Not the VNFC's fault: no escalation count. Gone with its VM, so already isolated.
            c.life = Life.FAILED
            c.last_failure = f"its VM {e.vm} failed"
            commands = [
                m.WatchHealth(vnfc=c.name, on=False),
                *self._service_loss(c, c.role is Role.ACTIVE, c.last_failure),
            ]
            done = self._on_CleanupDone(c, m.CleanupDone(vnfc=c.name, ok=True), now)
            return Decision(tuple(commands) + done.commands, f"VM {e.vm} lost: {done.why}")
        if c.life is Life.ESCALATED and c.role is not Role.NONE:
            # Its cleanup could not be confirmed, so its role stayed; the VM's loss confirms it.
            c.life = Life.FAILED
        if c.life is Life.FAILED:
            done = self._on_CleanupDone(c, m.CleanupDone(vnfc=c.name, ok=True), now)
            return Decision(
                done.commands, f"VM {e.vm} lost, which confirms the isolation: {done.why}"
            )
        state = "already known" if already else f"{c.name} waits for it"
        return Decision((), f"VM {e.vm} lost; {state}; no second failover")

    def _on_StoreFailed(self, c: VnfcState, e: m.StoreFailed, now: float) -> Decision:
        if self.store_error:
            return Decision((), f"checkpoint store still failing: {e.reason}")
        self.store_error = e.reason
        reason = f"checkpoint store failed: {e.reason}; writes are refused"
        return Decision(
            (m.ReportError(vnfc=c.name, service=self.vnf.service.name, reason=reason),),
            f"{c.name} cannot make its state durable ({e.reason}); error reported to the VNFM",
        )

    def _on_StoreRecovered(self, c: VnfcState, e: m.StoreRecovered, now: float) -> Decision:
        if not self.store_error:
            return Decision((), "checkpoint store healthy")
        self.store_error = ""
        return Decision(
            (m.ClearError(vnfc=c.name, service=self.vnf.service.name),),
            f"checkpoint writes of {c.name} are durable again; error cleared",
        )

    def _on_VmRestored(self, c: VnfcState, e: m.VmRestored, now: float) -> Decision:
        c.vm_down = False
        c.intensity.failures.clear()  # the wider fault zone was repaired: count afresh
        if c.life in (Life.STOPPED, Life.ESCALATED):
            return Decision(self._start(c), f"VM {e.vm} is back; restarting {c.name} on it")
        return Decision((), f"VM {e.vm} is back; {c.name} is {c.life}")

    def _on_RoleConfirmed(self, c: VnfcState, e: m.RoleConfirmed, now: float) -> Decision:
        stale = c.role != e.role or (e.role == Role.ACTIVE and e.epoch != self.epoch)
        if stale or c.life is not Life.RUNNING:
            return Decision((), f"ignored stale role confirmation from {c.name}")
        c.confirmed = True
        if self.switching and self.switching[0] == c.name:
            return self._hand_over(c)
        if c.role is not Role.ACTIVE:
            return Decision((), f"{c.name} is {c.role}")
        commands: list[m.Message] = []
        texts = [f"{c.name} is active and serves {self.vnf.service.name}"]
        if self.service_down_reported:
            self.service_down_reported = False
            commands.append(m.ClearError(vnfc=c.name, service=self.vnf.service.name))
            texts.append("error cleared")
        if self.awaiting_recovery:
            names, self.awaiting_recovery = self.awaiting_recovery, []
            names = [n for n in names if not self.vnfcs[n].vm_down]
            for name in names:
                commands += self._restart(self.vnfcs[name])[0]
            texts.append(f"now repairing {', '.join(names)}")
        return Decision(tuple(commands), "; ".join(texts))

    # --- the operator -------------------------------------------------------------------------

    def _on_OperatorRequest(self, c: VnfcState, e: m.OperatorRequest, now: float) -> Decision:
        verb = getattr(self, f"_operator_{e.action}")
        decision: Decision = verb(c, now)
        return decision

    def _operator_clear(self, c: VnfcState, now: float) -> Decision:
        """``crm resource cleanup``: forget its failures; an escalated VNFC is tried again."""
        c.intensity.clear()
        c.escalate, c.last_failure = False, ""
        self.unattended.pop(c.name, None)
        if c.life is not Life.ESCALATED:
            return Decision((), f"failures of {c.name} cleared")
        if c.role is not Role.NONE:  # its isolation was never confirmed: try it again
            c.life = Life.FAILED
            return Decision(
                (m.Cleanup(vnfc=c.name, grace_s=0.0),),
                f"escalation of {c.name} cleared; isolating it again",
            )
        c.life = Life.STOPPED
        if c.held or c.vm_down:
            return Decision((), f"escalation of {c.name} cleared; it stays stopped")
        return Decision(self._start(c), f"escalation of {c.name} cleared; starting it")

    def _operator_restart(self, c: VnfcState, now: float) -> Decision:
        """A planned restart: not a failure; an active hands over to its standby first."""
        c.held = False
        if c.life in (Life.RUNNING, Life.STARTING):
            return self._fail(c, "restart requested", now, responsive=True, count=False)
        return self._operator_start(c, now)

    def _operator_stop(self, c: VnfcState, now: float) -> Decision:
        """Stop it and keep it stopped (Pacemaker's target-role=Stopped) until started."""
        c.held = True
        if c.name in self.awaiting_recovery:
            self.awaiting_recovery.remove(c.name)
        if c.life in (Life.RUNNING, Life.STARTING):
            return self._fail(c, "stop requested", now, responsive=True, count=False)
        return Decision((), f"{c.name} is {c.life}; it stays stopped")

    def _operator_start(self, c: VnfcState, now: float) -> Decision:
        if c.life is Life.ESCALATED:
            raise OperatorRefused(f"{c.name} is escalated: clear it first (nfvha clear)")
        c.held = False
        if c.life is not Life.STOPPED or c.vm_down:
            return Decision((), f"{c.name} is {c.life}; nothing to start")
        return Decision(self._start(c), f"starting {c.name} (requested)")

    def switchover(self, now: float) -> Decision:
        """A planned, lossless handover: the active becomes standby first (it stops serving
        and writing), then the standby, holding every acknowledged write, becomes active."""
        if self.vnf.redundancy.model != "2n":
            raise OperatorRefused(f"switchover needs model 2n, not {self.vnf.redundancy.model}")
        if self.switching or self.maintenance:
            raise OperatorRefused("a switchover is under way" if self.switching else "maintenance")
        ready = {
            role: [c for c in self.vnfcs.values() if c.role is role and c.confirmed]
            for role in (Role.ACTIVE, Role.STANDBY)
        }
        running = {r: [c for c in cs if c.life is Life.RUNNING] for r, cs in ready.items()}
        if not running[Role.ACTIVE] or not running[Role.STANDBY]:
            raise OperatorRefused("switchover needs a serving active and a confirmed standby")
        old, new = running[Role.ACTIVE][0], running[Role.STANDBY][0]
        self.switching = (old.name, new.name)
        return self._with_address(
            Decision(
                (self._assign(old, Role.STANDBY),),
                f"switchover: {old.name} hands over to {new.name}; it steps down first",
            )
        )

    def _hand_over(self, old: VnfcState) -> Decision:
        """The old active confirmed it no longer serves: its successor takes over."""
        assert self.switching is not None
        successor, self.switching = self.switching[1], None
        new = self.vnfcs.get(successor)
        # Failed meanwhile (being isolated, or a new life of it that holds nothing yet).
        if new is None or new.life is not Life.RUNNING or new.role is not Role.STANDBY:
            return Decision(
                (self._assign(old, Role.ACTIVE),),
                f"switchover: its successor failed; {old.name} stays active",
            )
        return Decision(
            (self._assign(new, Role.ACTIVE),),
            f"switchover: {old.name} stepped down; {new.name} becomes active",
        )

    def set_maintenance(self, on: bool, now: float) -> Decision:
        """Pacemaker's maintenance mode: failures are observed but not acted on; when it
        ends, what failed meanwhile is handled from what was observed."""
        if on == self.maintenance:
            return Decision((), f"maintenance already {'on' if on else 'off'}")
        self.maintenance = on
        if on:
            return Decision((), "maintenance on: failures are observed, nothing is done")
        commands: list[Traced] = []
        texts = ["maintenance off"]
        for name, reason in list(self.unattended.items()):
            del self.unattended[name]
            decision = self._fail(self.vnfcs[name], reason, now, responsive=False)
            commands += decision.commands
            texts.append(decision.why)
        return self._with_address(Decision(tuple(commands), "; ".join(texts)))

    def _unattended(self, c: VnfcState, e: m.Message) -> Decision:
        if isinstance(e, m.ProcessExited):
            c.pid = None
            failure = f"exited ({e.status}) during maintenance"
        elif isinstance(e, m.HealthCheckFailed):
            c.misses += 1
            if c.misses < self.vnf.policies.health_check.failure_threshold:
                return Decision((), f"{c.name} missed a health check (maintenance)")
            failure = f"{c.misses} health checks missed during maintenance ({e.reason})"
        else:
            failure = f"reported an error during maintenance: {getattr(e, 'reason', '')}"
        if c.life in (Life.RUNNING, Life.STARTING):
            self.unattended.setdefault(c.name, failure)
        return Decision((), f"maintenance: not acting on {c.name}: {failure}")

    # --- decisions ----------------------------------------------------------------------------

    def _fail(
        self, c: VnfcState, reason: str, now: float, *, responsive: bool, count: bool = True
    ) -> Decision:
        """Isolate it (rule 1); ``count``: a failure (not an operator's planned stop)."""
        if c.life not in (Life.STARTING, Life.RUNNING):
            return Decision((), f"{c.name} {reason}; already {c.life}, handled once")
        was_serving = c.role is Role.ACTIVE
        c.life = Life.FAILED
        if count:
            c.last_failure = reason
        c.escalate = c.intensity.record(now) if count else False
        # A hung or dead process cannot stop gracefully: the grace would only extend the outage.
        grace = self.vnf.policies.cleanup_grace_ms / 1000 if responsive else 0.0
        commands: list[m.Message] = [
            m.WatchHealth(vnfc=c.name, on=False),
            m.Cleanup(vnfc=c.name, grace_s=grace),
        ]
        commands += self._service_loss(c, was_serving, reason)
        return Decision(tuple(commands), f"{c.name} {reason}; isolating it before any role moves")

    def _service_loss(self, c: VnfcState, was_serving: bool, reason: str) -> list[m.Message]:
        """Rule 4: report the interruption once, when the last serving active is lost."""
        if not was_serving or self._serving_actives() or self.service_down_reported:
            return []
        self.service_down_reported = True
        return [m.ReportError(vnfc=c.name, service=self.vnf.service.name, reason=reason)]

    def _failover(self, failed: VnfcState) -> tuple[str | None, list[m.Message]]:
        """Pick the successor of a failed (now isolated) active."""
        model = self.vnf.redundancy.model
        if model == "none":
            return None, []
        wanted = Role.STANDBY if model == "2n" else Role.SPARE
        for c in self.vnfcs.values():
            if c.life is Life.RUNNING and c.role is wanted:
                return c.name, [self._assign(c, Role.ACTIVE)]
        if model == "n+m" and self.vnf.redundancy.spare_start == "on_demand":
            for c in self.vnfcs.values():
                if c.life is Life.STOPPED and c is not failed:
                    return c.name, list(self._start(c))
        return None, []

    def _repair(self, c: VnfcState, waiting_for: str | None) -> tuple[list[m.Message], str]:
        if c.vm_down:
            return [], f"{c.name} is restarted once its VM is repaired"
        if c.escalate:
            c.life = Life.ESCALATED
            reason = f"failed {c.intensity.count} times within {c.intensity.probation_s:g} s"
            return [self._escalate(c, reason), *self._failure_timeout(c)], (
                f"not restarted: {reason}; escalated to the VNFM"
            )
        if c.held:
            return [], f"{c.name} stays stopped (by the operator)"
        r = self.vnf.redundancy
        if r.model == "n+m" and r.spare_start == "on_demand" and waiting_for:
            return [], "it returns to the pool of spares"
        if waiting_for:
            self.awaiting_recovery.append(c.name)
            return [], f"{c.name} is restarted once {waiting_for} serves"
        return self._restart(c)

    def _restart(self, c: VnfcState) -> tuple[list[m.Message], str]:
        """Start it again, after the restart delay its failures so far call for."""
        p = self.vnf.policies
        delay = restart_delay_s(
            c.intensity.count, p.restart_delay_ms, p.restart_backoff_ms, p.restart_delay_max_ms
        )
        if delay <= 0:
            return list(self._start(c)), f"restarting {c.name}"
        c.restart_token += 1
        timer = m.SetTimer(vnfc=c.name, timer="restart", after_s=delay, token=c.restart_token)
        return [timer], f"restarting {c.name} in {delay * 1000:g} ms (failure {c.intensity.count})"

    def _failure_timeout(self, c: VnfcState) -> list[m.Message]:
        timeout = self.vnf.policies.failure_timeout_s
        if timeout is None:
            return []
        c.restart_token += 1
        return [
            m.SetTimer(vnfc=c.name, timer="failure-timeout", after_s=timeout, token=c.restart_token)
        ]

    def _revive_stranded(self, besides: str) -> tuple[list[m.Message], str]:
        """Rule 8: VNFCs waiting for a new active that is not coming are restarted now, and
        on-demand spares are started for actives that are missing with nothing on the way."""
        r = self.vnf.redundancy
        wanted = r.active if r.model == "n+m" else 1
        coming = sum(
            1
            for c in self.vnfcs.values()
            if c.life is Life.STARTING or (c.life is Life.RUNNING and c.role is Role.ACTIVE)
        )
        if coming >= wanted:
            return [], ""
        names = [n for n in self.awaiting_recovery if not self.vnfcs[n].vm_down]
        self.awaiting_recovery = [n for n in self.awaiting_recovery if n not in names]
        if r.model == "n+m" and r.spare_start == "on_demand":
            pool = [
                c.name
                for c in self.vnfcs.values()
                if c.life is Life.STOPPED and not c.vm_down and c.name not in (*names, besides)
            ]
            names += pool[: max(0, wanted - coming - len(names))]
        if not names:
            return [], ""
        commands = [cmd for n in names for cmd in self._start(self.vnfcs[n])]
        return commands, f"; no new active is coming: {', '.join(names)} restarted now"

    def _role_for_newcomer(self) -> Role:
        r = self.vnf.redundancy
        if r.model == "none":
            return Role.ACTIVE
        holders = sum(1 for c in self.vnfcs.values() if c.role is Role.ACTIVE)
        holders += 1 if self.switching else 0  # the active stepping down holds it still
        if r.model == "2n":
            return Role.ACTIVE if holders == 0 else Role.STANDBY
        return Role.ACTIVE if holders < r.active else Role.SPARE

    def _assign(self, c: VnfcState, role: Role) -> m.AssignRole:
        if role is Role.ACTIVE:
            self.epoch += 1
        c.role, c.confirmed = role, False
        return m.AssignRole(vnfc=c.name, role=role.value, epoch=self.epoch)

    def _start(self, c: VnfcState) -> tuple[m.Message, m.Message]:
        """Start it, and a deadline for it to come up: a VNFC hung in its start-up is failed."""
        c.life, c.role, c.confirmed, c.misses = Life.STARTING, Role.NONE, False, 0
        c.start_token += 1
        timeout = self.vnf.policies.start_timeout_s
        return (
            m.StartVnfc(vnfc=c.name, token=c.start_token),
            m.SetTimer(vnfc=c.name, timer="start", after_s=timeout, token=c.start_token),
        )

    def _escalate(self, c: VnfcState, reason: str) -> m.Escalate:
        return m.Escalate(
            vnfc=c.name,
            failures=c.intensity.count,
            probation_s=c.intensity.probation_s,
            reason=reason,
        )

    def _serving_actives(self) -> list[str]:
        return [
            c.name
            for c in self.vnfcs.values()
            if c.role is Role.ACTIVE and c.life is Life.RUNNING and c.confirmed
        ]

    def _model_text(self) -> str:
        r = self.vnf.redundancy
        if r.model == "n+m":
            return f"n+m: {r.active} active, {r.spare} spare ({r.spare_start})"
        return {"2n": "2n: active/standby", "none": "no redundancy"}[r.model]

    def _with_address(self, decision: Decision) -> Decision:
        """Rule 10: the claims and releases of the service's virtual IP that the decision's
        assignments and cleanups call for, each placed just before the command that needs it."""
        vip = self.vnf.service.vip
        if vip is None:
            return decision
        address, out = str(vip), list[Traced]()
        # A VNFC started anew may have died holding it (with no manager to see): first of all.
        for cmd in decision.commands:
            if isinstance(cmd, m.StartVnfc):
                out.append(m.ReleaseAddress(vnfc=cmd.vnfc, address=address))
                if cmd.vnfc == self.address_holder:
                    self.address_holder = None
        for cmd in decision.commands:
            if isinstance(cmd, (m.AssignRole, m.KeepRole)) and cmd.role == "active":
                out.append(m.ClaimAddress(vnfc=cmd.vnfc, address=address))
                self.address_holder = cmd.vnfc
            # Before any cleanup, held or not: a new manager does not know who held it.
            elif isinstance(cmd, m.Cleanup) or (
                isinstance(cmd, m.AssignRole) and cmd.vnfc == self.address_holder
            ):
                assert isinstance(cmd, m.Message)
                out.append(m.ReleaseAddress(vnfc=cmd.vnfc, address=address))
                if cmd.vnfc == self.address_holder:
                    self.address_holder = None
            out.append(cmd)
        return Decision(tuple(out), decision.why)

    # --- views --------------------------------------------------------------------------------

    def active_holders(self) -> list[str]:
        """VNFCs holding the active role, including a failed one not yet isolated (rule 2)."""
        return [c.name for c in self.vnfcs.values() if c.role is Role.ACTIVE]

    def snapshot(self) -> dict[str, object]:
        return {
            "vnf": self.vnf.name,
            "model": self.vnf.redundancy.model,
            "epoch": self.epoch,
            "service": {
                "name": self.vnf.service.name,
                "protocol": self.vnf.service.protocol,
                "address": self.vnf.service.address,
                "vip": str(self.vnf.service.vip) if self.vnf.service.vip else None,
                "vip_holder": self.address_holder,
                "active": self._serving_actives(),
                "up": bool(self._serving_actives()),
            },
            "maintenance": self.maintenance,
            "switching": list(self.switching) if self.switching else None,
            "vnfcs": [
                {
                    "name": c.name,
                    "role": c.role.value,
                    "state": c.life.value,
                    "pid": c.pid,
                    "failures": c.intensity.count,
                    "last_failure": c.last_failure,
                    "held": c.held,
                    "unattended": self.unattended.get(c.name, ""),
                }
                for c in self.vnfcs.values()
            ],
        }
