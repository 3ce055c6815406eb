"""The simulated world and its drivers, on a virtual clock, around the unchanged managers.

Time is virtual (seconds, as the managers expect); nothing here reads a clock or sleeps. Every
scheduled effect carries the incarnation (``gen``) of the entity it acts on, so an effect meant
for a process that has since died and restarted is dropped, as a real one would be.

What is observed how, as in the runtime (which watches every VNFC by pidfd on this machine):
- a VNFC that dies, alone or with its crashed VM or host, while reachable: its exit is
  reported at once;
- a VNFC that hangs, or whose VM hangs or link is cut: its health checks miss;
- a guest that dies on a live host: its host agent reports it at once;
- a frozen VM, a dead host, a cut link: their heartbeats stop.

The manager can die (``manager-crash``): the dispatcher with every manager in it. Until a new
one leads (after the fault's ``duration``, by default ``Latencies.takeover``) timers, health
checks, checkpoint writes and every event for the managers go nowhere, and whatever was in
flight to the dead one is lost with it (each such delivery carries the manager's incarnation,
``mgen``). The VNFCs keep running with
their roles; each holds its role on a lease (``policies.role_lease_ms``, counted from the
crash, or from an assignment taken after it) and an SDK component whose lease expires fences
itself (role none: it stops serving), unless it is hung. Writes in flight fail and the
component's state goes back to what was acknowledged (the SDK's undo). The new manager is a
new ``Dispatcher`` built exactly like the first, a checkpointed VNF's store loaded from its
disk (as the runtime does); the SDK components that can (alive, responsive, connected before)
resume their sessions ``Latencies.resume`` later, with the role, epoch and state they hold,
and the manager adopts (``Dispatcher.adopt``, with the escalations the dead one recorded) once
all have, or after one lease. With hosts, the host and guest agents outlive the manager too and
reconnect (20 ms, backing off to 50 ms); their heartbeats are heard by nobody meanwhile. The new
manager first starts its NFVI as the runtime's driver does: it adopts the agents that say hello
again within ``ADOPT_WAIT_S`` (at once when all do), removes the hosts and VMs whose agent does
not (what ran there dies unseen) and boots them anew on their placement's hosts; its VIM is
built fresh (every host and VM up where the placement puts them, ``zone_host``); only then do
the VNFCs resume and get adopted. A new manager deletes the dead one's record (the VNFC groups
and the escalations) and writes it again when it adopts or starts VNFCs: a manager that dies in
between leaves nothing to adopt, and the next removes everything and starts afresh.

How a write is acknowledged is the VNF's ``state_sync`` (``Vnf.sync``), as in the SDK:
- ``manager``: through the manager's checkpoint service (replicated to the standby, or logged).
- ``direct`` (2n): the manager tells the active where its standby is at each role assignment
  (``Latencies.message``; with the assignment when the active is the one assigned); the active
  links to that standby and sends it the whole state (the sync); once the standby confirms it,
  each write goes peer to peer: one ``message`` to the standby, which applies it unless the
  epoch is older than the newest it has seen or it is active itself, one back, acknowledged.
  A refusal fences the writer (role none; it tells the manager when it reconnects). Until a
  link is ready, and after it ends (the standby died), writes go through the manager as in
  ``manager`` (the writes the standby had not confirmed as one write). Peer writes go on while
  no manager runs; the manager's replica lags, and a component assigned a role keeps its own
  state when it is newer than the one the assignment carries.
- ``shared_storage`` / ``store``: the VNF's store (``SimStore``: the shared log or etcd key,
  outliving every process and manager) holds (epoch, version). An active claims it with its
  epoch when it takes the role (one ``Latencies.store`` more; refused if the store holds a
  newer epoch) and takes the store's version; each write is durable ``Latencies.store`` later,
  one after another (``slow-disk`` x50, ``disk-full`` fails it), unless the store's epoch is no
  longer the writer's: then it is refused and the writer fences itself. The manager is not in
  the path (its service refuses writes) and writes go on while none runs.
With ``direct``, acknowledged writes may be held by the components alone: when the last one
holding them dies they are lost (a double failure: ``AcknowledgedStateLost``, as with the
manager's replica); when the manager kills that last one itself while it still answers (a
promotion that failed), ``AcknowledgedStateDestroyed`` (``destroyed``: a known gap).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nfvha.config import Deployment
from nfvha.core import checkpoint as ck
from nfvha.core import dispatcher as d
from nfvha.core import messages as m
from nfvha.core import routing
from nfvha.core import vim as v
from nfvha.core.dispatcher import Dispatcher, ManagerClasses
from nfvha.core.ha import Decision, Life, Resumed, Role
from nfvha.core.heartbeat import AgentKind, Heartbeats
from nfvha.core.messages import Traced
from nfvha.core.placement import plan
from nfvha.core.watchdog import VimLeases
from nfvha.sim.faults import Fault


@dataclass(frozen=True, slots=True)
class Latencies:
    """Seconds. Defaults are this machine's measured medians (bench/results)."""

    fork: float = 0.0015  # StartVnfc to ProcessStarted
    spawn: float = 0.135  # ProcessStarted to registered (the component's start-up)
    exit_seen: float = 0.003  # death to its exit being reported
    cleanup: float = 0.0004
    assign: float = 0.0011  # AssignRole to RoleConfirmed
    message: float = 0.00005  # one hop between managers or to a component
    vm_boot: float = 0.15
    host_boot: float = 0.3
    fence: float = 0.001
    fsync: float = 0.002
    rpc_timeout: float = 2.0
    # A manager that died: until the hot standby manager leads ...
    takeover: float = 0.013
    # ... and from then until the running components' SDKs have reconnected and resumed
    # (bench/results/manager.json: takeover median 12.9 ms, kill to adopted 29.3 ms)
    resume: float = 0.016
    # shared_storage / store: one write to the VNF's store until it is durable, and a claim.
    # Taken as one fsync: the shared log's fdatasync; a local etcd's commit is one fsync of
    # its write-ahead log too (a remote store adds its round trip: set it in a latency file).
    store: float = 0.002


DEFAULT_LATENCIES = Latencies()
DEFAULT_CLASSES = ManagerClasses()


@dataclass(slots=True)
class SimHost:
    name: str
    alive: bool = True
    link: bool = True
    gen: int = 0
    cut_at: float = 0.0  # when its link was last cut: its guests' last lease was answered then

    @property
    def reachable(self) -> bool:
        return self.alive and self.link


@dataclass(slots=True)
class SimVm:
    name: str
    host: str
    alive: bool = True
    frozen: bool = False
    gen: int = 0
    vnfcs: list[str] = field(default_factory=list)
    answered: bool = True  # watchdog: a manager answers its heartbeats (its lease renewed)
    lease_gen: int = 0  # bumped when answers stop or resume: a pending self-fence is stale


@dataclass(slots=True)
class SimVnfc:
    name: str
    vnf: str
    vm: str | None  # None: a plain process on the manager's machine (a deployment without hosts)
    alive: bool = False
    hung: bool = False
    role: str = "none"  # what the component itself believes
    version: int = 0  # the checkpoint version it holds
    gen: int = 0
    watched: bool = False
    watch_gen: int = 0
    epoch: int = 0  # of the role it holds
    registered: bool = False  # its SDK has a session (or had one, with a manager that died)
    lease_gen: int = 0  # bumped whenever it hears from a manager: an older lease check is moot
    resumed_mgen: int = -1  # the manager it resumed its session with
    undo: dict[int, int] = field(default_factory=dict)  # write in flight -> version before it
    via_manager: set[int] = field(default_factory=set)  # those in flight through a manager
    covers: dict[int, int] = field(default_factory=dict)  # a manager write for several -> 1st
    # direct sync, the active's side: the standby the manager named, its link to it (to that
    # incarnation, ``peer_sgen``), and whether the standby confirmed the whole state
    peer_address: str | None = None
    peer: str | None = None
    peer_sgen: int = 0
    peer_gen: int = 0  # the link's incarnation: replies on an older link are moot
    peer_ready: bool = False
    peer_synced: int = 0  # the version the sync sent
    fence_epoch: int = 0  # the standby's side: the newest epoch it has seen
    assigned_at: float = 0.0  # when the last assignment sent to it is taken
    # shared_storage / store: the writes being made durable, and those waiting for them
    flushing: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    queued_epoch: int = 0


