"""The engine: one asyncio loop that implements the core dispatcher's drivers for real.

The dispatcher (``core.dispatcher``, shared with the simulator) owns the managers and their
wiring; the engine feeds it what it observes (process exits, component messages, health
checks, NFVI reports) and carries out what it returns: driver commands, checkpoint data-path
actions, and trace records, stamped here with the monotonic time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfvha.config import Deployment, Vnf, lb_vnf_name
from nfvha.config import load as load_config
from nfvha.core import checkpoint as ck
from nfvha.core import dispatcher as d
from nfvha.core import messages as m
from nfvha.core import vim as v
from nfvha.core.ha import HAManager, Life, OperatorRefused, Resumed, Role
from nfvha.core.messages import Traced
from nfvha.core.placement import Placement, plan
from nfvha.core.pool import backend_address
from nfvha.core.vim import Vim
from nfvha.core.vnfm import Vnfm
from nfvha.drivers import leftovers
from nfvha.drivers.containment import VnfcCgroups
from nfvha.drivers.health import HealthMonitor, network_probe
from nfvha.drivers.nfvi import NfviDriver, VmUnreachable
from nfvha.drivers.process import ProcessDriver, StartSpec
from nfvha.drivers.store import DiskStore, StoreError
from nfvha.runtime import journal, paths, reload
from nfvha.runtime import recorded_state as rs
from nfvha.runtime.connections import Connections
from nfvha.runtime.hooks import HookRunner
from nfvha.runtime.leadership import Coordinator
from nfvha.runtime.metrics import Metrics
from nfvha.runtime.nodes import MGMT, Nodes
from nfvha.runtime.outcomes import Outcomes
from nfvha.runtime.pool import Pools
from nfvha.runtime.sync import peer_address, peer_dir, sync_spec
from nfvha.runtime.trace import Throttle, Trace
from nfvha.sdk import ENV_ADDRESS, ENV_PEER, ENV_SOCKET, ENV_VNFC
from nfvha.sdk.protocol import MAX_LINE, ProtocolError, decode_from_component, encode

# The VNFC faults of nfvha.faults, as signals to its main process.
FAULTS = {"vnfc-crash": signal.SIGKILL, "vnfc-hang": signal.SIGSTOP, "vnfc-resume": signal.SIGCONT}

# The component socket admits strangers only briefly: a hello is a few dozen bytes and comes
# at once from a real component, so anything else before it is dropped at the first line.
HELLO_TIMEOUT_S = 2.0
HELLO_LINE = 4 << 10
REFUSALS_IN_A_ROW = 20  # malformed lines from a registered component before it is dropped
REFUSALS_TRACED = 20  # MessageRefused records per second; the rest are counted (Throttle)
REPAIR_NICE = 10  # a repair's start-up, while the service is served: below the active's work
PUBLISH_WITHIN_S = 30.0  # etcd unreachable this long at start: the run fails, naming it


@dataclass(slots=True)
class Link:
    """The manager's end of one component's SDK connection."""

    vnfc: str
    writer: asyncio.StreamWriter
    pings: dict[int, asyncio.Future[bool]] = field(default_factory=dict)

    def send(self, kind: str, /, **fields: Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(kind, **fields))


@dataclass(slots=True)
class VnfRuntime:
    """One VNF as the engine sees it: its spec, its manager and checkpoint service (the
    dispatcher's), and its disk store when it checkpoints."""

    spec: Vnf
    manager: HAManager
    checkpoints: ck.CheckpointService
    store: DiskStore | None


class Engine(d.Drivers):
    def __init__(
        self, deployment: Deployment, base_dir: Path, trace: Trace, state_dir: Path
    ) -> None:
        self.deployment, self.base_dir, self.trace = deployment, base_dir, trace
        self.runtime_dir = paths.runtime_dir(deployment.name)
        if paths.socket_answers(control := paths.control_socket(deployment.name)):
            raise OSError(f"already running: {control} answers")  # its VNFCs are not leftovers
        self.component_socket = self.runtime_dir / "components.sock"
        self.state_dir = state_dir
        self.config_path: Path | None = None  # the deployment file, read again by a reload
        self.leadership: Coordinator | None = None  # set by whoever made this manager lead
        self.state_writer: rs.StateWriter | None = None  # with etcd: the recorded state
        self.links: dict[str, Link] = {}
        self.monitors: dict[str, HealthMonitor] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._ping_ids = itertools.count(1)
        self._niced: set[str] = set()  # repairs started below the others, until they are up
        self._adopting = True  # until the VNFCs a dead manager left have resumed (or not)
        self._resumed: dict[str, tuple[Resumed, dict[str, Any]]] = {}
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.record = leftovers.GroupRecord(self.runtime_dir / leftovers.RECORD)
        # Each VNFC of this machine in a cgroup of its own when possible (a detached daemon
        # stays in it); else process groups, and `containment` says why (run warns).
        zones, self.containment = VnfcCgroups.open(deployment.name)
        self.procs = ProcessDriver(self._on_exit, state_dir / "logs", self.record, zones)
        self._servers: list[asyncio.AbstractServer] = []
        self.connections = Connections(trace)  # of the component and control sockets
        self._refusals = Throttle(trace, burst=REFUSALS_TRACED)
        self.alarms: list[dict[str, Any]] = []
        self.placement = plan(deployment)
        checkpointed = [v for v in deployment.vnfs if v.service_mode == "checkpoint"]
        stores = {v.name: self._load_store(v) for v in checkpointed}
        epochs = {name: loaded[1] for name, (_, loaded) in stores.items()}
        self.dispatcher = d.Dispatcher(deployment, self.placement, epochs=epochs)
        self.vnfs: dict[str, VnfRuntime] = {}
        for name, spec in self.dispatcher.specs.items():
            service = self.dispatcher.checkpoints[name]
            store = None
            if name in stores:
                store, (version, _, state) = stores[name]
                service.version, service.state = version, state
                service.durable = (version, dict(state))
            self.vnfs[name] = VnfRuntime(spec, self.dispatcher.ha[name], service, store)
        self.nfvi: NfviDriver | None = None
        self.nodes = Nodes(deployment, "loopback")  # the network mode, resolved in start()
        if self.placement is not None:
            self._add_nfvi(self.placement)
        # The tools around nfvha (stderr lines, metrics, notify hooks) read the trace.
        self.outcomes = Outcomes(deployment)
        self.metrics = Metrics(deployment) if deployment.metrics is not None else None
        self.hooks = HookRunner(deployment, base_dir, trace)
        # Load balancers (runtime/pool.py): their pools follow the managers after every step.
        vnfc_vm = dict(self.placement.vnfc_vm) if self.placement else None
        self.pools = Pools(
            deployment,
            self.dispatcher.ha,
            self.runtime_dir,
            trace,
            self.feed,
            vnfc_vm,
            self._vms,
            self._node_ip,
        )
        trace.observe(self._observe)

    # The managers are the dispatcher's; these views keep the engine's readers simple.

    @property
    def owner(self) -> dict[str, str]:
        return self.dispatcher.owner

    @property
    def vim(self) -> Vim | None:
        return self.dispatcher.vim

    @property
    def vnfm(self) -> Vnfm:
        return self.dispatcher.vnfm

    @property
    def errors_open(self) -> dict[str, m.ReportError]:
        return self.vnfm.open_errors

    @property
    def escalations(self) -> list[dict[str, Any]]:
        return [{"vnf": self.owner[e.vnfc], **e.fields()} for e in self.vnfm.escalations]

    def label(self, target: str) -> str:
        return self.dispatcher.label(target)

    def _add_nfvi(self, placement: Placement) -> None:
        nfvi = self.deployment.nfvi
        self.nfvi = NfviDriver(
            self.deployment.name,
            placement,
            nfvi,
            self.runtime_dir / "nfvi.sock",
            report=lambda event: self.feed("vim", event),
            note=self._nfvi_note,
        )

    def _nfvi_network(self) -> tuple[tuple[str | None, str], dict[str, str], Path | None]:
        """Where guests dial the NFVI (transport tls): the management node in netns mode,
        else loopback; each VM's node namespace; the cluster's certificates."""
        spec = self.deployment.nfvi
        network = self.nodes.network
        listen = (network.nodes[MGMT].netns, network.nodes[MGMT].address) if network else None
        guests = {}
        if network is not None and self.placement is not None:
            guests = {
                vm: network.nodes[vm].netns for vm in self.placement.vm_host if vm in network.nodes
            }
        cluster = self.base_dir / spec.cluster_dir if spec.cluster_dir else None
        return listen or (None, "127.0.0.1"), guests, cluster

    @property
    def _peers_on_disk(self) -> bool:
        """netns mode: the peers of a direct-sync VNF live in two namespaces (runtime/sync.py)."""
        return self.nodes is not None and self.nodes.mode == "netns"

    async def _publish_nfvi(self, endpoint: dict[str, Any]) -> None:
        """Where external host agents find this leader's NFVI (etcd, under its lease); etcd
        unreachable for a moment is ridden out, for as long as the agents would be waited for."""
        from nfvha.sdk.stores import StoreUnavailable

        assert self.leadership is not None
        deadline = time.monotonic() + PUBLISH_WITHIN_S
        while True:
            try:
                await self.leadership.publish("nfvi", endpoint)
            except StoreUnavailable as exc:
                if time.monotonic() > deadline:
                    raise OSError(f"cannot publish the NFVI endpoint in etcd: {exc}") from None
                await asyncio.sleep(0.2)
                continue
            self.trace.record("note", "NfviPublished", src="nfvha", data=endpoint)
            return

    def _nfvi_note(self, name: str, why: str) -> None:
        # Garbage on the NFVI socket costs the trace a few records a second, not one per line.
        log = self._refusals if name == "MessageRefused" else self.trace
        log.record("note", name, src="nfvi", why=why)

    def _load_store(self, vnf: Vnf) -> tuple[DiskStore, tuple[int, int, dict]]:
        store = DiskStore(self.state_dir / "checkpoints" / f"{vnf.name}.log")
        version, epoch, state = loaded = store.load()
        if store.discarded:
            self.trace.record(
                "note",
                "CheckpointTailDiscarded",
                src=vnf.name,
                data={"bytes": store.discarded, "version": version},
                why="the log ended in a cut record (a crash or a full disk while appending); "
                "it was never acknowledged",
            )
        if version:
            self.trace.record(
                "note",
                "CheckpointLoaded",
                src=vnf.name,
                data={"version": version, "epoch": epoch, "state": state},
            )
        return store, loaded

    # --- life of the engine -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start, serve until ``stop`` is set, then stop everything, also when starting fails
        or is interrupted."""
        starting = asyncio.ensure_future(self.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # raises if the start failed
                await stopping
        finally:
            starting.cancel()
            stopping.cancel()
            await self.shutdown()

    async def start(self) -> None:
        from nfvha.runtime.control import ControlServer  # the control API sits on top of us

        if len(str(self.component_socket).encode()) >= 108:
            raise OSError(f"socket path too long for AF_UNIX: {self.component_socket}")
        # A run that died without stopping left its VNFCs running (and with hosts, its agents):
        # those whose main process still runs are adopted; whatever else it left is removed,
        # since it may hold the service address.
        record = self.runtime_dir / leftovers.RECORD
        adoptable = self._adoptable(record)
        escalated = leftovers.recorded_escalations(record) if adoptable else []
        if self.nfvi is not None and not adoptable:
            await leftovers.remove_leftover_cgroup(self.nfvi.cgroups, self.trace)
        keep = frozenset(e["pgid"] for e in adoptable)
        await leftovers.remove_leftover_groups(record, self.trace, keep=keep)
        if self.procs.zones is not None:
            adopted = frozenset(e["vnfc"] for e in adoptable)
            await leftovers.remove_leftover_zones(self.procs.zones, adopted, self.trace)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)  # its stale sockets and record
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        # Recorded again at once: if this manager dies before it has adopted them, the next
        # one finds the same VNFCs to adopt (and the same escalations).
        self.record.carry_over(adoptable, escalated)
        self.dispatcher.adopting = bool(adoptable)
        with contextlib.suppress(FileNotFoundError):
            self.component_socket.unlink()
        self._servers.append(
            await asyncio.start_unix_server(
                self.connections.serve(self._serve_component),
                self.component_socket,
                limit=MAX_LINE,
            )
        )
        self._servers.append(await ControlServer(self).start())
        vm_of = dict(self.placement.vnfc_vm) if self.placement else None
        self.nodes = await asyncio.to_thread(Nodes.open, self.deployment, vm_of, bool(adoptable))
        self.trace.record(
            "note", "NetworkUp", src="nfvha", data=self.nodes.snapshot(), why=self.nodes.describe()
        )
        print(f"nfvha: {self.nodes.describe()}", file=sys.stderr, flush=True)  # the mode in use
        if self._peers_on_disk:  # the adopted standbys' sockets stay; a fresh start's go
            if not adoptable:
                shutil.rmtree(peer_dir(self.runtime_dir), ignore_errors=True)
            peer_dir(self.runtime_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.metrics is not None and (endpoint := self.deployment.metrics) is not None:
            self.metrics.serve(endpoint.address, endpoint.port)
        self.trace.record(
            "note", "DeploymentStarted", src="nfvha", data={"name": self.deployment.name}
        )
        if self.nfvi is not None:
            if self.leadership is not None and self.leadership.token is not None:
                self.nfvi.token = self.leadership.token
            self.nfvi.use_network(*self._nfvi_network())
            if self.leadership is not None and self.deployment.nfvi.host_agents == "external":
                self.nfvi.on_listening = self._publish_nfvi
            agents = await self.nfvi.start(adopt=bool(adoptable))
            data = {**self.vim.snapshot(), "adopted_agents": agents}
            self.trace.record("note", "NfviUp", src="vim", data=data)
            # VNFCs whose VM could not be adopted went with it: nothing is left to adopt.
            adoptable = [e for e in adoptable if leftovers.runs_as_recorded(e)]
        self._spawn_task(self._renew_leases())
        self.pools.start()
        await self._continue_store_epochs()
        await self._continue_recorded_state()
        if adoptable:
            await self._adopt(adoptable, escalated)
        else:
            await self._until_fenced_elsewhere()
            self._adopting = False
            d.execute(self.dispatcher.start(time.monotonic()), self)
        self.started.set()

    # --- taking over from a manager that died -------------------------------------------------

    def _adoptable(self, record: Path) -> list[dict[str, Any]]:
        """The newest live group of each VNFC the dead manager recorded."""
        newest: dict[str, dict[str, Any]] = {}
        for entry in leftovers.adoptable_groups(record):
            name = entry["vnfc"]
            if name in self.owner and entry["start"] >= newest.get(name, {}).get("start", -1):
                newest[name] = entry
        return list(newest.values())

    async def _adopt(self, entries: list[dict[str, Any]], escalated: list[str]) -> None:
        """Watch each by pidfd, give the SDK ones one lease to resume their sessions, then let
        the managers decide (ha.py rule 9). A plain process cannot resume: it serves as it
        runs, as the active it was."""
        names = {e["vnfc"] for e in entries}
        for entry in entries:
            self.procs.adopt(entry["vnfc"], entry["pgid"], entry.get("cgroup"))
        self.trace.record("note", "Adopting", src="nfvha", data={"vnfcs": sorted(names)})
        sdk = {n for n in names if self.vnfs[self.owner[n]].spec.sdk}
        lease = max(self.vnfs[self.owner[n]].spec.policies.role_lease_ms for n in names) / 1000
        deadline = time.monotonic() + lease
        while not sdk <= self._resumed.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        # One that died meanwhile (its exit went to a manager that had not adopted it) is gone.
        running = {e["vnfc"]: e["pgid"] for e in entries if self.procs.pid_of(e["vnfc"])}
        resumed = {n: self._resumed[n] for n in sdk if n in self._resumed and n in running}
        resumed |= {n: (Resumed(self._plain_role(n), 0), {}) for n in names - sdk if n in running}
        self._adopting = False
        self._run(lambda now: self.dispatcher.adopt(now, running, resumed, escalated))

    async def _continue_store_epochs(self) -> None:
        """Rule 12 of core/ha.py: the epochs the VNFs' own stores hold (shared storage, etcd),
        read before any assignment. A store that cannot be read is noted; its active's claim
        will say the rest."""
        from nfvha.sdk.stores import StoreUnavailable, open_store

        epochs = {}
        for name, vnf in self.vnfs.items():
            if vnf.spec.sync not in ("shared_storage", "store"):
                continue
            store = open_store(sync_spec(vnf.spec, self.deployment.name, self.state_dir))
            try:
                epochs[name] = await store.epoch()
            except StoreUnavailable as exc:
                self.trace.record("note", "StoreUnread", src="nfvha", dst=name, why=str(exc))
            finally:
                await store.close()
        self.dispatcher.continue_epochs(epochs)

    async def _continue_recorded_state(self) -> None:
        """With etcd: what the last term recorded (runtime/recorded_state.py). Its epochs are
        continued (rule 12, also for VNFCs this manager cannot adopt), then this term keeps the
        records. Unreadable: noted, and the records are written over as this term decides."""
        if self.leadership is None or not self.leadership.records_state:
            return
        from nfvha.sdk.stores import StoreUnavailable

        recorded: rs.Records = {}
        try:
            recorded, malformed = await self.leadership.read_state()
        except StoreUnavailable as exc:
            self.trace.record("note", "StateUnread", src="nfvha", why=str(exc))
        else:
            for name in malformed:
                self.trace.record(
                    "note",
                    "RecordRefused",
                    src="nfvha",
                    data={"record": name},
                    why=f"state record {name!r} in etcd is not a JSON object: ignored",
                )
        if recorded:
            epochs = rs.epochs(recorded)
            self.dispatcher.continue_epochs({n: e for n, e in epochs.items() if n in self.vnfs})
            self.trace.record(
                "note",
                "RecordedState",
                src="nfvha",
                data={"records": len(recorded), "epochs": epochs},
                why="the previous term's records: epochs continue above them",
            )
        self.state_writer = rs.StateWriter(self.leadership, self._records, self.trace)
        self.state_writer.start(recorded)

    def _records(self) -> rs.Records:
        ha = [vnf.manager.snapshot() for vnf in self.vnfs.values()]
        return rs.records_of(ha, self.vim.snapshot() if self.vim is not None else None)

    async def _until_fenced_elsewhere(self) -> None:
        """Nothing to adopt here, but a previous term may have left VNFCs running where this
        manager cannot see them (another machine, with etcd): each active among them holds its
        role for at most one role lease (a guest with watchdog fencing, one agent lease) after
        its last manager's belief ended, which was before this one's election. Wait that long
        before starting anyone, so two actives never serve one service (rule 1)."""
        previous = await self.leadership.previous_term_left() if self.leadership else None
        if previous:
            wait_ms = max(v.spec.policies.role_lease_ms for v in self.vnfs.values())
            if self.deployment.hosts and self.deployment.nfvi.fencing == "watchdog":
                wait_ms = max(wait_ms, self.deployment.nfvi.agent_lease_ms)
            self.trace.record(
                "note",
                "WaitingForFencing",
                src="nfvha",
                data={"previous": previous, "wait_ms": wait_ms},
                why=f"{previous} left VNFCs this manager cannot see or adopt: waiting one lease "
                "for any active among them to stop serving before starting the service",
            )
            await asyncio.sleep(wait_ms / 1000)
        if self.leadership is not None:
            await self.leadership.record_deployed()

    def _plain_role(self, vnfc: str) -> str:
        """What a plain process that a dead manager left is: it serves as it runs; behind a
        virtual IP, only while its node holds the address (the kernel says)."""
        vip = self.vnfs[self.owner[vnfc]].spec.service.vip
        return "active" if vip is None or self.nodes.holds(vnfc, vip) else "standby"

    async def _renew_leases(self) -> None:
        """Every component hears from its manager at least four times per role lease: an
        active that stops hearing fences itself (the SDK)."""
        period = min(v.spec.policies.role_lease_ms for v in self.vnfs.values()) / 4000
        while True:
            await asyncio.sleep(period)
            for link in list(self.links.values()):
                lease = self.vnfs[self.owner[link.vnfc]].spec.policies.role_lease_ms
                link.send("lease", ms=lease)

    async def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self.state_writer is not None:  # what stops now is not recorded: the stop deletes it
            await self.state_writer.close()
        self.trace.record("note", "DeploymentStopping", src="nfvha")
        for monitor in self.monitors.values():
            monitor.stop()
        grace = max(v.spec.policies.cleanup_grace_ms for v in self.vnfs.values()) / 1000
        await self.procs.shutdown(grace)
        await self.pools.close()
        if self.nfvi is not None:
            await self.nfvi.shutdown()
        await asyncio.to_thread(self.nodes.close)
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            server.close()
        for link in self.links.values():
            link.writer.close()
        await self.connections.close()
        await self.hooks.close()
        if self.metrics is not None:
            self.metrics.close()
        for vnf in self.vnfs.values():
            if vnf.store:
                vnf.store.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        if self._peers_on_disk:
            shutil.rmtree(peer_dir(self.runtime_dir), ignore_errors=True)
            with contextlib.suppress(OSError):  # the last deployment's: the base goes too
                peer_dir(self.runtime_dir).parent.rmdir()
        self.trace.record("note", "DeploymentStopped", src="nfvha")
        self.stopped.set()

    # --- events in ----------------------------------------------------------------------------

    def feed(self, target: str, event: Traced) -> None:
        """An observed event for a manager: a VNF's name (its HA manager), "vnfm" or "vim"."""
        if self._stopping:
            return
        self._run(lambda now: self.dispatcher.feed(target, event, now), target)
        up = isinstance(event, (m.ComponentRegistered, m.HealthCheckPassed))
        if up and event.vnfc in self._niced:  # a repair that is up: at everyone's priority
            self._niced.discard(event.vnfc)
            self.procs.renice(event.vnfc, 0)

    def _repair_nice(self, vnf: VnfRuntime) -> int:
        """Below the serving active while the service is up (and only as root: lowering the
        niceness again needs it)."""
        served = vnf.manager.snapshot()["service"]["up"]
        return REPAIR_NICE if served and os.geteuid() == 0 else 0

    def _run(self, step: Any, target: str = "") -> None:
        """One step of the dispatcher, its outputs carried out. A bug must not stop the
        managers of every other VNF: it is traced and the engine goes on."""
        try:
            d.execute(step(time.monotonic()), self)
            self.pools.reconcile()
        except Exception as exc:
            traceback.print_exc()
            src = self.label(target) if target else "nfvha"
            self.trace.record("note", "InternalError", src=src, why=repr(exc))

    # --- drivers (the dispatcher's interface) -------------------------------------------------

    def trace_record(self, rec: d.Record) -> None:
        self.trace.record(rec.kind, rec.name, src=rec.src, dst=rec.dst, data=rec.data, why=rec.why)
        if rec.name == "Escalate":  # for a manager that takes over from this one
            names = {e.vnfc for e in self.vnfm.escalations} | {(rec.data or {}).get("vnfc", "")}
            self.record.set_escalated(sorted(n for n in names if n in self.owner))

    def _observe(self, rec: dict[str, Any]) -> None:
        """Every trace record, as it is made: escalations and failovers to stderr (journald),
        metrics, notify hooks. None of it may break or hold up the managers."""
        try:
            if self.state_writer is not None and rec["kind"] in ("command", "event"):
                self.state_writer.changed()
            for outcome in self.outcomes.feed(rec):
                journal.emit(outcome)
                if self.metrics is not None:
                    self.metrics.apply(outcome)
                self.hooks.notify(outcome)
        except Exception:
            traceback.print_exc()  # not traced: tracing it would come back here

    def start_vnfc(self, vnf: str, cmd: m.StartVnfc) -> None:
        self._spawn_task(self._start_vnfc(self.vnfs[vnf], cmd.vnfc, cmd.token))

    def cleanup(self, vnf: str, cmd: m.Cleanup) -> None:
        # A standby being isolated holds no more writes (the core dropped it): the active is
        # told at once, and writes through the manager with the whole state, rather than keep
        # acknowledging through a standby that may be alive but cut off until it is killed.
        self._pair(vnf)
        self._spawn_task(self._cleanup(vnf, cmd))

    def assign_role(self, vnf: str, cmd: m.AssignRole, state: dict[str, Any]) -> None:
        spec = self.vnfs[vnf].spec
        if link := self.links.get(cmd.vnfc):
            link.send(
                "assign",
                role=cmd.role,
                epoch=cmd.epoch,
                state=state,
                version=self.vnfs[vnf].checkpoints.version,
                sync=sync_spec(spec, self.deployment.name, self.state_dir),
                address=self._listen_address(vnf, cmd.vnfc),
                reuse_port=spec.redundancy.model == "n+m",
                lease_ms=spec.policies.role_lease_ms,
            )
        self._pair(vnf)

    def _pair(self, vnf: str) -> None:
        """Direct sync: tell the active where its standby listens. Sent again whenever either
        is assigned; the active ignores an address it is already connected to."""
        service = self.vnfs[vnf].checkpoints
        if self.vnfs[vnf].spec.sync != "direct" or service.writer is None:
            return
        if link := self.links.get(service.writer[0]):
            standby = service.standby
            link.send(
                "peer",
                address=peer_address(self.runtime_dir, standby, self._peers_on_disk)
                if standby
                else None,
            )

    def _listen_address(self, vnf: str, vnfc: str) -> str:
        """A pooled VNFC (or LB instance) listens on its own backend address; others on the
        service address."""
        spec = self.vnfs[vnf].spec
        return backend_address(spec, vnfc, self._node_ip(vnfc)) or self.nodes.listen_address(
            spec.service.address
        )

    def _node_ip(self, vnfc: str) -> str | None:
        """The address of the VNFC's network node (its VM's with hosts); None on loopback."""
        node = self.nodes.node_of_vnfc.get(vnfc)
        return node.address if node else None

    def _vms(self) -> dict[str, str]:
        """The VIM's view of each VM (its life), for pools of VMs."""
        vms = self.vim.snapshot()["vms"] if self.vim is not None else {}
        return {name: vm["state"] for name, vm in vms.items()}  # type: ignore[attr-defined]

    def watch_health(self, vnf: str, cmd: m.WatchHealth) -> None:
        self._watch(self.vnfs[vnf], cmd.vnfc, cmd.on)

    def service_address(self, vnf: str, cmd: m.ClaimAddress | m.ReleaseAddress) -> None:
        """The virtual IP, moved now (netlink, then gratuitous ARP for a claim): before the
        assignment that follows it. Loopback mode has no virtual IP: the VNFC binds."""
        claim = isinstance(cmd, m.ClaimAddress)
        try:
            change = (self.nodes.claim if claim else self.nodes.release)(cmd.vnfc, cmd.address)
        except OSError as exc:  # refused: it cannot serve at the address
            reason = f"could not {'claim' if claim else 'release'} {cmd.address}: {exc}"
            self.trace.record("note", "AddressFailed", src="network", dst=cmd.vnfc, why=reason)
            if claim:
                self.feed(vnf, m.ErrorReported(vnfc=cmd.vnfc, reason=reason))
            return
        if change is not None:
            name = "AddressClaimed" if claim else "AddressReleased"
            self.trace.record("event", name, src="network", dst=cmd.vnfc, data=change)

    def set_timer(self, vnf: str, cmd: m.SetTimer) -> None:
        expired = m.TimerExpired(vnfc=cmd.vnfc, timer=cmd.timer, token=cmd.token)
        asyncio.get_running_loop().call_later(cmd.after_s, self.feed, vnf, expired)

    def nfvi_command(self, cmd: Traced) -> None:
        assert self.nfvi is not None
        if isinstance(cmd, v.CleanupVm) and self.pools.pools:
            self._spawn_task(self._cleanup_vm(cmd))
        else:
            self.nfvi.execute(cmd)

    async def _cleanup_vm(self, cmd: v.CleanupVm) -> None:
        """A lost VM leaves its load balancer's pool before it is isolated (section 3.1)."""
        await self.pools.excluded_vm(cmd.vm)
        assert self.nfvi is not None
        self.nfvi.execute(cmd)

    def alarm(self, cmd: v.Alarm) -> None:
        self.alarms.append({"t": time.time(), **cmd.fields()})

    def data(self, out: d.Data) -> None:
        action = out.action
        if isinstance(action, ck.Ack):
            if link := self.links.get(action.vnfc):
                link.send("ckpt_done", req=action.request)
        elif isinstance(action, ck.Refuse):
            if link := self.links.get(action.vnfc):
                fields = {"state": out.state} if out.state is not None else {}
                link.send("refused", req=action.request, reason=action.reason, **fields)
        elif isinstance(action, ck.Replicate):
            link = self.links.get(action.standby)
            if link is None:
                self._run(lambda now: self.dispatcher.standby_gone(out.vnf, action.standby, now))
            else:
                link.send("replicate", version=action.version, updates=action.updates)
        elif isinstance(action, ck.Persist):
            self._spawn_task(self._persist(out.vnf, action))

    async def _persist(self, vnf: str, action: ck.Persist) -> None:
        store = self.vnfs[vnf].store
        assert store is not None
        try:
            await store.write(action.version, action.epoch, action.state)
        except StoreError as exc:
            reason = exc.strerror or str(exc)
            self._run(lambda now: self.dispatcher.persist_failed(vnf, reason, now), vnf)
        else:
            done = self.dispatcher.persisted
            self._run(lambda now: done(vnf, action.version, action.state, now), vnf)

    # --- VNFC processes -----------------------------------------------------------------------

    async def _start_vnfc(self, vnf: VnfRuntime, name: str, token: int) -> None:
        spec = next(c for c in vnf.spec.vnfcs if c.name == name)
        env = dict(os.environ)
        # The interpreter's own bin first: entry points of the installed package resolve there.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(spec.env)
        env.update(
            {
                ENV_SOCKET: str(self.component_socket),
                ENV_VNFC: name,
                ENV_ADDRESS: self._listen_address(vnf.spec.name, name),
            }
        )
        if vnf.spec.sync == "direct":
            env[ENV_PEER] = peer_address(self.runtime_dir, name, self._peers_on_disk)
        try:
            self.pools.prepare(name)  # an LB instance: its configuration, with today's pool
            vm = self.placement.vnfc_vm[name] if self.placement else None
            if vm is None:
                nice = self._repair_nice(vnf)
                how = StartSpec(
                    signal.Signals[spec.stop_signal],
                    spec.user,
                    spec.group,
                    spec.limits.files(),
                    self.nodes.vnfc_netns(name),
                    nice,
                )
                pid = await self.procs.spawn(name, spec.command, env, self.base_dir, how)
                if nice:
                    self._niced.add(name)
                    self.trace.record(
                        "note",
                        "StartedBelow",
                        src="nfvha",
                        dst=name,
                        data={"nice": nice},
                        why="a repair while the service is served: its start-up must not "
                        "take the CPU from the active (recover first, repair after)",
                    )
            else:
                argv = self.nodes.in_netns(name, spec.command)
                pid = await self.nfvi.start_vnfc(vm, name, argv, env, self.base_dir)
                self.procs.adopt(name, pid, str(self.nfvi.vnfc_zone(vm, name)))
        except VmUnreachable as exc:
            event = m.StartFailed(vnfc=name, reason=str(exc), vm_unreachable=True, token=token)
            self.feed(vnf.spec.name, event)
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.feed(
                vnf.spec.name,
                m.StartFailed(vnfc=name, reason=f"{spec.command[0]}: {reason}", token=token),
            )
            return
        self.feed(vnf.spec.name, m.ProcessStarted(vnfc=name, pid=pid))

    async def _cleanup(self, vnf_name: str, cmd: m.Cleanup) -> None:
        await self.pools.excluded(vnf_name, cmd.vnfc)  # out of its load balancer's pool first
        ok, detail = await self.procs.cleanup(cmd.vnfc, cmd.grace_s)
        link = self.links.pop(cmd.vnfc, None)
        if link:
            link.writer.close()
        self.feed(vnf_name, m.CleanupDone(vnfc=cmd.vnfc, ok=ok, detail=detail))

    def _watch(self, vnf: VnfRuntime, name: str, on: bool) -> None:
        monitor = self.monitors.pop(name, None)
        if monitor:
            monitor.stop()
        if not on:
            return
        spec = vnf.spec.policies.health_check
        probe = (
            (lambda: self._sdk_ping(name))
            if spec.kind == "sdk"
            else network_probe(
                spec,
                backend_address(vnf.spec, name, self._node_ip(name))
                or self.nodes.check_address(name, vnf.spec.service.address),
                self.nodes.netns(MGMT),
            )
        )

        def report(ok: bool, reason: str) -> None:
            event = (
                m.HealthCheckPassed(vnfc=name)
                if ok
                else m.HealthCheckFailed(vnfc=name, reason=reason)
            )
            self.feed(vnf.spec.name, event)

        self.monitors[name] = HealthMonitor(spec, probe, report)
        self.monitors[name].start()

    async def _sdk_ping(self, name: str) -> str | None:
        link = self.links.get(name)
        if link is None:
            return "not connected"
        ping_id = next(self._ping_ids)
        answer = asyncio.get_running_loop().create_future()
        link.pings[ping_id] = answer
        link.send("ping", id=ping_id)
        try:
            ok = await answer
        finally:
            link.pings.pop(ping_id, None)
        return None if ok else "component reports itself unhealthy"

    # --- component connections ----------------------------------------------------------------

    async def _serve_component(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        link: Link | None = None
        in_a_row = 0  # malformed lines from a registered component
        try:
            while line := await self._component_line(reader, link):
                try:
                    link = self._on_component_message(link, writer, decode_from_component(line))
                    in_a_row = 0
                except ProtocolError as exc:
                    in_a_row += 1
                    if link is None or in_a_row >= REFUSALS_IN_A_ROW:
                        self._refuse(link, writer, f"{exc}; connection dropped")
                        break
                    self._refuse(link, writer, str(exc))
        except TimeoutError:
            self._refuse(link, writer, f"no hello within {HELLO_TIMEOUT_S:g} s, connection dropped")
        except ValueError as exc:  # a line over the limit: the rest of it is never read
            self._refuse(link, writer, f"line too long, connection dropped: {exc}")
        except ConnectionError:
            pass  # the component died; its process exit is what the manager acts on
        finally:
            writer.close()
            if link is not None and self.links.get(link.vnfc) is link:
                del self.links[link.vnfc]

    async def _component_line(self, reader: asyncio.StreamReader, link: Link | None) -> bytes:
        """The next line: before hello a small one (HELLO_LINE), within HELLO_TIMEOUT_S; after
        it up to MAX_LINE. StreamReader has no public setter for the limit it was made with."""
        if link is not None:
            reader._limit = MAX_LINE
            return await reader.readline()
        reader._limit = HELLO_LINE
        return await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_S)

    def _refuse(self, link: Link | None, writer: asyncio.StreamWriter, reason: str) -> None:
        self._refusals.record("note", "MessageRefused", src=link.vnfc if link else "?", why=reason)
        if not writer.is_closing():
            writer.write(encode("refused", reason=reason))

    def _on_component_message(
        self, link: Link | None, writer: asyncio.StreamWriter, msg: dict[str, Any]
    ) -> Link | None:
        kind = msg["t"]
        if kind == "hello":
            return self._hello(link, writer, msg)
        if link is None:
            raise ProtocolError(f"{kind} before hello")
        vnf_name = self.owner[link.vnfc]
        if kind == "pong":
            fut = link.pings.get(msg["id"])
            if fut is not None and not fut.done():
                fut.set_result(msg["ok"])
        elif kind == "ckpt_write":
            epoch, req, updates = msg["epoch"], msg["req"], msg["updates"]
            ver = msg.get("ver") if type(msg.get("ver")) is int else None
            write = self.dispatcher.write
            self._run(lambda now: write(link.vnfc, epoch, req, updates, now, version=ver))
        elif kind == "ckpt_ack":
            version = msg["version"]
            self._run(lambda now: self.dispatcher.standby_acked(link.vnfc, version, now))
        elif kind == "role_ok":
            self.feed(
                vnf_name, m.RoleConfirmed(vnfc=link.vnfc, role=msg["role"], epoch=msg["epoch"])
            )
        elif kind == "error":
            state, version = msg.get("state"), msg.get("version")
            if isinstance(state, dict) and type(version) is int:  # what it held, newer maybe
                self.dispatcher.offered(link.vnfc, version, state)
            self.feed(vnf_name, m.ErrorReported(vnfc=link.vnfc, reason=msg["reason"][:200]))
        return link

    def _hello(self, link: Link | None, writer: asyncio.StreamWriter, msg: dict[str, Any]) -> Link:
        name, pid = msg["vnfc"], msg["pid"]
        if link is not None:
            raise ProtocolError("hello sent twice")
        if name not in self.owner:
            raise ProtocolError(f"unknown VNFC {name!r}")
        if not self._belongs_to(name, writer):
            raise ProtocolError(f"the peer (pid {pid}) is not a process nfvha started for {name}")
        if name in self.links:
            raise ProtocolError(f"{name} is already connected")
        resume = _resume(msg.get("resume"))
        link = self.links[name] = Link(name, writer)
        if resume is None:
            self.feed(self.owner[name], m.ComponentRegistered(vnfc=name))
        elif self._adopting:
            self._resumed[name] = resume
        else:
            self._resumed_later(name, resume[0])
        return link

    def _resumed_later(self, name: str, said: Resumed) -> None:
        """A component back after losing its connection: it keeps its role, unless it has
        fenced itself meanwhile (its lease expired), which fails it."""
        held = self.vnfs[self.owner[name]].manager.vnfcs[name]
        if held.life is Life.RUNNING and held.role is not Role.NONE and said.role != held.role:
            reason = f"it holds role {said.role}, not {held.role.value} (its lease expired)"
            self.feed(self.owner[name], m.ErrorReported(vnfc=name, reason=reason))

    def _belongs_to(self, name: str, writer: asyncio.StreamWriter) -> bool:
        """The kernel's word (SO_PEERCRED), not the message's: is the peer in the VNFC's group?"""
        leader = self.procs.pid_of(name)
        sock = writer.get_extra_info("socket")
        if leader is None or sock is None:
            return False
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer_pid = struct.unpack("3i", creds)[0]
        try:
            return peer_pid == leader or os.getpgid(peer_pid) == leader
        except ProcessLookupError:
            return False

    # --- process exits, faults ----------------------------------------------------------------

    def _on_exit(self, name: str, pid: int, status: str) -> None:
        self.feed(self.owner[name], m.ProcessExited(vnfc=name, status=status))

    def operate(self, verb: str, target: str, on: bool = True) -> dict[str, Any]:
        """An operator's verb (runtime/control.py); raises ha.OperatorRefused, before anything
        changes, when it cannot be done now."""
        now = time.monotonic()
        if verb in ("switchover", "maintenance"):
            if target not in self.vnfs:
                raise KeyError(f"no VNF named {target!r}")
            outputs = self.dispatcher.operate(target, verb, now, on)
        else:
            if target not in self.owner:
                raise KeyError(f"no VNFC named {target!r}")
            event = m.OperatorRequest(vnfc=target, action=verb)  # type: ignore[arg-type]
            outputs = self.dispatcher.feed(self.owner[target], event, now)
        d.execute(outputs, self)
        return {"verb": verb, "target": target}

    def reload(self) -> dict[str, Any]:
        """Read the deployment file again; apply in place what can be, restart only the VNFCs
        whose definition changed (one at a time, an active handing over first). Raises
        ConfigError or OperatorRefused, before anything changes, when it cannot be applied."""
        if self.config_path is None:
            raise OperatorRefused("this manager does not know its deployment file")
        new, _ = load_config(self.config_path)
        change = reload.plan(self.deployment, new)
        if change.refused:
            raise OperatorRefused(
                f"{self.config_path}: {'; '.join(change.refused)}: needs a restart of nfvha run"
            )
        self.deployment = new
        specs = {v.name: v for v in new.vnfs}
        for name, vnf in self.vnfs.items():
            vnf.spec = specs[name]
            self.dispatcher.reconfigure(specs[name])
        for name in change.updated:  # a new health check takes effect now
            for vnfc in [c.name for c in specs[name].vnfcs if c.name in self.monitors]:
                self._watch(self.vnfs[name], vnfc, True)
        self.hooks.hooks = {v.name: v.hooks for v in new.vnfs if v.hooks is not None}
        data = {"updated": change.updated, "restart": [n for _, n in change.restart]}
        self.trace.record("note", "Reloaded", src="operator", data=data)
        if change.restart:
            self._spawn_task(self._roll(change.restart))
        return data

    async def _roll(self, items: list[tuple[str, str]]) -> None:
        """Restart each VNFC in turn, the active last and after a switchover when it has a
        standby, each once its VNF serves again with it back (or a bound on waiting)."""
        items = sorted(items, key=lambda item: self._is_active(*item))
        for vnf, name in items:
            mgr = self.vnfs[vnf].manager
            if self._is_active(vnf, name) and mgr.vnf.redundancy.model == "2n":
                with contextlib.suppress(OperatorRefused):  # no standby: restarted in place
                    self.operate("switchover", vnf)
                    await self._until(lambda n=name, g=mgr: g.vnfcs[n].role is Role.STANDBY)
            self.operate("restart", name)
            await self._until(lambda n=name, g=mgr: g.vnfcs[n].life is Life.RUNNING)
            await self._until(lambda g=mgr: bool(g.snapshot()["service"]["up"]))  # type: ignore[index]

    def _is_active(self, vnf: str, name: str) -> bool:
        return self.vnfs[vnf].manager.vnfcs[name].role is Role.ACTIVE

    @staticmethod
    async def _until(cond: Any, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def inject(self, kind: str, target: str) -> dict[str, Any]:
        """Fault injection (nfvha.faults.RUNTIME): a VNFC by signal, a VM or host by the NFVI."""
        if kind in FAULTS:
            if target not in self.owner:
                raise KeyError(f"no VNFC named {target!r}")
            pid = self.procs.signal(target, FAULTS[kind])
            self.trace.record("fault", kind, src="operator", dst=target, data={"pid": pid})
            return {"vnfc": target, "pid": pid, "fault": kind}
        if self.nfvi is None:
            raise KeyError(f"fault {kind!r} needs hosts and VMs in the deployment")
        answer = self.nfvi.inject(kind, target)
        self.trace.record("fault", kind, src="operator", dst=target)
        return answer

    # --- helpers ------------------------------------------------------------------------------

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def all_up(self) -> bool:
        """Every VNF's service is served by a confirmed active."""
        return all(vnf.manager.snapshot()["service"]["up"] for vnf in self.vnfs.values())

    def _leader_status(self) -> dict[str, Any]:
        status = self.leadership.describe() if self.leadership else {}
        if self.state_writer is not None:
            status["state_records"] = len(self.state_writer.written)
            status["state_writes"] = self.state_writer.writes
        return status

    def status(self) -> dict[str, Any]:
        vnfs = []
        for vnf in self.vnfs.values():
            snap = vnf.manager.snapshot()
            snap["state"] = vnf.spec.state_mode
            snap["state_sync"] = vnf.spec.sync
            snap["degraded"] = vnf.checkpoints.degraded
            snap["checkpoint_version"] = vnf.checkpoints.version
            snap["store_error"] = vnf.checkpoints.store_error
            snap["error_open"] = vnf.spec.service.name in self.errors_open
            # Where consumers reach it in the mode in use (the VIP in netns mode); a pooled
            # VNF through its load balancer.
            front = self.vnfs.get(lb_vnf_name(vnf.spec.name)) if vnf.spec.load_balancer else None
            snap["service"]["reach"] = (front or vnf).spec.service.address_in(self.nodes.mode)
            vnfs.append(snap)
        status = {
            "deployment": self.deployment.name,
            "manager_pid": os.getpid(),
            "leader": self._leader_status(),
            "vnfs": vnfs,
            "escalations": self.escalations,
            "network": self.nodes.snapshot(),
        }
        if self.pools.pools:
            status["pools"] = self.pools.snapshot()
        if self.vim is not None:
            status["nfvi"] = {**self.vim.snapshot(), "alarms": self.alarms[-50:]}
            status["nfvi"]["agents"] = self.nfvi.agents() if self.nfvi else {}
            status["nfvi"]["host_agents"] = self.nfvi.host_agents() if self.nfvi else {}
            status["placement"] = dict(self.placement.vnfc_vm)
        return status


def _resume(value: Any) -> tuple[Resumed, dict[str, Any]] | None:
    """The ``resume`` of a hello: the role, epoch and state a running component holds."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("role"), str)
        or not isinstance(value.get("epoch"), int)
        or not isinstance(value.get("state"), dict)
    ):
        raise ProtocolError("hello: 'resume' must be {role: str, epoch: int, state: object}")
    return Resumed(value["role"], value["epoch"]), value["state"]
