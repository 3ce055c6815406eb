"""The dispatcher: every manager of a deployment, wired together, with no I/O.

The runtime and the simulator both run this very wiring; they differ only in their drivers
(real processes and sockets, or simulated ones on a virtual clock).

Rules:
1. One event at a time. An event fed while another is being handled (a message one manager
   sends another, a role a plain process confirms) is queued and handled after it, in order.
2. Routing. A manager's command is either a message for another manager (handled here, and
   traced as a message) or a command for a driver (returned, and traced as a command); the
   routing and the managers' scopes are ``core.routing``'s.
3. The fencing coupling. A VNFC being cleaned up may no longer write checkpoints (revoked
   before its cleanup starts); the VNFC made active is the only writer, with its epoch; a
   standby is given the whole state with its assignment.
4. A plain process (``sdk: false``) has no SDK to confirm its role: it serves as soon as it is
   assigned one, so the dispatcher confirms it itself, right after the assignment.
5. The checkpoint store's health is an event for the VNF's manager: ``StoreFailed`` when a
   write could not be made durable, ``StoreRecovered`` when one is durable again.
6. Topology. The VIM exists only for a deployment with hosts; the VNFM always exists (it keeps
   the error reports and escalations; with no VIM it has no VM to report them on).
7. Adoption. A manager that takes over from one that died adopts the VNFCs still running
   (``adopt``) and rebuilds each replica from what they hold, instead of restarting them.

Theory of operation: ``feed(target, event, now)`` and the checkpoint entry points return
``Output``s: trace ``Record``s (without a timestamp: the caller knows the time), driver
commands (``Do``), and checkpoint data-path actions (``Data``). ``execute`` hands them to an
object implementing ``Drivers``, the one interface both worlds implement.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nfvha.config import Deployment, Vnf
from nfvha.core import checkpoint as ck
from nfvha.core import messages as m
from nfvha.core import routing
from nfvha.core import vim as v
from nfvha.core.ha import Decision, HAManager, Resumed
from nfvha.core.messages import Traced
from nfvha.core.placement import Placement, vm_specs
from nfvha.core.vim import Vim
from nfvha.core.vnfm import Vnfm


@dataclass(frozen=True, slots=True)
class Record:
    """A trace record, stamped with the time by whoever writes it."""

    kind: str  # event | command | message | note
    name: str
    src: str = ""
    dst: str = ""
    data: dict[str, Any] | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class Do:
    """A command for a driver, from the manager ``source`` (a VNF's name, or "vim")."""

    source: str
    command: Traced


@dataclass(frozen=True, slots=True)
class Data:
    """A checkpoint data-path action for a VNF's components (ack, refuse, replicate, persist).
    ``state``: with a refusal because the store failed, the durable state to go back to."""

    vnf: str
    action: ck.Action
    state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Assign(Do):
    """An ``AssignRole`` for a component with the SDK, with the whole state it is given."""

    state: dict[str, Any] = field(default_factory=dict)


Output = Record | Do | Data


class Observer(Protocol):
    """Sees every decision and every command as it is taken (the simulator's invariants)."""

    def on_decision(self, target: str, event: Traced, decision: Decision) -> None: ...

    def on_command(self, source: str, command: Traced) -> None: ...


@dataclass(frozen=True, slots=True)
class ManagerClasses:
    """The manager and service classes to run; tests swap in broken ones."""

    ha: type[HAManager] = HAManager
    vim: type[Vim] = Vim
    vnfm: type[Vnfm] = Vnfm
    checkpoints: type[ck.CheckpointService] = ck.CheckpointService


class Drivers(ABC):
    """What the dispatcher needs done, in a real or a simulated world.

    VNFC life-cycle — asynchronous; each answers later by an event fed to the VNF's manager:
    - ``start_vnfc``: ``ProcessStarted`` then ``ComponentRegistered`` (or, for a plain process,
      health checks once watched), or ``StartFailed`` with the command's token.
    - ``cleanup``: ``CleanupDone(ok)``, ok only once no process of the VNFC is left.
    - ``assign_role``: the component takes the role with ``state``; answers ``RoleConfirmed``
      (an active has claimed the service address) or ``ErrorReported``. Not called for plain
      processes: the dispatcher confirms those itself (rule 4).
    - ``watch_health``: start or stop health checks; answers ``HealthCheckPassed/Failed``.
    - ``set_timer``: answers ``TimerExpired`` after the delay.
    - ``service_address``: claim or release a virtual IP, done before the next command runs;
      a claim that fails answers ``ErrorReported`` for the VNFC.
    Infrastructure — the VIM's commands, answered by VIM events (``VmUp``, ``HostFenced``...):
    - ``nfvi_command``.
    Checkpoint data path — fire and forget; durability comes back through the dispatcher's
    ``standby_acked``, ``persisted`` and ``persist_failed``:
    - ``data``: ack, refuse, replicate (to the standby) or persist (to the store).
    Operator:
    - ``alarm``: a VIM alarm for the operator.
    Trace:
    - ``trace_record``: write a record, stamped with the time now.
    """

    @abstractmethod
    def start_vnfc(self, vnf: str, cmd: m.StartVnfc) -> None: ...

    @abstractmethod
    def cleanup(self, vnf: str, cmd: m.Cleanup) -> None: ...

    @abstractmethod
    def assign_role(self, vnf: str, cmd: m.AssignRole, state: dict[str, Any]) -> None: ...

    @abstractmethod
    def watch_health(self, vnf: str, cmd: m.WatchHealth) -> None: ...

    @abstractmethod
    def set_timer(self, vnf: str, cmd: m.SetTimer) -> None: ...

    @abstractmethod
    def service_address(self, vnf: str, cmd: m.ClaimAddress | m.ReleaseAddress) -> None: ...

    @abstractmethod
    def nfvi_command(self, cmd: Traced) -> None: ...

    @abstractmethod
    def data(self, out: Data) -> None: ...

    @abstractmethod
    def alarm(self, cmd: v.Alarm) -> None: ...

    @abstractmethod
    def trace_record(self, rec: Record) -> None: ...


def execute(outputs: list[Output], drivers: Drivers) -> None:
    """Hand each output to the driver primitive for it."""
    for out in outputs:
        if isinstance(out, Record):
            drivers.trace_record(out)
        elif isinstance(out, Data):
            drivers.data(out)
        elif isinstance(out, Assign):
            assert isinstance(out.command, m.AssignRole)
            drivers.assign_role(out.source, out.command, out.state)
        else:
            _do(out, drivers)


def _do(out: Do, drivers: Drivers) -> None:
    cmd = out.command
    if out.source == routing.VIM:
        if isinstance(cmd, v.Alarm):
            drivers.alarm(cmd)
        else:
            drivers.nfvi_command(cmd)
    elif isinstance(cmd, m.StartVnfc):
        drivers.start_vnfc(out.source, cmd)
    elif isinstance(cmd, m.Cleanup):
        drivers.cleanup(out.source, cmd)
    elif isinstance(cmd, m.WatchHealth):
        drivers.watch_health(out.source, cmd)
    elif isinstance(cmd, m.SetTimer):
        drivers.set_timer(out.source, cmd)
    elif isinstance(cmd, (m.ClaimAddress, m.ReleaseAddress)):
        drivers.service_address(out.source, cmd)


@dataclass
class Dispatcher:
    deployment: Deployment
    placement: Placement | None = None
    policies: ManagerClasses = field(default_factory=ManagerClasses)
    epochs: dict[str, int] = field(default_factory=dict)  # VNF -> epoch to continue above
    observer: Observer | None = None
    specs: dict[str, Vnf] = field(init=False)
    owner: dict[str, str] = field(init=False)  # vnfc -> vnf
    ha: dict[str, HAManager] = field(init=False)
    checkpoints: dict[str, ck.CheckpointService] = field(init=False)
    vnfm: Vnfm = field(init=False)
    vim: Vim | None = field(init=False, default=None)
    _queue: deque[tuple[str, Traced]] = field(init=False, default_factory=deque)
    # A new manager taking over (set by its runtime until ``adopt``): news of VMs for the HA
    # managers waits, since they do not know yet which VNFCs run; it is handled after.
    adopting: bool = False
    _held: list[tuple[str, Traced]] = field(init=False, default_factory=list)
    _degraded: dict[str, bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        pol = self.policies
        self.specs = {vnf.name: vnf for vnf in self.deployment.vnfs}
        self.owner = {c.name: vnf.name for vnf in self.deployment.vnfs for c in vnf.vnfcs}
        self.ha = {
            name: pol.ha(spec, epoch=self.epochs.get(name, 0)) for name, spec in self.specs.items()
        }
        self.checkpoints = {n: pol.checkpoints(s.service_mode) for n, s in self.specs.items()}
        p = self.placement
        self.vnfm = pol.vnfm("vnfm", dict(p.vnfc_vm) if p else {}, dict(self.owner))
        if p is not None:
            specs = vm_specs(self.deployment, p)
            window = self.deployment.nfvi.correlation_window_s
            self.vim = pol.vim.build(list(p.hosts), specs, window)

    def continue_epochs(self, epochs: dict[str, int]) -> None:
        """What the VNFs' state stores hold (VNF -> epoch): their next actives go above it."""
        for name, epoch in epochs.items():
            self.ha[name].continue_above(epoch)

    # --- names ------------------------------------------------------------------------------

    def label(self, target: str) -> str:
        """Trace name of a manager. A VNF without redundancy has no HA manager of its own: its
        VNFC life-cycle is the VNFM's (use cases 3, 4, 7, 8, 9), hence ``vnfm:NAME``."""
        if target in (routing.VIM, routing.VNFM):
            return target
        model = self.specs[target].redundancy.model
        return f"vnfm:{target}" if model == "none" else f"ha:{target}"

    # --- entry points -------------------------------------------------------------------------

    def start(self, now: float) -> list[Output]:
        out: list[Output] = []
        for name, mgr in self.ha.items():
            decision = mgr.start(now)
            out.append(Record("note", "ManagerStarted", self.label(name), why=decision.why))
            for cmd in decision.commands:
                self._route(name, cmd, now, out)
        self._release_held()
        return out + self._drain(now)

    def adopt(
        self,
        now: float,
        running: Mapping[str, int],
        resumed: Mapping[str, tuple[Resumed, dict[str, Any]]],
        escalated: Collection[str] = (),
    ) -> list[Output]:
        """Rule 7: take over VNFCs that outlived their manager (ha.py rule 9). ``running``:
        VNFC -> pid of those still running; ``resumed``: VNFC -> (the role and epoch it holds,
        the state it holds); ``escalated``: VNFCs the dead manager had escalated. Each VNF's
        replica is rebuilt from what its VNFCs hold."""
        out: list[Output] = []
        for name, mgr in self.ha.items():
            mine = {c: r for c, (r, _) in resumed.items() if self.owner[c] == name}
            self._rebuild_replica(name, {c: resumed[c] for c in mine})
            pids = {c: pid for c, pid in running.items() if self.owner.get(c) == name}
            held = [c for c in escalated if self.owner.get(c) == name]
            decision = mgr.adopt(now, pids, mine, held)
            out.append(Record("note", "ManagerAdopted", self.label(name), why=decision.why))
            for cmd in decision.commands:
                self._route(name, cmd, now, out)
        self._release_held()
        return out + self._drain(now)

    def _release_held(self) -> None:
        """Adopted (or nothing to adopt): what happened to VMs meanwhile is handled now."""
        self.adopting = False
        self._queue.extend(self._held)
        self._held = []

    def reconfigure(self, spec: Vnf) -> None:
        """A reload: the VNF's new spec, changed only in what applies in place."""
        self.specs[spec.name] = spec
        self.ha[spec.name].reconfigure(spec)

    def operate(self, vnf: str, verb: str, now: float, on: bool = True) -> list[Output]:
        """An operator's verb for a whole VNF: ``switchover`` or ``maintenance`` (``on``).
        Raises ha.OperatorRefused, before anything changes, when it cannot be done now."""
        mgr = self.ha[vnf]
        decision = mgr.switchover(now) if verb == "switchover" else mgr.set_maintenance(on, now)
        out: list[Output] = [
            Record(
                "note",
                "Operator",
                "operator",
                self.label(vnf),
                {"verb": verb, "on": on},
                decision.why,
            )
        ]
        for cmd in decision.commands:
            self._route(vnf, cmd, now, out)
        return out + self._drain(now)

    def _rebuild_replica(
        self, vnf: str, resumed: Mapping[str, tuple[Resumed, dict[str, Any]]]
    ) -> None:
        """The replica of a replicated VNF lived in the manager that died: the active that
        resumes with the highest epoch holds the latest state; else a standby holds every
        acknowledged write. A checkpointed VNF keeps what its store holds."""
        service = self.checkpoints[vnf]
        if service.mode != "replicated" or not resumed:
            return

        def rank(item: tuple[str, tuple[Resumed, dict[str, Any]]]) -> tuple[bool, int]:
            role, epoch = item[1][0]
            return role == "active", epoch

        _, (_, state) = max(resumed.items(), key=rank)
        service.state = dict(state)

    def feed(self, target: str, event: Traced, now: float) -> list[Output]:
        """Handle ``event`` for a manager ("vim", "vnfm" or a VNF's name) and everything it
        causes among the managers."""
        self._queue.append((target, event))
        return self._drain(now)

    def _drain(self, now: float) -> list[Output]:
        out: list[Output] = []
        while self._queue:
            target, event = self._queue.popleft()
            self._handle(target, event, now, out)
        return out

    def _handle(self, target: str, event: Traced, now: float, out: list[Output]) -> None:
        if self.adopting and target in self.ha and isinstance(event, m.VmLost | m.VmRestored):
            self._held.append((target, event))
            out.append(Record("note", "HeldUntilAdopted", self.label(target), "", event.fields()))
            return
        manager = self._manager(target)
        if manager is None:
            return
        decision = manager.handle(event, now)
        if self.observer is not None:
            self.observer.on_decision(target, event, decision)
        out.append(
            Record(
                "event", event.name, event.subject, self.label(target), event.fields(), decision.why
            )
        )
        for cmd in decision.commands:
            self._route(target, cmd, now, out)

    def _manager(self, target: str) -> Any:
        if target == routing.VIM:
            return self.vim
        if target == routing.VNFM:
            return self.vnfm
        return self.ha[target]

    def _route(self, source: str, cmd: Traced, now: float, out: list[Output]) -> None:
        if self.observer is not None:
            self.observer.on_command(source, cmd)
        label = self.label(source)
        if isinstance(cmd, v.Alarm):
            out.append(Record("message", cmd.name, label, "operator", cmd.fields()))
            out.append(Do(source, cmd))
            return
        to = routing.destination(source, cmd, self.owner)
        if to is not None:
            out.append(Record("message", cmd.name, label, self.label(to), cmd.fields()))
            if to != routing.VIM or self.vim is not None:
                self._queue.append((to, cmd))
            return
        out.append(Record("command", cmd.name, label, cmd.subject, cmd.fields()))
        if source == routing.VIM:
            out.append(Do(source, cmd))
        else:
            self._couple(source, cmd, out)

    def _couple(self, vnf: str, cmd: Traced, out: list[Output]) -> None:
        """Rules 3 and 4: what the checkpoint service and plain processes need of a command."""
        service = self.checkpoints[vnf]
        if isinstance(cmd, m.KeepRole):  # adopted: it holds the role already; only fencing
            if cmd.role == "active":
                self._data(vnf, service.grant(cmd.vnfc, cmd.epoch), out)
            return
        if isinstance(cmd, m.Cleanup):
            self._data(vnf, service.revoke(cmd.vnfc), out)
        if not isinstance(cmd, m.AssignRole):
            out.append(Do(vnf, cmd))
            return
        if cmd.role == "active":
            self._data(vnf, service.grant(cmd.vnfc, cmd.epoch), out)
        elif cmd.role == "standby":
            service.attach_standby(cmd.vnfc)
            self._data(vnf, [], out)
        if self.specs[vnf].sdk:
            out.append(Assign(vnf, cmd, dict(service.state)))
        else:
            self._queue.append(
                (vnf, m.RoleConfirmed(vnfc=cmd.vnfc, role=cmd.role, epoch=cmd.epoch))
            )

    # --- checkpoint data path ---------------------------------------------------------------

    def write(
        self,
        vnfc: str,
        epoch: int,
        request: int,
        updates: dict[str, Any],
        now: float,
        version: int | None = None,
    ) -> list[Output]:
        vnf = self.owner[vnfc]
        out: list[Output] = []
        service = self.checkpoints[vnf]
        self._data(vnf, service.write(vnfc, epoch, request, updates, version), out)
        return out + self._drain(now)

    def offered(self, vnfc: str, version: int, state: dict[str, Any]) -> None:
        """``vnfc`` handed back the state it holds (see CheckpointService.offered)."""
        self.checkpoints[self.owner[vnfc]].offered(version, state)

    def standby_acked(self, vnfc: str, version: int, now: float) -> list[Output]:
        vnf = self.owner[vnfc]
        out: list[Output] = []
        self._data(vnf, self.checkpoints[vnf].standby_acked(vnfc, version), out)
        return out + self._drain(now)

    def standby_gone(self, vnf: str, standby: str, now: float) -> list[Output]:
        """A replicate could not be sent: the standby is not connected."""
        out: list[Output] = []
        self._data(vnf, self.checkpoints[vnf].drop_standby(standby), out)
        return out + self._drain(now)

    def persisted(self, vnf: str, version: int, state: dict[str, Any], now: float) -> list[Output]:
        service = self.checkpoints[vnf]
        failing = service.store_error
        out: list[Output] = []
        self._data(vnf, service.persisted(version, state), out)
        writer = service.writer[0] if service.writer else None
        if failing and writer:
            self._queue.append((vnf, m.StoreRecovered(vnfc=writer)))
        return out + self._drain(now)

    def persist_failed(self, vnf: str, reason: str, now: float) -> list[Output]:
        """Rule 5. Every pending write is refused with the durable state; one trace record per
        refused batch, not per write (a full disk under load refuses thousands)."""
        service = self.checkpoints[vnf]
        failing = service.store_error
        refused = service.persist_failed(reason)
        out: list[Output] = [Data(vnf, r, dict(service.state)) for r in refused]
        if refused:
            out.append(
                Record(
                    "message",
                    "CheckpointRefused",
                    self.label(vnf),
                    refused[0].vnfc,
                    {"writes": len(refused), "store_error": reason},
                    refused[0].reason,
                )
            )
        writer = service.writer[0] if service.writer else (refused[0].vnfc if refused else None)
        if writer and not failing:
            self._queue.append((vnf, m.StoreFailed(vnfc=writer, reason=reason)))
        return out + self._drain(now)

    def _data(self, vnf: str, actions: list[ck.Action], out: list[Output]) -> None:
        """The data path is not traced per write (docs/adr/001); refusals and changes of
        redundancy (degraded or not) are."""
        service = self.checkpoints[vnf]
        if service.degraded != self._degraded.get(vnf, False):
            self._degraded[vnf] = service.degraded
            why = (
                "no standby holds the state; writes are acknowledged from the manager's replica"
                if service.degraded
                else "a standby holds the state again"
            )
            name = "Degraded" if service.degraded else "Redundant"
            out.append(Record("note", name, self.label(vnf), "", {"version": service.version}, why))
        for action in actions:
            if isinstance(action, ck.Refuse):
                out.append(
                    Record(
                        "message",
                        "CheckpointRefused",
                        self.label(vnf),
                        action.vnfc,
                        None,
                        action.reason,
                    )
                )
            out.append(Data(vnf, action))