@dataclass(slots=True)
class SimStore:
    """A VNF's shared log or etcd key (state_sync shared_storage, store)."""

    epoch: int = 0  # claimed by the newest active: a write with another epoch is refused
    version: int = 0  # the last durable write


EXTERNAL = ("shared_storage", "store")
# The runtime's NFVI driver and agents (drivers/nfvi.py, agents/agent.py): a new manager waits
# this long for the agents of a dead one to say hello again; they retry every 20 ms, doubling
# up to 50 ms.
ADOPT_WAIT_S = 1.0
RETRY_FIRST_S, RETRY_MAX_S = 0.020, 0.050


class Simulation(d.Drivers):
    """The simulated world: it implements the dispatcher's drivers, exactly as the runtime
    does, and builds exactly the runtime's topology (no hosts: plain processes, no VIM)."""

    def __init__(
        self,
        deployment: Deployment,
        seed: int,
        faults: Sequence[Fault] = (),
        *,
        latencies: Latencies = DEFAULT_LATENCIES,
        policies: ManagerClasses = DEFAULT_CLASSES,
        checkpoint_every: float | None = 0.05,
        record: bool = True,
        observers: tuple[Any, ...] = (),
    ) -> None:
        self.deployment, self.lat, self.policies = deployment, latencies, policies
        self.seed = seed  # the schedule's seed, kept with the run: nothing here is random
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = 0
        self._feeding: list[tuple[str, Traced]] = []
        self.record = record
        self.records: list[dict[str, Any]] = []
        self.observers = list(observers)
        self.checkpoint_every = checkpoint_every
        self.events = 0
        self._started = False
        # The checkpoint store's disk (VNF -> version, epoch, state): it outlives the manager.
        self.disk: dict[str, tuple[int, int, dict[str, Any]]] = {}
        self.mgen = 0  # the manager's incarnation: deliveries to an older one are lost
        self.leading = True  # a manager runs (False from its crash until a new one leads)
        self.adopting = False  # a new manager waits for the running VNFCs to resume
        self._running: dict[str, int] = {}
        self._resumed: dict[str, tuple[Resumed, dict[str, Any]]] = {}
        # With hosts: a new manager's NFVI driver waits for the agents and boots what is missing
        # (from its takeover until its NFVI is up; it hears nothing from the agents meanwhile).
        self.nfvi_starting = False
        self.crashed_at = 0.0  # the last manager crash: the agents' reconnection clock
        self._listening = 0.0  # when the new manager's NFVI socket listens
        # The runtime's record of the running manager (RUNTIME_DIR/vnfcs.json): whether it
        # lists the VNFC groups (deleted when a new manager starts, written again when it
        # adopts or starts VNFCs), and the VNFCs escalated (a new manager keeps them escalated)
        self.recorded = True
        self.escalated: list[str] = []
        self._carried: list[str] = []  # the escalations the adopting manager was handed
        self.dispatcher = self._new_dispatcher()
        self.placement = self.dispatcher.placement
        nfvi = deployment.nfvi
        self.heartbeats = Heartbeats(nfvi.heartbeat_interval_ms / 1000, nfvi.heartbeat_misses)
        # Watchdog fencing (core/watchdog.py, the rules the runtime's agents and VIM follow): a
        # guest cut off for its lease kills its VNFCs and exits; the VIM counts a VM it cannot
        # reach isolated only after that lease, from its own view of it.
        self.watchdog = bool(deployment.hosts) and nfvi.fencing == "watchdog"
        self.leases = VimLeases(nfvi.agent_lease_ms / 1000)
        self._build_world()
        self.acked = dict.fromkeys(self.specs, 0)
        self.sync = {vnf.name: vnf.sync for vnf in deployment.vnfs}
        self.stores = {vnf: SimStore() for vnf, sync in self.sync.items() if sync in EXTERNAL}
        # Virtual IPs on the nodes, as the kernel holds them: VNF -> the VNFCs whose node has
        # it (a node keeps an address until it is released, dead process or not).
        self.vip_holders: dict[str, set[str]] = {v.name: set() for v in deployment.vnfs}
        # (when, VNF, acknowledged, kept): acknowledged writes lost with every copy of them
        self.lost: list[tuple[float, str, int, int]] = []
        # ... and those the manager destroyed itself (direct sync: see _count_copies)
        self.destroyed: list[tuple[float, str, int, int]] = []
        self.slow_disk_until: dict[str, float] = {}
        self.disk_full_until: dict[str, float] = {}
        self.port_taken_until: dict[str, float] = {}
        for fault in faults:
            self.at(fault.at, self.inject, fault)

    # --- set-up -------------------------------------------------------------------------------

    def _build_world(self) -> None:
        p = self.placement
        self.hosts = {h: SimHost(h) for h in p.hosts} if p else {}
        self.vms = {vm: SimVm(vm, host) for vm, host in p.vm_host.items()} if p else {}
        # Where the NFVI driver believes each VM's zone (cgroup) is: where it booted or promoted
        # it; a new manager's driver, the placement's host (``_await_agents``).
        self.zone_host = {vm: host for vm, host in p.vm_host.items()} if p else {}
        self.vms_by_host: dict[str, set[str]] = {}
        for vm in self.vms.values():
            self.vms_by_host.setdefault(vm.host, set()).add(vm.name)
        self.vnfcs: dict[str, SimVnfc] = {}
        for vnf in self.deployment.vnfs:
            for c in vnf.vnfcs:
                vm = p.vnfc_vm[c.name] if p else None
                self.vnfcs[c.name] = SimVnfc(c.name, vnf.name, vm)
                if vm is not None:
                    self.vms[vm].vnfcs.append(c.name)

    # --- the managers, all in the dispatcher --------------------------------------------------

    def _new_dispatcher(self) -> Dispatcher:
        """The managers, built as the runtime builds them: a checkpointed VNF's store is loaded
        from its disk (its version, state and epoch)."""
        epochs = {vnf: epoch for vnf, (_, epoch, _) in self.disk.items()}
        dispatcher = Dispatcher(
            self.deployment, plan(self.deployment), self.policies, epochs=epochs, observer=self
        )
        for vnf, (version, _, state) in self.disk.items():
            service = dispatcher.checkpoints[vnf]
            service.version, service.state = version, dict(state)
            service.durable = (version, dict(state))
        return dispatcher

    @property
    def specs(self) -> dict[str, Any]:
        return self.dispatcher.specs

    @property
    def owner(self) -> dict[str, str]:
        return self.dispatcher.owner

    @property
    def ha(self) -> dict[str, Any]:
        return self.dispatcher.ha

    @property
    def ckpt(self) -> dict[str, ck.CheckpointService]:
        return self.dispatcher.checkpoints

    @property
    def vim(self) -> Any:
        return self.dispatcher.vim

    @property
    def vnfm(self) -> Any:
        return self.dispatcher.vnfm

    def label(self, target: str) -> str:
        return self.dispatcher.label(target)

    def on_decision(self, target: str, event: Traced, decision: Decision) -> None:
        self.events += 1
        for obs in self.observers:
            obs.on_decision(self, target, event, decision)

    def on_command(self, source: str, command: Traced) -> None:
        for obs in self.observers:
            obs.on_command(self, source, command)

    # --- the clock ----------------------------------------------------------------------------

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run(self, until: float) -> None:
        """Start every VNF, then play events until ``until`` (virtual seconds)."""
        if self.now == 0.0 and not self.records and self.events == 0 and not self._started:
            self._started = True
            d.execute(self.dispatcher.start(self.now), self)
        while self._queue and self._queue[0][0] <= until:
            when, _, fn, args = heapq.heappop(self._queue)
            self.now = when
            fn(*args)
            for obs in self.observers:
                obs.after_step(self)
        self.now = max(self.now, until)

    def feed(self, target: str, event: Traced) -> None:
        if self.leading:  # else nobody hears it
            d.execute(self.dispatcher.feed(target, event, self.now), self)

    def _tell(self, delay: float, target: str, event: Traced) -> None:
        """An event for the managers, ``delay`` from now; lost if they die meanwhile."""
        self.after(delay, self._deliver, self.mgen, target, event)

    def _deliver(self, mgen: int, target: str, event: Traced) -> None:
        if mgen == self.mgen:
            self.feed(target, event)

    # --- drivers (the dispatcher's interface) -------------------------------------------------

    def trace_record(self, rec: d.Record) -> None:
        self._rec(rec.kind, rec.name, rec.src, rec.dst, rec.data or {}, rec.why)
        if rec.name == "Escalate":  # recorded for a manager that takes over (as the runtime)
            names = {e.vnfc for e in self.vnfm.escalations} | {(rec.data or {}).get("vnfc", "")}
            self.escalated = sorted(n for n in names if n in self.owner)

    def start_vnfc(self, vnf: str, cmd: m.StartVnfc) -> None:
        self._do_StartVnfc(vnf, cmd)

    def cleanup(self, vnf: str, cmd: m.Cleanup) -> None:
        self._pair(vnf)  # as the runtime: a standby being isolated is no peer any more
        self._do_Cleanup(vnf, cmd)

    def assign_role(self, vnf: str, cmd: m.AssignRole, state: dict[str, Any]) -> None:
        version = int(state.get("n", 0))  # the assignment carries the whole state
        c = self.vnfcs[cmd.vnfc]
        claim = self.lat.store if cmd.role == "active" and vnf in self.stores else 0.0
        c.assigned_at = self.now + self.lat.assign + claim
        self.after(self.lat.assign + claim, self._take_role, c, c.gen, cmd, version, self.mgen)
        self._pair(vnf)

    def watch_health(self, vnf: str, cmd: m.WatchHealth) -> None:
        self._do_WatchHealth(vnf, cmd)

    def set_timer(self, vnf: str, cmd: m.SetTimer) -> None:
        expired = m.TimerExpired(vnfc=cmd.vnfc, timer=cmd.timer, token=cmd.token)
        self._tell(cmd.after_s, vnf, expired)

    def service_address(self, vnf: str, cmd: m.ClaimAddress | m.ReleaseAddress) -> None:
        if isinstance(cmd, m.ClaimAddress):
            self.vip_holders[vnf].add(cmd.vnfc)
        else:
            self.vip_holders[vnf].discard(cmd.vnfc)
        c = self.vnfcs[cmd.vnfc]
        if not self.specs[vnf].sdk and c.alive and c.role != "none":
            c.role = self._plain_role(vnf, cmd.vnfc)

    def _plain_role(self, vnf: str, vnfc: str) -> str:
        """A plain process serves as soon as it runs; behind a virtual IP, only while its node
        holds the address (a hot standby runs, but receives nothing)."""
        if self.specs[vnf].service.vip is None or vnfc in self.vip_holders[vnf]:
            return "active"
        return "standby"

    def nfvi_command(self, cmd: Traced) -> None:
        handler = getattr(self, f"_do_{cmd.name}", None)
        if handler is not None:
            handler(routing.VIM, cmd)

    def alarm(self, cmd: v.Alarm) -> None:
        pass  # the trace has it; nobody operates a simulation

    def data(self, out: d.Data) -> None:
        action = out.action
        if isinstance(action, ck.Ack):
            self.acked[out.vnf] = max(self.acked[out.vnf], action.request)
            self._resolved(self.vnfcs[action.vnfc], action.request)
        elif isinstance(action, ck.Refuse):  # the SDK goes back to the state before the write
            c = self.vnfcs[action.vnfc]
            first = c.covers.pop(action.request, action.request)
            if first in c.undo:
                c.version = c.undo[first]
                c.undo = {r: v for r, v in c.undo.items() if r < first}
            c.via_manager = {r for r in c.via_manager if r < first}
        elif isinstance(action, ck.Replicate):
            self.after(self.lat.message, self._replicate, out.vnf, action, self.mgen)
        elif isinstance(action, ck.Persist):
            slow = 50.0 if self.slow_disk_until.get(out.vnf, -1.0) > self.now else 1.0
            self.after(self.lat.fsync * slow, self._persisted, out.vnf, action, self.mgen)

    def _do_StartVnfc(self, vnf: str, cmd: m.StartVnfc) -> None:
        c = self.vnfcs[cmd.vnfc]
        vm = self.vms[c.vm] if c.vm else None
        if vm is not None and not self._vm_reachable(vm):
            delay = self.lat.rpc_timeout if vm.alive else self.lat.message
            event = m.StartFailed(
                vnfc=c.name,
                reason=f"VM {vm.name} unreachable",
                vm_unreachable=True,
                token=cmd.token,
            )
            self._tell(delay, vnf, event)
            return
        c.gen += 1
        self.after(self.lat.fork, self._process_started, c, c.gen, self.mgen)

    def _process_started(self, c: SimVnfc, gen: int, mgen: int) -> None:
        if gen != c.gen or mgen != self.mgen or not self.placed_reachable(c):
            return  # (a fork in progress dies with its manager)
        c.alive, c.hung, c.role, c.version, c.epoch = True, False, "none", 0, 0
        c.registered, c.undo, c.via_manager, c.covers = False, {}, set(), {}
        c.peer_address, c.peer, c.peer_ready, c.fence_epoch = None, None, False, 0
        c.flushing, c.queued = [], []
        self.feed(c.vnf, m.ProcessStarted(vnfc=c.name, pid=gen))
        self.after(self.lat.spawn, self._registered, c, gen, mgen)

    def _registered(self, c: SimVnfc, gen: int, mgen: int) -> None:
        """The SDK registers; a plain process is up at its first passing health check. With the
        manager that started it gone, nobody hears it: the next one finds it silent."""
        if gen != c.gen or not c.alive or not self._responsive(c):
            return
        heard = mgen == self.mgen and self.leading
        if self.specs[c.vnf].sdk:
            if heard:
                c.registered = True
                self.feed(c.vnf, m.ComponentRegistered(vnfc=c.name))
        else:
            c.role = self._plain_role(c.vnf, c.name)
            if c.watched and heard:
                self.feed(c.vnf, m.HealthCheckPassed(vnfc=c.name))

    def _do_Cleanup(self, vnf: str, cmd: m.Cleanup) -> None:
        c = self.vnfcs[cmd.vnfc]
        host = self.hosts[self.vms[c.vm].host] if c.vm else None
        if host is not None and c.alive and host.alive and not host.link:
            done = m.CleanupDone(vnfc=c.name, ok=False, detail="its host is unreachable")
            self._tell(self.lat.rpc_timeout, vnf, done)
            return
        self.after(self.lat.cleanup, self._cleaned_up, vnf, c, self.mgen)

    def _cleaned_up(self, vnf: str, c: SimVnfc, mgen: int) -> None:
        """The kill takes effect when it is confirmed, not when it is asked for (a cleanup in
        progress dies with its manager)."""
        if mgen != self.mgen:
            return
        self._kill(c, seen=False, isolated=c.alive and self._responsive(c))
        self.feed(vnf, m.CleanupDone(vnfc=c.name, ok=True))

    def _take_role(self, c: SimVnfc, gen: int, cmd: m.AssignRole, version: int, mgen: int) -> None:
        """The component takes the role it was sent, even if the manager that sent it has died
        since (the lease then runs from now); only its confirmation is lost."""
        if gen != c.gen or not c.alive or not self._responsive(c) or c.resumed_mgen > mgen:
            return
        heard = mgen == self.mgen and self.leading
        sync = self.sync[c.vnf]
        if cmd.role == "active" and sync in EXTERNAL:  # it claims the store first
            refusal = self._claim(c.vnf, cmd.epoch)
            if refusal:
                if heard:
                    reason = f"could not take role active: {refusal}"
                    self.feed(c.vnf, m.ErrorReported(vnfc=c.name, reason=reason))
                return
            version = self.stores[c.vnf].version  # and takes the store's state
        if cmd.role == "active" and self.port_taken_until.get(c.vnf, -1.0) > self.now:
            reason = "could not take role active: address already in use"
            if heard:  # the SDK's error hands back what it holds (the only copy, maybe)
                self.dispatcher.offered(c.name, c.version, {"n": c.version})
                self.feed(c.vnf, m.ErrorReported(vnfc=c.name, reason=reason))
            return
        if sync == "direct" and c.version > version:
            version = c.version  # it holds newer, synced peer to peer: the manager's copy lags
        c.role, c.version, c.epoch, c.undo = cmd.role, version, cmd.epoch, {}
        c.via_manager, c.covers = set(), {}
        c.fence_epoch = max(c.fence_epoch, cmd.epoch)
        c.lease_gen += 1
        if heard:
            self.feed(c.vnf, m.RoleConfirmed(vnfc=c.name, role=cmd.role, epoch=cmd.epoch))
        else:
            self._lease_runs(c)
        self._link_peer(c)
        if cmd.role == "active" and self.checkpoint_every and self.ckpt[c.vnf].mode != "none":
            self.after(self.checkpoint_every, self._write, c, gen, cmd.epoch)

    def _do_WatchHealth(self, vnf: str, cmd: m.WatchHealth) -> None:
        c = self.vnfcs[cmd.vnfc]
        c.watched, c.watch_gen = cmd.on, c.watch_gen + 1
        if cmd.on and not (c.alive and self._responsive(c)):
            self._health_misses(c)

    def _health_misses(self, c: SimVnfc) -> None:
        """A dead or unresponsive VNFC misses one check per interval for as long as it is
        watched and silent, as the runtime's monitor reports them (threshold misses fail it;
        rule 11 may hold it up to twice that). Its checks run from the manager's side, so this
        holds whatever killed or froze it."""
        if c.watched:
            self._next_miss(c, c.watch_gen, c.gen, 1)

    def _next_miss(self, c: SimVnfc, watch_gen: int, gen: int, k: int) -> None:
        interval = self.specs[c.vnf].policies.health_check.interval_ms / 1000
        self.after(interval, self._miss, c, watch_gen, gen, k)

    def _miss(self, c: SimVnfc, watch_gen: int, gen: int, k: int) -> None:
        silent = not c.alive or not self._responsive(c)
        if c.watched and watch_gen == c.watch_gen and gen == c.gen and silent:
            self.feed(c.vnf, m.HealthCheckFailed(vnfc=c.name, reason=f"miss {k}"))
            self._next_miss(c, watch_gen, gen, k + 1)

    # --- the manager's death, and a new manager ------------------------------------------------

    def _fault_manager_crash(self, f: Fault) -> None:
        if not self.leading and not self.nfvi_starting:
            return  # none to crash; the next one leads as planned
        self.mgen += 1
        self.leading, self.adopting, self.nfvi_starting = False, False, False
        self.crashed_at = self.now  # the agents lose their connection: they reconnect
        for vm in self.vms.values():
            self._answers_stop(vm)
        for c in self.vnfcs.values():
            c.watched, c.watch_gen = False, c.watch_gen + 1  # its health checks die with it
            if c.via_manager:  # writes in flight through it fail: back to what was acknowledged
                self._fail_pending(c)  # (writes peer to peer or to a store go on)
            if c.alive and c.registered:
                self._lease_runs(c)
        self.after(f.duration or self.lat.takeover, self._takeover)

    def _lease_runs(self, c: SimVnfc) -> None:
        """No manager renews its lease from now on."""
        if self.specs[c.vnf].sdk:
            lease = self.specs[c.vnf].policies.role_lease_ms / 1000
            self.after(lease, self._lease_expired, c, c.gen, c.lease_gen)

    def _lease_expired(self, c: SimVnfc, gen: int, lease_gen: int) -> None:
        """The SDK's watchdog: an active stops serving, any role becomes none (a hung process
        runs no watchdog)."""
        if gen != c.gen or lease_gen != c.lease_gen or not c.alive or c.hung or c.role == "none":
            return
        self._note("LeaseExpired", c.name, f"heard from no manager: no longer {c.role}")
        c.role = "none"
        self._link_peer(c)  # an active no longer: no more direct writes

    def _takeover(self) -> None:
        """A new manager leads (its start, as the runtime's ``Engine.start``): it records
        again at once what the dead one had recorded (VNFC groups and escalations), then
        with hosts starts its NFVI (``_nfvi_start``) and only then adopts the VNFCs still
        running; without hosts it adopts them at once."""
        if self.leading or self.nfvi_starting:
            return
        self.mgen += 1  # whatever was sent to the dead manager is lost
        self.dispatcher = self._new_dispatcher()
        self.leases = VimLeases(self.leases.lease_s)  # the new VIM's own view
        for obs in self.observers:
            hook = getattr(obs, "on_takeover", None)
            if hook is not None:
                hook(self)
        escalated = list(self.escalated)
        adoptable = self.recorded and any(c.alive for c in self.vnfcs.values())
        # Recorded again at once (Engine.start): a manager that dies before it adopts them
        # leaves the next the same VNFCs to adopt; meanwhile news of VMs waits for adoption.
        self.recorded = adoptable
        self.escalated = escalated if adoptable else []
        self.dispatcher.adopting = adoptable
        if self.placement is None:
            self.leading = True
            self._adopt_vnfcs(escalated if adoptable else [])
            return
        self._nfvi_start(adoptable, escalated if adoptable else [])

    # with hosts: the NFVI first (the runtime's NfviDriver.start(adopt=...))

    def _nfvi_start(self, adopt: bool, escalated: list[str]) -> None:
        """Nothing to adopt (no VNFC running as recorded): the dead run's whole cgroup tree is
        removed and every host and VM booted anew. Else its agents, which outlived it, are
        awaited: those that say hello again within ``ADOPT_WAIT_S`` are adopted; a host or VM
        whose agent does not is removed (its cgroup killed, what ran there with it) and
        booted anew on its placement's host. Meanwhile the new manager hears nothing from
        the world (no agent has said hello yet, no VNFC is watched)."""
        self.nfvi_starting, self.adopting = True, True
        self._listening = self.now
        self._carried = escalated
        self.heartbeats = Heartbeats(self.heartbeats.interval_s, self.heartbeats.misses)
        if not adopt:
            self._rec("note", "LeftoverRemoved", "nfvha", "", {}, "no VNFC to adopt: all removed")
            for host in self.hosts.values():
                self._remove_host(host)
            self._boot(set(self.hosts), set(self.vms), self.mgen, adopt=False)
            return
        self.at(self._reconnect_at(self.now), self._agents_back, self.mgen)

    def _reconnect_at(self, listening: float) -> float:
        """An agent that lost its manager tries again at once, then after 20 ms, the delay
        doubling up to 50 ms (agents/agent.py): its first try once the new one listens."""
        at, delay = self.crashed_at, RETRY_FIRST_S
        while at < listening:
            at += delay
            delay = min(delay * 2, RETRY_MAX_S)
        return at + self.lat.message  # and its hello arrives

    def _agents_reachable(self) -> set[tuple[str, str]]:
        hosts = {("host", h.name) for h in self.hosts.values() if h.reachable}
        guests = {("guest", vm.name) for vm in self.vms.values() if self._vm_reachable(vm)}
        return hosts | guests

    def _agents_back(self, mgen: int) -> None:
        if mgen != self.mgen:
            return
        back = self._agents_reachable()
        for kind, name in back:
            if kind == "guest":  # its hello heard: the new driver answers its heartbeats
                self._answers_resume(self.vms[name])
        if len(back) == len(self.hosts) + len(self.vms):
            self._agents_waited(mgen, back)
        else:  # the driver waits the whole ADOPT_WAIT_S for the others
            self.at(self._listening + ADOPT_WAIT_S, self._agents_waited, mgen, back)

    def _agents_waited(self, mgen: int, early: set[tuple[str, str]]) -> None:
        """The agents that said hello (early, or later within the wait) are adopted; a guest
        only with its placement's host (``_await_agents``). The others' zones are removed."""
        if mgen != self.mgen:
            return
        back = early | self._agents_reachable()
        assert self.placement is not None
        hosts = {h for h in self.hosts if ("host", h) not in back}
        guests = {
            vm
            for vm in self.vms
            if ("guest", vm) not in back or self.placement.vm_host[vm] in hosts
        }
        adopted = sorted(set(self.hosts) - hosts) + sorted(set(self.vms) - guests)
        self._rec(
            "note",
            "AgentsAdopted",
            "vim",
            "",
            {"adopted": adopted, "booted": sorted(hosts | guests)},
        )
        for name in sorted(hosts):
            self._remove_host(self.hosts[name])
        for name in sorted(guests):
            vm = self.vms[name]
            self._vm_down(vm, reported=False)  # (dead already with a removed host)
        self._boot(hosts, guests, mgen, adopt=True)

    def _remove_host(self, host: SimHost) -> None:
        self._host_down(host)
        host.link = True

    def _boot(self, hosts: set[str], guests: set[str], mgen: int, *, adopt: bool) -> None:
        """The hosts, then the VMs, booted anew (on their placement's hosts)."""
        delay = self.lat.host_boot if hosts else 0.0
        self.after(delay, self._hosts_booted, hosts, guests, mgen, adopt)

    def _hosts_booted(self, hosts: set[str], guests: set[str], mgen: int, adopt: bool) -> None:
        if mgen != self.mgen:
            return
        for name in sorted(hosts):
            host = self.hosts[name]
            host.alive, host.link, host.gen = True, True, host.gen + 1
        delay = self.lat.vm_boot if guests else 0.0
        self.after(delay, self._vms_booted, guests, mgen, adopt)

    def _vms_booted(self, guests: set[str], mgen: int, adopt: bool) -> None:
        if mgen != self.mgen:
            return
        assert self.placement is not None
        for name in sorted(guests):
            vm, host = self.vms[name], self.placement.vm_host[name]
            self.vms_by_host[vm.host].discard(name)
            self.vms_by_host.setdefault(host, set()).add(name)
            vm.host, vm.gen = host, vm.gen + 1
            if self.hosts[host].reachable:
                vm.alive, vm.frozen = True, False
                self._new_life(vm)
        self._nfvi_up(mgen, adopt)

    def _nfvi_up(self, mgen: int, adopt: bool) -> None:
        """The NFVI is up in the new VIM's view (every host and VM of the placement up, where
        the placement puts them: ``zone_host``). From now on the agents' silences count: one
        already silent (it died or was cut off after its hello) is reported by its heartbeats.
        Then the VNFCs still running are adopted, or, none, a fresh start."""
        assert self.placement is not None
        self.nfvi_starting, self.leading = False, True
        self.zone_host = dict(self.placement.vm_host)
        self.heartbeats = Heartbeats(self.heartbeats.interval_s, self.heartbeats.misses)
        for host in self.hosts.values():
            if not host.reachable:
                self._silent(host.name, "host")
        for vm in self.vms.values():
            if self.hosts[vm.host].reachable and not self._vm_reachable(vm):
                self._silent(vm.name, "guest")
        escalated, self._carried = self._carried, []
        if not adopt:
            self.adopting = False
            self._count_survivors({})
            self.recorded = True
            d.execute(self.dispatcher.start(self.now), self)
            return
        self._adopt_vnfcs(escalated)

    # the VNFCs

    def _adopt_vnfcs(self, escalated: list[str]) -> None:
        """The running VNFCs that can resume their sessions do; the manager adopts once all
        have, or after one lease (the runtime's rule); none running: a fresh start."""
        self.recorded = True  # its groups recorded again (watched by pidfd), or started anew
        self._running = {n: c.gen for n, c in self.vnfcs.items() if c.alive}
        if not self._running:  # nothing to adopt: a fresh start
            self.adopting = False
            self._count_survivors({})
            d.execute(self.dispatcher.start(self.now), self)
            return
        self.adopting, self._resumed, self._carried = True, {}, escalated
        self._rec("note", "Adopting", "nfvha", "", {"vnfcs": sorted(self._running)})
        specs = [self.specs[self.owner[n]] for n in self._running]
        for name in self._running:
            c = self.vnfcs[name]
            if self.specs[c.vnf].sdk and c.registered and self._responsive(c):
                self.after(self.lat.resume, self._resume, c, c.gen, self.mgen)
        if not any(spec.sdk for spec in specs):
            self._adopt(self.mgen)
            return
        lease = max(spec.policies.role_lease_ms for spec in specs) / 1000
        self.after(lease, self._adopt, self.mgen)

    def _resume(self, c: SimVnfc, gen: int, mgen: int) -> None:
        """Its SDK reconnects and says which role it holds (none once it has fenced itself),
        the epoch it last held and its state."""
        if mgen != self.mgen or not self.adopting or gen != c.gen or not c.alive:
            return
        if not self._responsive(c):
            return
        said = Resumed(c.role, c.epoch)  # the epoch it last held, also once fenced
        self._resumed[c.name] = (said, {"n": c.version})
        c.lease_gen += 1  # heard from a manager again
        c.resumed_mgen = mgen
        sdk = {n for n in self._running if self.specs[self.owner[n]].sdk}
        if sdk <= self._resumed.keys():
            self._adopt(mgen)

    def _adopt(self, mgen: int) -> None:
        if mgen != self.mgen or not self.adopting:
            return
        self.adopting = False
        # One that died meanwhile is not adopted (the runtime: it has no pid any more).
        running = {n: g for n, g in self._running.items() if self.vnfcs[n].alive}
        running = {n: g for n, g in running.items() if self.vnfcs[n].gen == g}
        resumed = {n: r for n, r in self._resumed.items() if n in running}
        plain = [n for n in running if not self.specs[self.owner[n]].sdk]
        resumed |= {n: (Resumed(self._plain_role(self.owner[n], n), 0), {}) for n in plain}
        self._count_survivors({n: r for n, r in self._resumed.items() if n in running})
        escalated, self._carried = self._carried, []
        d.execute(self.dispatcher.adopt(self.now, running, resumed, escalated), self)

    def _count_survivors(self, resumed: dict[str, tuple[Resumed, dict[str, Any]]]) -> None:
        """Acknowledged writes outlive the manager in the VNFCs that hold them (and on a
        checkpointed VNF's disk). When every copy is gone with it (the manager's replica, and
        each VNFC holding them dead or silent), they are lost whatever a manager does: noted,
        and the acknowledged mark comes down to the best copy left (``lost``)."""
        for vnf, acked in self.acked.items():
            copies = [int(st.get("n", 0)) for n, (_, st) in resumed.items() if self.owner[n] == vnf]
            best = max([*copies, int(self.disk.get(vnf, (0, 0, {}))[2].get("n", 0))])
            if vnf in self.stores:
                best = max(best, self.stores[vnf].version)
            if best < acked and self.ckpt[vnf].mode != "none":
                why = "every copy died: the manager's replica with it, and each VNFC holding them"
                self._rec("note", "AcknowledgedStateLost", self.label(vnf), "", {}, why)
                self.lost.append((self.now, vnf, acked, best))
                self.acked[vnf] = best

    # VIM side

    def _do_CleanupVm(self, _: str, cmd: v.CleanupVm) -> None:
        vm = self.vms[cmd.vm]
        host = self.hosts[vm.host]
        if self.watchdog and host.alive and not host.link:
            until = self.leases.isolate(vm.name)  # no more lease for it
            wait = max(0.0, (until or self.now) - self.now)
            self.after(wait, self._watchdog_fenced, vm, self.mgen)
            return
        if self.hosts[vm.host].alive and not self.hosts[vm.host].link:
            event = v.VmCleanedUp(vm=vm.name, ok=False, detail="host unreachable")
            self._tell(self.lat.rpc_timeout, routing.VIM, event)
            return
        self.after(self.lat.cleanup, self._vm_cleaned_up, vm)

    def _vm_cleaned_up(self, vm: SimVm) -> None:
        """The driver kills the zone it believes is the VM's: when the VM runs in another (a
        new manager adopted it away from its placement's host), that zone is empty: confirmed
        empty at once, and the VM runs on."""
        if self.zone_host.get(vm.name, vm.host) == vm.host:
            self._vm_down(vm, reported=False)
        else:
            where = (
                f"{vm.name} runs on {vm.host}; its zone was believed on {self.zone_host[vm.name]}"
            )
            self._note("ZoneMissed", vm.name, where)
        self.feed(routing.VIM, v.VmCleanedUp(vm=vm.name, ok=True))

    def _watchdog_fenced(self, vm: SimVm, mgen: int) -> None:
        """The lease has passed in the VIM's view: the guest fenced itself before (its own
        view ends first), so the VM is found empty. The wait dies with its manager."""
        if mgen != self.mgen:
            return
        ok = not vm.alive
        detail = "fenced by its own watchdog" if ok else "still running after its lease"
        self.feed(routing.VIM, v.VmCleanedUp(vm=vm.name, ok=ok, detail=detail))

    def _new_life(self, vm: SimVm) -> None:
        """A VM booted (or promoted): a new guest, answered from its hello on."""
        self.leases.booted(vm.name)
        vm.answered, vm.lease_gen = False, vm.lease_gen + 1
        self._answers_resume(vm)

    def _answers_stop(self, vm: SimVm) -> None:
        """No manager answers its guest any more (cut off, no manager, or being isolated):
        one lease from now it fences itself, unless answers resume first."""
        if not self.watchdog or not vm.answered:
            return
        vm.answered, vm.lease_gen = False, vm.lease_gen + 1
        self.after(self.leases.lease_s, self._self_fence, vm, vm.lease_gen)

    def _answers_resume(self, vm: SimVm) -> None:
        """A leading manager hears the guest again and answers it (not one it isolates)."""
        if not self.watchdog or vm.answered or not vm.alive:
            return
        if self.leases.answer(vm.name, self.now):
            vm.answered, vm.lease_gen = True, vm.lease_gen + 1

    def _self_fence(self, vm: SimVm, lease_gen: int) -> None:
        """Its lease ran out: it kills its VNFCs and exits. Its host agent reports the exit
        if a manager hears it; the VNFCs' exits are not seen (as from another machine)."""
        if lease_gen != vm.lease_gen or vm.answered or not vm.alive:
            return
        self._note("SelfFenced", vm.name, f"{vm.name}: no lease for its lease time")
        self._vm_down(vm, reported=self.leading and self.hosts[vm.host].reachable)

    def _do_FenceHost(self, _: str, cmd: v.FenceHost) -> None:
        host = self.hosts[cmd.host]
        if self.watchdog and host.alive and not host.link:  # its guests' leases run out first
            ends = [self.leases.isolate(vm.name) for vm in self._vms_on(host.name)]
            until = max([self.now, *(e for e in ends if e is not None)])
            self.after(until - self.now + self.lat.fence, self._fenced_if, host, self.mgen)
            return
        self.after(self.lat.fence, self._fenced, host)

    def _fenced_if(self, host: SimHost, mgen: int) -> None:
        if mgen == self.mgen:  # the manager that waited still leads
            self._fenced(host)

    def _fenced(self, host: SimHost) -> None:
        elsewhere = [vm for vm in self._vms_on(host.name) if self.zone_host[vm.name] != host.name]
        self._host_down(host)  # out-of-band: power off works whatever the link does
        host.link = True
        for vm in elsewhere:  # the driver forgets only the guests it believes there
            self._silent(vm.name, "guest")
        self.feed(routing.VIM, v.HostFenced(host=host.name, ok=True))

    def _do_StartHost(self, _: str, cmd: v.StartHost) -> None:
        host = self.hosts[cmd.host]
        host.gen += 1
        self.after(self.lat.host_boot, self._host_booted, host, host.gen)

    def _host_booted(self, host: SimHost, gen: int) -> None:
        if gen == host.gen:
            host.alive, host.link = True, True
            self.heartbeats.forget(host.name)  # a new life
            self.feed(routing.VIM, v.HostUp(host=host.name))

    def _do_StartVm(self, _: str, cmd: v.StartVm) -> None:
        vm, host = self.vms[cmd.vm], self.hosts[cmd.host]
        self.vms_by_host[vm.host].discard(vm.name)
        self.vms_by_host.setdefault(cmd.host, set()).add(vm.name)
        vm.host, vm.gen = cmd.host, vm.gen + 1
        self.zone_host[vm.name] = cmd.host
        if not host.reachable:
            event = v.VmStartFailed(
                vm=vm.name, detail=f"{host.name} unreachable", host_unreachable=True
            )
            self._tell(self.lat.rpc_timeout, routing.VIM, event)
            return
        self.after(self.lat.vm_boot, self._vm_booted, vm, vm.gen, host.gen)

    def _do_PromoteStandbyVm(self, _: str, cmd: v.PromoteStandbyVm) -> None:
        vm, host = self.vms[cmd.vm], self.hosts[cmd.host]
        if not host.reachable:
            event = v.VmStartFailed(vm=vm.name, detail="standby unreachable", host_unreachable=True)
            self._tell(self.lat.message, routing.VIM, event)
            return
        self.vms_by_host[vm.host].discard(vm.name)
        self.vms_by_host.setdefault(cmd.host, set()).add(vm.name)
        vm.host, vm.gen, vm.alive, vm.frozen = cmd.host, vm.gen + 1, True, False
        self.zone_host[vm.name] = cmd.host
        self.heartbeats.forget(vm.name)  # its standby's agent beats for it from now on
        self._new_life(vm)
        self._tell(self.lat.message, routing.VIM, v.VmUp(vm=vm.name, host=cmd.host))

    def _do_StartStandbyVm(self, _: str, cmd: v.StartStandbyVm) -> None:
        self.after(self.lat.vm_boot, self._standby_booted, cmd, self.hosts[cmd.host].gen)

    def _standby_booted(self, cmd: v.StartStandbyVm, host_gen: int) -> None:
        host = self.hosts[cmd.host]
        if host.reachable and host_gen == host.gen:
            self.feed(routing.VIM, v.StandbyVmUp(vm=cmd.vm, host=cmd.host))
        else:
            event = v.StandbyVmFailed(vm=cmd.vm, host=cmd.host, detail="host went away")
            self.feed(routing.VIM, event)

    def _vm_booted(self, vm: SimVm, gen: int, host_gen: int) -> None:
        host = self.hosts[vm.host]
        if gen != vm.gen:
            return
        if host_gen != host.gen or not host.reachable:
            event = v.VmStartFailed(vm=vm.name, detail="its host went away", host_unreachable=True)
            self.feed(routing.VIM, event)
            return
        vm.alive, vm.frozen = True, False
        self.heartbeats.forget(vm.name)  # a new life
        self._new_life(vm)
        self.feed(routing.VIM, v.VmUp(vm=vm.name, host=vm.host))

    # --- checkpoints --------------------------------------------------------------------------

    def _write(self, c: SimVnfc, gen: int, epoch: int) -> None:
        """The state is a number (``n``) that every write raises; a VNFC's ``version`` is the
        ``n`` it holds. The write goes as the VNF's ``state_sync`` says (see the module's
        docstring); with no way to make it durable (no manager, and no peer link or store),
        the SDK refuses it at once."""
        if gen != c.gen or not c.alive or c.role != "active":
            return
        if self._responsive(c):
            sync = self.sync[c.vnf]
            if sync in EXTERNAL:
                self._store_write(c, epoch)
            elif sync == "direct" and c.peer is not None and c.peer_ready:
                self._peer_write(c, epoch)
            elif self.leading:
                self._manager_write(c, epoch, direct=sync == "direct")
        self.after(self.checkpoint_every, self._write, c, gen, epoch)

    def _manager_write(self, c: SimVnfc, epoch: int, *, direct: bool) -> None:
        service = self.ckpt[c.vnf]
        if direct:  # the component's own version: its writes peer to peer counted too
            request = c.version + 1
        else:
            request = max(service.version, int(service.state.get("n", 0))) + 1
        c.undo[request], c.version = c.version, request
        c.via_manager.add(request)
        version = request if direct else None
        write = self.dispatcher.write(c.name, epoch, request, {"n": request}, self.now, version)
        d.execute(write, self)

    def _resolved(self, c: SimVnfc, request: int) -> None:
        """The writes up to ``request`` are acknowledged to the component."""
        for r in [r for r in c.undo if r <= request]:
            del c.undo[r]
        c.via_manager = {r for r in c.via_manager if r > request}
        c.covers = {r: first for r, first in c.covers.items() if r > request}

    def _fail_pending(self, c: SimVnfc) -> None:
        """Every write in flight fails: back to the state before the first of them."""
        if c.undo:
            c.version = c.undo[min(c.undo)]
        c.undo, c.via_manager, c.covers = {}, set(), {}

    def _members(self, vnf: str) -> list[str]:
        return [vnfc.name for vnfc in self.specs[vnf].vnfcs]

    def _count_copies(self, vnf: str, *, destroyed: bool) -> None:
        """Direct sync: acknowledged writes may be held by the components alone (the
        manager's replica lags). When the last one holding them dies they are lost (a double
        failure: noted in ``lost``). ``destroyed``: the manager itself killed that last copy
        while it still answered (a promoted standby that failed to take the role, e.g. its
        port taken): a loss the runtime could have avoided, noted apart in ``destroyed``
        (a known gap of direct sync, see tests/test_sim_sync.py). Either way the
        acknowledged mark comes down to the best copy left."""
        copies = [self.vnfcs[n].version for n in self._members(vnf) if self.vnfcs[n].alive]
        if self.leading:
            copies.append(int(self.ckpt[vnf].state.get("n", 0)))
        best = max(copies, default=0)
        if best >= self.acked[vnf]:
            return
        if destroyed:
            why = "the manager isolated the last VNFC holding them; its replica lagged"
            self._rec("note", "AcknowledgedStateDestroyed", self.label(vnf), "", {}, why)
            self.destroyed.append((self.now, vnf, self.acked[vnf], best))
        else:
            why = "every copy died: each VNFC holding them, and the manager's replica lagged"
            self._rec("note", "AcknowledgedStateLost", self.label(vnf), "", {}, why)
            self.lost.append((self.now, vnf, self.acked[vnf], best))
        self.acked[vnf] = best

    def _fence(self, c: SimVnfc, why: str) -> None:
        """The SDK fences a component its peer or store refused as stale: it stops serving (role
        none) and drops its connection to the manager, which hears of it when it reconnects."""
        self._note("Fenced", c.name, why)
        c.role = "none"
        self._link_peer(c)
        if self.leading:
            self.after(self.lat.resume, self._rejoined, c, c.gen, self.mgen)

    def _rejoined(self, c: SimVnfc, gen: int, mgen: int) -> None:
        """Its session back (the runtime's ``_resumed_later``): a role it no longer holds
        fails it."""
        if gen != c.gen or mgen != self.mgen or not self.leading or not c.alive:
            return
        held = self.ha[c.vnf].vnfcs[c.name]
        if held.life is Life.RUNNING and held.role is not Role.NONE and held.role != c.role:
            reason = f"it holds role {c.role}, not {held.role.value} (fenced)"
            self.feed(c.vnf, m.ErrorReported(vnfc=c.name, reason=reason))

    # direct sync

    def _pair(self, vnf: str) -> None:
        """At each role assignment the manager tells the active where the standby is. Its
        connection is in order: the line waits behind an assignment the active is taking."""
        service = self.ckpt[vnf]
        if self.sync[vnf] != "direct" or service.writer is None:
            return
        w = self.vnfcs[service.writer[0]]
        when = max(self.now + self.lat.message, w.assigned_at)
        self.at(when, self._told_peer, w, w.gen, service.standby, self.mgen)

    def _told_peer(self, c: SimVnfc, gen: int, standby: str | None, mgen: int) -> None:
        if gen != c.gen or not c.alive or not self._responsive(c) or c.resumed_mgen > mgen:
            return
        c.peer_address = standby
        self._link_peer(c)

    def _link_peer(self, c: SimVnfc) -> None:
        """The active links to the standby it was told of, unless linked already, and sends it
        the whole state; anything else drops the link."""
        if self.sync[c.vnf] != "direct":
            return
        address = c.peer_address if c.role == "active" else None
        if c.peer == address:
            return
        if c.peer is not None:
            self._peer_lost(c)
        if address is not None:
            s = self.vnfcs[address]
            c.peer, c.peer_sgen, c.peer_ready, c.peer_synced = address, s.gen, False, c.version
            c.peer_gen += 1
            self._peer_send(c, "sync", c.epoch, c.version)

    def _peer_write(self, c: SimVnfc, epoch: int) -> None:
        request = c.version + 1
        c.undo[request], c.version = c.version, request
        self._peer_send(c, "write", epoch, request)

    def _peer_send(self, c: SimVnfc, kind: str, epoch: int, version: int) -> None:
        assert c.peer is not None
        s, link = self.vnfcs[c.peer], (c.gen, c.peer_gen)
        self.after(self.lat.message, self._peer_arrives, s, c.peer_sgen, c, link, epoch, version)

    def _peer_arrives(
        self, s: SimVnfc, sgen: int, a: SimVnfc, link: tuple[int, int], epoch: int, version: int
    ) -> None:
        """The standby's side (``PeerFence``): it applies what is not stale, and answers."""
        if s.gen != sgen or not s.alive:  # nobody listens: the link ends
            self.after(self.lat.message, self._peer_closed, a, *link)
            return
        if not self._responsive(s):
            return  # a frozen standby answers nothing
        refusal = ""
        if s.role == "active":
            refusal = "this component is the active now"
        elif epoch < s.fence_epoch:
            refusal = f"stale epoch {epoch}: a newer active holds epoch {s.fence_epoch}"
        else:
            s.fence_epoch = epoch
            s.version = max(s.version, version)  # (a sync older than what it holds: kept)
        self.after(self.lat.message, self._peer_reply, a, link, version, refusal)

    def _peer_reply(self, a: SimVnfc, link: tuple[int, int], version: int, refusal: str) -> None:
        if link != (a.gen, a.peer_gen) or not a.alive or not self._responsive(a):
            return
        if refusal:
            a.peer, a.peer_ready, a.peer_gen = None, False, a.peer_gen + 1
            self._fail_pending(a)
            self._fence(a, f"refused by the standby: {refusal}")
            return
        if version >= a.peer_synced:
            a.peer_ready = True  # the standby holds everything up to the sync
        done = [r for r in a.undo if r <= version]
        if done:  # the standby holds them: acknowledged
            self.acked[a.vnf] = max(self.acked[a.vnf], max(done))
            self._resolved(a, max(done))

    def _peer_closed(self, a: SimVnfc, gen: int, link: int) -> None:
        current = gen == a.gen and link == a.peer_gen and a.peer is not None
        if current and a.alive and self._responsive(a):
            self._peer_lost(a)

    def _peer_lost(self, a: SimVnfc) -> None:
        """The link is gone: the writes the standby had not confirmed go through the manager as
        one write of the whole state, or fail if there is none."""
        a.peer, a.peer_ready, a.peer_gen = None, False, a.peer_gen + 1
        waiting = sorted(r for r in a.undo if r not in a.via_manager)
        if not waiting:
            return
        if not self.leading or a.role != "active":
            self._fail_pending(a)
            return
        last = waiting[-1]
        a.covers[last] = waiting[0]
        a.via_manager.update(waiting)
        write = self.dispatcher.write(a.name, a.epoch, last, {"n": last}, self.now, last)
        d.execute(write, self)

    # shared_storage / store

    def _claim(self, vnf: str, epoch: int) -> str:
        """Fence every older writer in the store; '' if claimed, else why not."""
        store = self.stores[vnf]
        if store.epoch > epoch:
            return f"stale epoch {epoch}: the store holds epoch {store.epoch}"
        if self.disk_full_until.get(vnf, -1.0) > self.now:
            return "checkpoint store failed: No space left on device"
        store.epoch = epoch
        return ""

    def _store_write(self, c: SimVnfc, epoch: int) -> None:
        """Its SDK commits in groups (``GroupCommit``): while one write is being made durable,
        the next ones wait, and go as one (the latest whole state)."""
        request = c.version + 1
        c.undo[request], c.version = c.version, request
        c.queued.append(request)
        c.queued_epoch = epoch
        if not c.flushing:
            self._flush(c)

    def _flush(self, c: SimVnfc) -> None:
        c.flushing, c.queued = c.queued, []
        slow = 50.0 if self.slow_disk_until.get(c.vnf, -1.0) > self.now else 1.0
        args = (c, c.gen, c.queued_epoch, max(c.flushing))
        self.after(self.lat.store * slow, self._stored, *args)

    def _stored(self, c: SimVnfc, gen: int, epoch: int, request: int) -> None:
        """The store checks the writer's epoch atomically with the write. A failure fails
        every write not yet durable, those waiting included."""
        store = self.stores[c.vnf]
        stale = store.epoch != epoch
        failed = stale or self.disk_full_until.get(c.vnf, -1.0) > self.now
        if not failed:
            store.version = max(store.version, request)
        if gen != c.gen or not c.alive:
            return  # (its process died: whatever landed is in the store, nobody is told)
        if failed:
            first = min(c.flushing)
            if first in c.undo:
                c.version = c.undo[first]
                c.undo = {r: v for r, v in c.undo.items() if r < first}
            c.flushing, c.queued = [], []
            if stale and c.role == "active":
                held = f"epoch {epoch}; the store holds epoch {store.epoch}"
                self._fence(c, f"refused by the store: {held}")
            return
        self.acked[c.vnf] = max(self.acked[c.vnf], request)
        self._resolved(c, request)
        c.flushing = []
        if c.queued:
            self._flush(c)

    def _replicate(self, vnf: str, action: ck.Replicate, mgen: int) -> None:
        c = self.vnfcs[action.standby]
        if c.alive and self._responsive(c) and c.role == "standby":
            c.version = max(c.version, int(action.updates.get("n", action.version)))
            self.after(self.lat.message, self._standby_acked, c.name, action.version, mgen)

    def _standby_acked(self, vnfc: str, version: int, mgen: int) -> None:
        if mgen == self.mgen and self.leading:
            d.execute(self.dispatcher.standby_acked(vnfc, version, self.now), self)

    def _persisted(self, vnf: str, action: ck.Persist, mgen: int) -> None:
        if mgen != self.mgen:
            return  # the manager died with the write in its hands: not durable, never acked
        if self.disk_full_until.get(vnf, -1.0) > self.now:
            outputs = self.dispatcher.persist_failed(vnf, "No space left on device", self.now)
        else:
            if action.version > self.disk.get(vnf, (0, 0, {}))[0]:
                self.disk[vnf] = (action.version, action.epoch, dict(action.state))
            outputs = self.dispatcher.persisted(vnf, action.version, action.state, self.now)
        d.execute(outputs, self)

    # --- faults -------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        self._rec("fault", fault.kind, "operator", fault.target, fault.to_dict())
        getattr(self, "_fault_" + fault.kind.replace("-", "_"))(fault)

    def _fault_vnfc_crash(self, f: Fault) -> None:
        c = self.vnfcs[f.target]
        if c.alive:
            self._kill(c, seen=self.placed_reachable(c))

    def _fault_vnfc_hang(self, f: Fault) -> None:
        c = self.vnfcs[f.target]
        if c.alive and not c.hung:
            c.hung = True
            self._unresponsive([c])

    def _fault_vm_crash(self, f: Fault) -> None:
        vm = self.vms[f.target]
        if not vm.alive:
            return
        reported = self.hosts[vm.host].reachable
        # As in the runtime, the manager watches each VNFC by pidfd: their deaths are seen too.
        self._vm_down(vm, reported=reported, exits_seen=reported)
        if not reported:  # the exit report is lost with the link; its heartbeats stop all the same
            self._silent(vm.name, "guest")

    def _fault_vm_hang(self, f: Fault) -> None:
        vm = self.vms[f.target]
        if vm.alive and not vm.frozen:
            vm.frozen = True
            self._unresponsive([self.vnfcs[n] for n in vm.vnfcs])
            self._silent(vm.name, "guest")

    def _fault_host_crash(self, f: Fault) -> None:
        host = self.hosts[f.target]
        if host.alive:
            # The runtime watches each VNFC by pidfd on this machine: their deaths are seen
            # unless the host was already cut off.
            self._host_down(host, exits_seen=host.link)
            self._silent(host.name, "host")

    def _fault_link_cut(self, f: Fault) -> None:
        host = self.hosts[f.target]
        if not host.reachable:
            return
        host.link, host.cut_at = False, self.now
        cut_gen = host.gen
        on_it = [self.vnfcs[n] for vm in self._vms_on(host.name) for n in vm.vnfcs]
        self._unresponsive([c for c in on_it if c.alive])
        self._silent(host.name, "host")
        self.after(f.duration, self._heal, host, cut_gen)
        for vm in self._vms_on(host.name):
            if self.leading and vm.answered:
                self.leases.answer(vm.name, self.now)  # the last heartbeat it had answered
            self._answers_stop(vm)

    def _heal(self, host: SimHost, gen: int) -> None:
        if gen == host.gen and host.alive:
            host.link = True
            self.heartbeats.forget(host.name)  # heard again before its silence was a failure
            if self.leading:
                for vm in self._vms_on(host.name):
                    self._answers_resume(vm)  # renewed, unless being isolated

    def _fault_slow_disk(self, f: Fault) -> None:
        self.slow_disk_until[f.target] = self.now + f.duration

    def _fault_disk_full(self, f: Fault) -> None:
        self.disk_full_until[f.target] = self.now + f.duration

    def _fault_port_taken(self, f: Fault) -> None:
        self.port_taken_until[f.target] = self.now + f.duration

    # --- world helpers ------------------------------------------------------------------------

    def _kill(self, c: SimVnfc, *, seen: bool, isolated: bool = False) -> None:
        """The VNFC's process dies; ``seen``: its exit is reported (pidfd, guest agent);
        ``isolated``: the manager killed it while it still answered."""
        was_alive = c.alive
        c.alive, c.hung, c.role = False, False, "none"
        c.gen += 1
        if self.sync[c.vnf] == "direct" and was_alive:
            c.peer, c.peer_ready, c.peer_gen = None, False, c.peer_gen + 1
            for name in self._members(c.vnf):  # its active's link to it ends
                a = self.vnfcs[name]
                if a.peer == c.name:
                    self.after(self.lat.message, self._peer_closed, a, a.gen, a.peer_gen)
            self._count_copies(c.vnf, destroyed=isolated)
        if was_alive and seen:
            event = m.ProcessExited(vnfc=c.name, status="killed")
            self._tell(self.lat.exit_seen, c.vnf, event)
        elif was_alive:
            c.watch_gen += 1  # misses of its last life stop; those of its death begin
            self._health_misses(c)

    def _vm_down(self, vm: SimVm, *, reported: bool, exits_seen: bool = False) -> None:
        for name in vm.vnfcs:
            self._kill(self.vnfcs[name], seen=exits_seen)
        if vm.alive:
            vm.alive, vm.frozen = False, False
            vm.gen += 1
            self.heartbeats.forget(vm.name)  # gone: its failure is reported, or decided, here
            if reported:
                event = v.VmFailed(vm=vm.name, cause="exit", detail="guest exited")
                self._tell(self.lat.exit_seen, routing.VIM, event)

    def _host_down(self, host: SimHost, *, exits_seen: bool = False) -> None:
        for vm in self._vms_on(host.name):
            self._vm_down(vm, reported=False, exits_seen=exits_seen)
        host.alive = False
        host.gen += 1

    def _unresponsive(self, vnfcs: list[SimVnfc]) -> None:
        for c in vnfcs:
            self._health_misses(c)

    def _silent(self, name: str, kind: AgentKind) -> None:
        """An agent stops beating now: when that is a failure is the core's heartbeat rule,
        the very one the NFVI driver applies."""
        if self.heartbeats.last_beat(name) is None:
            self.heartbeats.beat(name, kind, self.now)
        self.after(self.heartbeats.limit_s + 1e-9, self._heartbeats_expired)

    def _heartbeats_expired(self) -> None:
        for failure in self.heartbeats.expired(self.now):
            self.feed(routing.VIM, failure)

    def _vms_on(self, host: str) -> list[SimVm]:
        return [self.vms[n] for n in sorted(self.vms_by_host.get(host, ()))]

    def _vm_reachable(self, vm: SimVm) -> bool:
        return vm.alive and not vm.frozen and self.hosts[vm.host].reachable

    def placed_reachable(self, c: SimVnfc) -> bool:
        """Its VM runs and can be reached (always so for a plain process)."""
        return c.vm is None or self._vm_reachable(self.vms[c.vm])

    def _responsive(self, c: SimVnfc) -> bool:
        return not c.hung and self.placed_reachable(c)

    # --- trace --------------------------------------------------------------------------------

    def _rec(self, kind: str, name: str, src: str, dst: str, data: dict, why: str = "") -> None:
        if not self.record:
            return
        rec: dict[str, Any] = {
            "t": round(self.now * 1e9),
            "kind": kind,
            "name": name,
            "src": src,
            "dst": dst,
        }
        if data:
            rec["data"] = data
        if why:
            rec["why"] = why
        self.records.append(rec)

    def _note(self, name: str, src: str, why: str) -> None:
        self._rec("note", name, src, "", {}, why)

    def trace_text(self) -> str:
        return "".join(json.dumps(r) + "\n" for r in self.records)
