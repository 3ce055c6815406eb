"""The engine: one asyncio loop that connects the core managers to the drivers.

Events are queued and handled one at a time, so a command's own consequences (a process that
fails to start, say) are handled after the decision that caused them, never inside it. Every
event, command and inter-manager message goes to the trace with the manager's ``why``.
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
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfvha.config import Deployment, Vnf
from nfvha.core import checkpoint as ck
from nfvha.core import messages as m
from nfvha.core import routing
from nfvha.core import vim as v
from nfvha.core.ha import HAManager
from nfvha.core.messages import Traced
from nfvha.core.placement import Placement, plan, vm_specs
from nfvha.core.vim import Vim
from nfvha.core.vnfm import Vnfm
from nfvha.drivers import leftovers
from nfvha.drivers.health import HealthMonitor, network_probe
from nfvha.drivers.process import ProcessDriver
from nfvha.drivers.store import DiskStore, StoreError
from nfvha.runtime import paths
from nfvha.runtime.connections import Connections
from nfvha.runtime.nfvi import NfviRuntime, VmUnreachable
from nfvha.runtime.trace import Throttle, Trace
from nfvha.sdk import ENV_ADDRESS, ENV_SOCKET, ENV_VNFC
from nfvha.sdk.protocol import MAX_LINE, ProtocolError, decode_from_component, encode

FAULTS = {"kill": signal.SIGKILL, "hang": signal.SIGSTOP, "resume": signal.SIGCONT}

# The component socket admits strangers only briefly: a hello is a few dozen bytes and comes
# at once from a real component, so anything else before it is dropped at the first line.
HELLO_TIMEOUT_S = 2.0
HELLO_LINE = 4 << 10
REFUSALS_IN_A_ROW = 20  # malformed lines from a registered component before it is dropped
REFUSALS_TRACED = 20  # MessageRefused records per second; the rest are counted (Throttle)


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
    spec: Vnf
    manager: HAManager
    checkpoints: ck.CheckpointService
    store: DiskStore | None
    degraded_seen: bool = False


class Engine:
    def __init__(
        self, deployment: Deployment, base_dir: Path, trace: Trace, state_dir: Path
    ) -> None:
        self.deployment, self.base_dir, self.trace = deployment, base_dir, trace
        self.runtime_dir = paths.runtime_dir(deployment.name)
        if paths.socket_answers(control := paths.control_socket(deployment.name)):
            raise OSError(f"already running: {control} answers")  # its VNFCs are not leftovers
        self.component_socket = self.runtime_dir / "components.sock"
        self.state_dir = state_dir
        self.vnfs: dict[str, VnfRuntime] = {}
        self.owner: dict[str, str] = {}  # vnfc -> vnf
        self.links: dict[str, Link] = {}
        self.monitors: dict[str, HealthMonitor] = {}
        self.escalations: list[dict[str, Any]] = []
        self.errors_open: dict[str, dict[str, Any]] = {}
        self._queue: deque[tuple[str, m.Message]] = deque()
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._ping_ids = itertools.count(1)
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        record = leftovers.GroupRecord(self.runtime_dir / leftovers.RECORD)
        self.procs = ProcessDriver(self._on_exit, state_dir / "logs", record)
        self._servers: list[asyncio.AbstractServer] = []
        self.connections = Connections(trace)  # of the component and control sockets
        self._refusals = Throttle(trace, burst=REFUSALS_TRACED)
        for vnf in deployment.vnfs:
            self._add_vnf(vnf)
        self.alarms: list[dict[str, Any]] = []
        self.placement = plan(deployment)
        self.vim: Vim | None = None
        self.vnfm: Vnfm | None = None
        self.nfvi: NfviRuntime | None = None
        if self.placement is not None:
            self._add_nfvi(self.placement)

    def _add_nfvi(self, placement: Placement) -> None:
        specs = vm_specs(self.deployment, placement)
        nfvi = self.deployment.nfvi
        self.vim = Vim.build(list(placement.hosts), specs, nfvi.correlation_window_s)
        self.vnfm = Vnfm("vnfm", dict(placement.vnfc_vm), dict(self.owner))
        self.nfvi = NfviRuntime(
            self.deployment.name,
            placement,
            nfvi,
            self.runtime_dir / "nfvi.sock",
            report=lambda event: self.feed("vim", event),
            note=lambda name, why: self.trace.record("note", name, src="nfvi", why=why),
        )

    def _add_vnf(self, vnf: Vnf) -> None:
        store, epoch = None, 0
        service = ck.CheckpointService(vnf.state_mode)  # type: ignore[arg-type]
        if vnf.state_mode == "checkpoint":
            store = DiskStore(self.state_dir / "checkpoints" / f"{vnf.name}.log")
            service.version, epoch, service.state = store.load()
            service.durable = (service.version, dict(service.state))
            if store.discarded:
                self.trace.record(
                    "note",
                    "CheckpointTailDiscarded",
                    src=vnf.name,
                    data={"bytes": store.discarded, "version": service.version},
                    why="the log ended in a cut record (a crash or a full disk while appending); "
                    "it was never acknowledged",
                )
            if service.version:
                self.trace.record(
                    "note",
                    "CheckpointLoaded",
                    src=vnf.name,
                    data={"version": service.version, "epoch": epoch, "state": service.state},
                )
        self.vnfs[vnf.name] = VnfRuntime(vnf, HAManager(vnf, epoch=epoch), service, store)
        for c in vnf.vnfcs:
            self.owner[c.name] = vnf.name

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
        # A run that died without stopping may have left VNFCs that hold the service address.
        if self.nfvi is not None:
            await leftovers.remove_leftover_cgroup(self.nfvi.cgroups, self.trace)
        await leftovers.remove_leftover_groups(self.runtime_dir / leftovers.RECORD, self.trace)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)  # its stale sockets and record
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
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
        self.trace.record(
            "note", "DeploymentStarted", src="nfvha", data={"name": self.deployment.name}
        )
        if self.nfvi is not None:
            await self.nfvi.start()
            self.trace.record("note", "NfviUp", src="vim", data=self.vim.snapshot())
        now = time.monotonic()
        for name, vnf in self.vnfs.items():
            self._execute_all(name, vnf.manager.start(now), event=None)
        self.started.set()

    async def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.trace.record("note", "DeploymentStopping", src="nfvha")
        for monitor in self.monitors.values():
            monitor.stop()
        grace = max(v.spec.policies.cleanup_grace_ms for v in self.vnfs.values()) / 1000
        await self.procs.shutdown(grace)
        if self.nfvi is not None:
            await self.nfvi.shutdown()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            server.close()
        for link in self.links.values():
            link.writer.close()
        await self.connections.close()
        for vnf in self.vnfs.values():
            if vnf.store:
                vnf.store.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self.trace.record("note", "DeploymentStopped", src="nfvha")
        self.stopped.set()

    # --- events in ----------------------------------------------------------------------------

    def feed(self, target: str, event: Traced) -> None:
        """Queue an event for a manager: a VNF's name (its HA manager), "vnfm" or "vim".
        Events are handled strictly one after another, in the order they were fed."""
        self._queue.append((target, event))
        if len(self._queue) == 1:
            while self._queue:
                name, ev = self._queue[0]
                try:
                    self._handle(name, ev)
                except Exception as exc:  # a bug must not stop the manager of every other VNF
                    traceback.print_exc()
                    self.trace.record("note", "InternalError", src=self.label(name), why=repr(exc))
                finally:
                    self._queue.popleft()

    def label(self, target: str) -> str:
        """Trace name of a manager. A VNF without redundancy has no HA manager of its own: its
        VNFC life-cycle is the VNFM's (use cases 3, 4, 7, 8, 9), hence ``vnfm:NAME``."""
        if target in ("vim", "vnfm"):
            return target
        vnf = self.vnfs.get(target)
        return f"vnfm:{target}" if vnf and vnf.spec.redundancy.model == "none" else f"ha:{target}"

    def _handle(self, target: str, event: Traced) -> None:
        if self._stopping:
            return
        if target == "vim":
            manager: Any = self.vim
        elif target == "vnfm":
            manager = self.vnfm
        else:
            manager = self.vnfs[target].manager
        decision = manager.handle(event, time.monotonic())
        self._execute_all(target, decision, event)

    def _execute_all(self, target: str, decision: Any, event: Traced | None) -> None:
        label = self.label(target)
        if event is not None:
            self.trace.record(
                "event",
                event.name,
                src=event.subject,
                dst=label,
                data=event.fields(),
                why=decision.why,
            )
        else:
            self.trace.record("note", "ManagerStarted", src=label, why=decision.why)
        for command in decision.commands:
            self._route(target, label, command)

    def _route(self, target: str, label: str, cmd: Traced) -> None:
        """A command goes to a driver; a message goes to another manager (and the trace)."""
        if isinstance(cmd, v.Alarm):
            self.alarms.append({"t": time.time(), **cmd.fields()})
            self.trace.record("message", cmd.name, src=label, dst="operator", data=cmd.fields())
            return
        if target not in (routing.VIM, routing.VNFM) and isinstance(cmd, m.TO_VNFM):
            self._bookkeep(target, cmd)
        to = routing.destination(target, cmd, self.owner)
        if to is not None:
            self.trace.record("message", cmd.name, src=label, dst=self.label(to), data=cmd.fields())
            if to != routing.VNFM or self.vnfm is not None:
                self.feed(to, cmd)
            return
        self.trace.record("command", cmd.name, src=label, dst=cmd.subject, data=cmd.fields())
        if target == routing.VIM:
            self.nfvi.execute(cmd)
        else:
            self._execute(target, cmd)

    def _bookkeep(self, vnf_name: str, cmd: m.Message) -> None:
        if isinstance(cmd, m.Escalate):
            self.escalations.append({"vnf": vnf_name, **cmd.fields()})
        elif isinstance(cmd, m.ReportError):
            self.errors_open[cmd.service] = cmd.fields()
        elif isinstance(cmd, m.ClearError):
            self.errors_open.pop(cmd.service, None)

    # --- commands out -------------------------------------------------------------------------

    def _execute(self, vnf_name: str, cmd: m.Message) -> None:
        vnf = self.vnfs[vnf_name]
        if isinstance(cmd, m.StartVnfc):
            self._spawn_task(self._start_vnfc(vnf, cmd.vnfc, cmd.token))
        elif isinstance(cmd, m.Cleanup):
            self._ckpt(vnf, vnf.checkpoints.revoke(cmd.vnfc))
            self._spawn_task(self._cleanup(vnf_name, cmd))
        elif isinstance(cmd, m.AssignRole):
            self._assign(vnf, cmd)
        elif isinstance(cmd, m.WatchHealth):
            self._watch(vnf, cmd.vnfc, cmd.on)
        elif isinstance(cmd, m.SetTimer):
            expired = m.TimerExpired(vnfc=cmd.vnfc, timer=cmd.timer, token=cmd.token)
            asyncio.get_running_loop().call_later(cmd.after_s, self.feed, vnf_name, expired)

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
                ENV_ADDRESS: vnf.spec.service.address,
            }
        )
        try:
            vm = self.placement.vnfc_vm[name] if self.placement else None
            if vm is None:
                pid = await self.procs.spawn(name, spec.command, env, self.base_dir)
            else:
                pid = await self.nfvi.start_vnfc(vm, name, spec.command, env, self.base_dir)
                self.procs.adopt(name, pid)
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
        ok, detail = await self.procs.cleanup(cmd.vnfc, cmd.grace_s)
        link = self.links.pop(cmd.vnfc, None)
        if link:
            link.writer.close()
        self.feed(vnf_name, m.CleanupDone(vnfc=cmd.vnfc, ok=ok, detail=detail))

    def _assign(self, vnf: VnfRuntime, cmd: m.AssignRole) -> None:
        if cmd.role == "active":
            self._ckpt(vnf, vnf.checkpoints.grant(cmd.vnfc, cmd.epoch))
        elif cmd.role == "standby":
            vnf.checkpoints.attach_standby(cmd.vnfc)
            self._ckpt(vnf, [])
        link = self.links.get(cmd.vnfc)
        if not vnf.spec.sdk:
            # A plain process serves as soon as it runs; its health check already passed.
            self._soon(
                vnf.spec.name, m.RoleConfirmed(vnfc=cmd.vnfc, role=cmd.role, epoch=cmd.epoch)
            )
        elif link is not None:
            link.send(
                "assign",
                role=cmd.role,
                epoch=cmd.epoch,
                state=vnf.checkpoints.state,
                address=vnf.spec.service.address,
                reuse_port=vnf.spec.redundancy.model == "n+m",
            )

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
            else network_probe(spec, vnf.spec.service.address)
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

    # --- checkpoint data path -----------------------------------------------------------------

    def _ckpt(self, vnf: VnfRuntime, actions: list[ck.Action]) -> None:
        """Carry out the checkpoint service's actions. The data path is not traced per write
        (docs/adr/001); refusals and changes of redundancy (degraded or not) are."""
        if vnf.checkpoints.degraded != vnf.degraded_seen:
            vnf.degraded_seen = vnf.checkpoints.degraded
            self.trace.record(
                "note",
                "Degraded" if vnf.degraded_seen else "Redundant",
                src=self.label(vnf.spec.name),
                data={"version": vnf.checkpoints.version},
                why="no standby holds the state; writes are acknowledged from the manager's replica"
                if vnf.degraded_seen
                else "a standby holds the state again",
            )
        for action in actions:
            if isinstance(action, ck.Ack):
                if link := self.links.get(action.vnfc):
                    link.send("ckpt_done", req=action.request)
            elif isinstance(action, ck.Refuse):
                self.trace.record(
                    "message",
                    "CheckpointRefused",
                    src=self.label(vnf.spec.name),
                    dst=action.vnfc,
                    why=action.reason,
                )
                if link := self.links.get(action.vnfc):
                    link.send("refused", req=action.request, reason=action.reason)
            elif isinstance(action, ck.Replicate):
                link = self.links.get(action.standby)
                if link is None:
                    self._ckpt(vnf, vnf.checkpoints.drop_standby(action.standby))
                else:
                    link.send("replicate", version=action.version, updates=action.updates)
            elif isinstance(action, ck.Persist):
                self._spawn_task(self._persist(vnf, action))

    async def _persist(self, vnf: VnfRuntime, action: ck.Persist) -> None:
        assert vnf.store is not None
        service = vnf.checkpoints
        failing_before = service.store_error
        try:
            await vnf.store.write(action.version, action.epoch, action.state)
        except StoreError as exc:
            self._store_failed(vnf, exc.strerror or str(exc))
        else:
            self._ckpt(vnf, service.persisted(action.version, action.state))
        writer = service.writer[0] if service.writer else None
        if writer and failing_before and not service.store_error:
            self.feed(vnf.spec.name, m.StoreRecovered(vnfc=writer))

    def _store_failed(self, vnf: VnfRuntime, reason: str) -> None:
        """Every write not yet durable is refused, with the durable state, so the component
        neither acknowledges nor serves what the disk does not hold. Traced once per failure
        and per refused batch, not per write (a full disk under load refuses thousands)."""
        service = vnf.checkpoints
        failing_before = service.store_error
        refused = service.persist_failed(reason)
        for action in refused:
            if link := self.links.get(action.vnfc):
                link.send("refused", req=action.request, reason=action.reason, state=service.state)
        if refused:
            self.trace.record(
                "message",
                "CheckpointRefused",
                src=self.label(vnf.spec.name),
                dst=refused[0].vnfc,
                data={"writes": len(refused), "store_error": reason},
                why=refused[0].reason,
            )
        writer = service.writer[0] if service.writer else (refused[0].vnfc if refused else None)
        if writer and not failing_before:
            self.feed(vnf.spec.name, m.StoreFailed(vnfc=writer, reason=reason))

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
        vnf = self.vnfs[vnf_name]
        if kind == "pong":
            fut = link.pings.get(msg["id"])
            if fut is not None and not fut.done():
                fut.set_result(msg["ok"])
        elif kind == "ckpt_write":
            self._ckpt(
                vnf, vnf.checkpoints.write(link.vnfc, msg["epoch"], msg["req"], msg["updates"])
            )
        elif kind == "ckpt_ack":
            self._ckpt(vnf, vnf.checkpoints.standby_acked(link.vnfc, msg["version"]))
        elif kind == "role_ok":
            self.feed(
                vnf_name, m.RoleConfirmed(vnfc=link.vnfc, role=msg["role"], epoch=msg["epoch"])
            )
        elif kind == "error":
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
        link = self.links[name] = Link(name, writer)
        self.feed(self.owner[name], m.ComponentRegistered(vnfc=name))
        return link

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

    def inject(self, kind: str, target: str) -> dict[str, Any]:
        """Fault injection: kill/hang/resume a VNFC; crash-vm/hang-vm a VM; crash-host a host."""
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

    def _soon(self, vnf_name: str, event: m.Message) -> None:
        asyncio.get_running_loop().call_soon(self.feed, vnf_name, event)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def status(self) -> dict[str, Any]:
        vnfs = []
        for vnf in self.vnfs.values():
            snap = vnf.manager.snapshot()
            snap["state"] = vnf.spec.state_mode
            snap["degraded"] = vnf.checkpoints.degraded
            snap["checkpoint_version"] = vnf.checkpoints.version
            snap["store_error"] = vnf.checkpoints.store_error
            snap["error_open"] = vnf.spec.service.name in self.errors_open
            vnfs.append(snap)
        status = {"deployment": self.deployment.name, "vnfs": vnfs, "escalations": self.escalations}
        if self.vim is not None:
            status["nfvi"] = {**self.vim.snapshot(), "alarms": self.alarms[-50:]}
            status["placement"] = dict(self.placement.vnfc_vm)
        return status
