"""The NFVI driver: the VIM's hands and eyes on this machine. It starts host agents (each
starting guest agents, the VMs), fences hosts and cleans VMs up through their cgroups
(drivers.cgroups), and watches the agents' heartbeats.

Contracts (each answered as an event to the VIM core):
- ``fence_host`` / ``cleanup_vm``: ``cgroup.kill`` of the zone, then True only once the kernel
  says the cgroup holds no process (``populated 0``).
- ``start_host`` / ``start_vm``: the agent is started inside its cgroup; it is up when it has
  said hello on the NFVI socket.
- An agent silent for ``heartbeat_misses`` x ``heartbeat_interval`` is reported once (host or
  VM failed by heartbeat); a guest's exit is reported by its host agent at once.
- Every line from an agent is checked (``nfvha.agents.protocol``); a malformed one is traced as
  ``MessageRefused`` and dropped.
- Transport ``tls``: guests dial the driver over TCP with mutual TLS; a guest is known by its
  certificate, its host's, and may say hello only as a VM (or standby VM) of that host.
- Host agents ``external``: none is spawned; once the TLS listener is up, ``on_listening`` is
  given its ``endpoint()`` (the engine publishes it in etcd for the agents, ``nfvha agent``),
  and a host is up when its agent says hello, on its own certificate only.
- Fencing ``watchdog``: every numbered heartbeat of a guest is answered with a lease; a VM
  that is not connected is counted isolated (``VmCleanedUp``) only once a lease has passed
  since the last heartbeat answered (plus a margin), and the kernel then finds its cgroup
  empty: the guest fenced itself. No lease is given to a VM being isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nfvha.agents.protocol import decode_from_agent
from nfvha.config import Nfvi
from nfvha.core import vim as v
from nfvha.core.heartbeat import AgentKind, Heartbeats
from nfvha.core.messages import Traced
from nfvha.core.placement import Placement, standby_name
from nfvha.core.watchdog import VimLeases
from nfvha.drivers import leftovers
from nfvha.drivers.cgroups import Cgroups, in_cgroup
from nfvha.drivers.fencing import KernelFence, WatchdogFence
from nfvha.runtime.connections import Connections
from nfvha.sdk.protocol import MAX_LINE, ProtocolError, encode

RPC_TIMEOUT_S = 2.0
STANDBY_NICE = 15


def is_standby(guest: str) -> bool:
    return guest.endswith(".standby")


class VmUnreachable(OSError):
    pass


@dataclass(slots=True)
class AgentLink:
    kind: AgentKind
    name: str
    writer: asyncio.StreamWriter
    pid: int = 0
    closed: bool = False  # its connection ended; only its heartbeat timeout reports it


ADOPT_WAIT_S = 1.0  # agents reconnect within 50 ms; a loaded machine gets its margin
HELLO_WAIT_S = 30.0  # an agent started (or, external, expected) that has not said hello by then


class NfviDriver:
    def __init__(
        self,
        deployment: str,
        placement: Placement,
        spec: Nfvi,
        socket_path: Path,
        report: Callable[[Traced], None],
        note: Callable[[str, str], None],
    ) -> None:
        self.placement, self.spec, self.socket_path = placement, spec, socket_path
        self.report, self.note = report, note
        self.vm_host = dict(placement.vm_host)
        self.cgroups = Cgroups(deployment)
        self.links: dict[tuple[str, str], AgentLink] = {}
        self._hello: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._rpc: dict[int, tuple[str, asyncio.Future[int]]] = {}  # req -> (vm, answer)
        self._ids = itertools.count(1)
        self._agents: list[subprocess.Popen] = []
        self._server: asyncio.AbstractServer | None = None
        self._servers: list[asyncio.AbstractServer] = []  # the network listener, with tls
        self._tasks: set[asyncio.Task] = set()
        self.connections = Connections()
        # Every agent and VNFC pid seen: orphaned when their parents die first (a host crash),
        # they are reparented to us (a subreaper) and must be reaped here.
        self.known_pids: set[int] = set()
        self.zone_of: dict[str, Path] = {}  # guest (VM or standby) -> its cgroup
        self.promoted: dict[tuple[str, str], str] = {}  # (host, standby name) -> VM it became
        self.booted = False
        # External host agents (nfvi.host_agents): told where this leader listens, once it does.
        self.on_listening: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.token = 1  # the leader's fencing token, carried by every command (agents check it)
        # Where guests dial (transport tls) and live (netns mode): set by use_network.
        self.listen: tuple[str | None, str] | None = None  # (netns, address) to listen on
        self.guest_netns: dict[str, str] = {}
        self.cluster_dir: Path | None = None
        self.leases = VimLeases(spec.agent_lease_ms / 1000)  # core/watchdog.py
        self.fence = (
            WatchdogFence(self.cgroups, self.leases)
            if spec.fencing == "watchdog"
            else KernelFence(self.cgroups)
        )
        # When silence means failure is the core's rule; the driver only feeds it the beats.
        self.heartbeats = Heartbeats(spec.heartbeat_interval_ms / 1000, spec.heartbeat_misses)

    # --- life -----------------------------------------------------------------------------------

    def use_network(
        self, listen: tuple[str | None, str], guest_netns: dict[str, str], cluster_dir: Path | None
    ) -> None:
        """Where the guests live (their VM's node namespace) and, with transport tls, where
        they dial: ``listen`` = (namespace or None, IP) of the management node."""
        self.listen, self.guest_netns, self.cluster_dir = listen, guest_netns, cluster_dir

    async def _serve_network(self) -> asyncio.AbstractServer:
        """The mutual-TLS listener guests dial (``tls``), in the management namespace if any."""
        import socket

        from nfvha.drivers import network, tls

        assert self.listen is not None and self.cluster_dir is not None
        netns, address = self.listen

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, self.spec.port))
            sock.listen(256)
            sock.setblocking(False)
            return sock

        sock = network.in_namespace(netns, make) if netns else make()
        context = tls.ServerContexts(self.cluster_dir, self.spec.manager_member)
        context()  # made now: unusable cluster files fail the start, not each handshake

        def refused(refusal: tls.Refusal) -> None:
            self.note("PeerRefused", f"{refusal.peer}: {refusal.reason}")
            tls.log_refusal(refusal)

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            reader._limit = MAX_LINE  # type: ignore[attr-defined]
            await self._serve(reader, writer, tls.peer_member(writer))

        return await tls.start_server(
            self.connections.serve(handler), None, None, context, on_refused=refused, sock=sock
        )

    def _dial(self, host: str) -> dict[str, Any] | None:
        if self.spec.transport != "tls" or self.listen is None or self.cluster_dir is None:
            return None
        return {
            "host": self.listen[1],
            "port": self.spec.port,
            "dir": str(self.cluster_dir),
            "member": host,
            "server": self.spec.manager_member,
        }

    async def start(self, adopt: bool = False) -> list[str]:
        """Boot every host and VM. ``adopt``: a manager that died left its agents running
        (they outlive it, as hosts and VMs do): wait up to ``ADOPT_WAIT_S`` for them to
        reconnect, keep those, and boot only what is missing (its cgroup, if any, removed
        first). Returns the hosts and guests adopted."""
        guests = {vm: h for vm, h in self.vm_host.items()}
        guests |= {standby_name(vm): h for vm, h in self.placement.standby_host.items()}
        # Expected before any listener is up: an agent that says hello while this driver is
        # still publishing where it listens is adopted too, not taken for one that never came.
        waiters = self._expect_agents(guests) if adopt else {}
        self._server = await asyncio.start_unix_server(
            self.connections.serve(self._serve), self.socket_path, limit=MAX_LINE
        )
        if self.spec.transport == "tls":
            self._servers.append(await self._serve_network())
            if self.on_listening is not None:
                await self.on_listening(self.endpoint())
        self._spawn_task(self._watch_heartbeats())
        adopted = await self._await_agents(guests, waiters) if adopt else set()
        await asyncio.gather(
            *(self._boot_host(h) for h in self.placement.hosts if ("host", h) not in adopted)
        )
        await asyncio.gather(
            *(self._boot_vm(g, h) for g, h in guests.items() if ("guest", g) not in adopted)
        )
        self.booted = True
        return sorted(name for _, name in adopted)

    def _expect_agents(self, guests: dict[str, str]) -> dict[tuple[str, str], asyncio.Future]:
        keys = [("host", h) for h in self.placement.hosts] + [("guest", g) for g in guests]
        return {key: self._expect(*key) for key in keys}

    async def _await_agents(
        self, guests: dict[str, str], waiters: dict[tuple[str, str], asyncio.Future]
    ) -> set[tuple[str, str]]:
        """The agents of a dead manager that say hello again in time; every zone whose agent
        does not is removed (what runs there is not adopted: nothing would watch it)."""
        await asyncio.wait(waiters.values(), timeout=ADOPT_WAIT_S)
        adopted = {key for key, fut in waiters.items() if fut.done()}
        for key in waiters:
            self._hello.pop(key, None)
        for host in self.placement.hosts:
            if ("host", host) not in adopted:
                await self._remove_zone(self.cgroups.root / host)
                adopted -= {("guest", g) for g, h in guests.items() if h == host}
        for guest, host in guests.items():
            zone = self.cgroups.root / host / guest
            if ("guest", guest) in adopted:
                self.zone_of[guest] = zone
            else:
                self._forget("guest", guest)
                await self._remove_zone(zone)
        return adopted

    async def _remove_zone(self, zone: Path) -> None:
        why = "its agent did not come back to be adopted"
        pids = await leftovers.kill_leftover_cgroup(zone, why)
        if pids is not None:
            self.note("LeftoverRemoved", f"{zone}: {why} (pids {pids})")

    def endpoint(self) -> dict[str, Any]:
        """Where this driver's TLS listener is (what an external host agent dials)."""
        assert self.listen is not None
        netns, address = self.listen
        return {
            "address": address,
            "port": self.spec.port,
            "netns": netns,
            "server": self.spec.manager_member,
        }

    async def _boot_host(self, host: str) -> None:
        """Start a host's agent; an external one (``nfvi.host_agents``) is the host's own: it
        is waited for, and one connected already is the host up."""
        if self.spec.host_agents == "external":
            link = self.links.get(("host", host))
            if link is None or link.closed:
                await asyncio.wait_for(self._expect("host", host), HELLO_WAIT_S)
            return
        waiter = self._expect("host", host)
        self._spawn_agent("host", host, self.cgroups.zone(host))
        await asyncio.wait_for(waiter, HELLO_WAIT_S)

    async def _boot_vm(self, guest: str, host: str) -> None:
        """Boot a guest (a VM, or a VM's standby) in its own zone under ``host``. A standby
        booted while the deployment runs does so at a low priority: it must not slow down the
        recovery it is there to speed up; it gets normal priority when promoted."""
        waiter = self._expect("guest", guest)
        zone = self.zone_of[guest] = self.cgroups.zone(host, guest)
        nice = STANDBY_NICE if is_standby(guest) and self.booted else 0
        self.leases.booted(guest)
        self._send(
            ("host", host),
            "start_vm",
            vm=guest,
            cgroup=str(zone),
            nice=nice,
            netns=self.guest_netns.get(guest),
            dial=self._dial(host),
        )
        await asyncio.wait_for(waiter, HELLO_WAIT_S)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.cgroups.remove()
        if self._server:
            self._server.close()
        for server in self._servers:
            server.close()
        for link in self.links.values():
            link.writer.close()
        await self.connections.close()
        for proc in self._agents:
            with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._reap_orphans()

    # --- commands of the VIM --------------------------------------------------------------------

    def execute(self, cmd: Traced) -> None:
        if isinstance(cmd, v.CleanupVm):
            self._spawn_task(self._cleanup_vm(cmd.vm))
        elif isinstance(cmd, v.FenceHost):
            self._spawn_task(self._fence(cmd.host))
        elif isinstance(cmd, v.StartHost):
            self._spawn_task(self._restart_host(cmd.host))
        elif isinstance(cmd, v.StartVm):
            self._spawn_task(self._restart_vm(cmd.vm, cmd.host))
        elif isinstance(cmd, v.PromoteStandbyVm):
            self._promote(cmd.vm, cmd.host)
        elif isinstance(cmd, v.StartStandbyVm):
            self._spawn_task(self._start_standby(cmd.vm, cmd.host))

    def _guest_exited(self, host: str, guest: str, status: int) -> None:
        """A host agent saw one of its guests exit: the VM it is now, or a standby."""
        vm = self.promoted.get((host, guest), guest)
        if is_standby(vm):
            base = vm.removesuffix(".standby")
            self.report(v.StandbyVmFailed(vm=base, host=host, detail=f"status {status}"))
            return
        self.promoted.pop((host, guest), None)
        self.report(v.VmFailed(vm=vm, cause="exit", detail=f"status {status}"))

    def _promote(self, vm: str, host: str) -> None:
        """The booted standby guest becomes the VM: same agent, same zone, a new name."""
        standby = standby_name(vm)
        link = self.links.get(("guest", standby))
        if link is None or link.closed:
            self.report(v.VmStartFailed(vm=vm, detail="its standby VM is not running"))
            return
        self.links[("guest", vm)] = self.links.pop(("guest", standby))
        link.name = vm
        self.heartbeats.forget(standby)
        self.heartbeats.beat(vm, "guest", time.monotonic())
        with contextlib.suppress(OSError):  # back to normal priority, for the VNFCs it starts
            os.setpriority(os.PRIO_PROCESS, link.pid, 0)
        self.zone_of[vm] = self.zone_of.pop(standby)
        self.vm_host[vm] = host
        self.promoted[(host, standby)] = vm  # its host agent still knows it by the old name
        self.report(v.VmUp(vm=vm, host=host))

    async def _start_standby(self, vm: str, host: str) -> None:
        try:
            await self._boot_vm(standby_name(vm), host)
        except (OSError, TimeoutError) as exc:
            self.report(v.StandbyVmFailed(vm=vm, host=host, detail=str(exc) or "no hello"))
            return
        self.report(v.StandbyVmUp(vm=vm, host=host))

    async def _cleanup_vm(self, vm: str) -> None:
        ok, detail = await self.fence.isolate(vm, self.zone_of[vm], self._heard(vm))
        if ok and detail.startswith("fenced by its own watchdog"):
            self.note("WatchdogFenced", f"{vm}: its lease passed and its cgroup is empty")
        self._forget("guest", vm)
        self.report(v.VmCleanedUp(vm=vm, ok=ok, detail=detail))

    def _heard(self, guest: str) -> bool:
        link = self.links.get(("guest", guest))
        return link is not None and not self._silent(link)

    def _silent(self, link: AgentLink) -> bool:
        last = self.heartbeats.last_beat(link.name)
        limit = 2 * self.heartbeats.interval_s
        return link.closed or last is None or time.monotonic() - last > limit

    async def _fence(self, host: str) -> None:
        """A host's guests are isolated first (with watchdog fencing, those not heard fence
        themselves within their lease), then its zone is killed through the kernel: its host
        agent serves nothing, and a real host would have been reset by its own watchdog."""
        host_zone = self.cgroups.zone(host)
        guests = [(g, z) for g, z in self.zone_of.items() if z.parent == host_zone]
        if self.spec.fencing == "watchdog":
            isolated = await asyncio.gather(
                *(self.fence.isolate(g, z, self._heard(g)) for g, z in guests)
            )
            failed = [g for (g, _), (done, _) in zip(guests, isolated, strict=True) if not done]
            if failed:
                why = f"guests still running after their lease: {', '.join(failed)}"
                self.report(v.HostFenced(host=host, ok=False, detail=why))
                return
        ok = await self.cgroups.kill_and_confirm(host_zone)
        self._forget("host", host)
        for guest, zone in self.zone_of.items():
            if zone.parent == host_zone:
                self._forget("guest", guest)
        self.report(v.HostFenced(host=host, ok=ok, detail="" if ok else "cgroup still populated"))

    async def _restart_host(self, host: str) -> None:
        try:
            await self._boot_host(host)
        except TimeoutError:
            self.note("HostStartFailed", f"{host}: no hello from its host agent")
            return
        self.report(v.HostUp(host=host))

    async def _restart_vm(self, vm: str, host: str) -> None:
        self.vm_host[vm] = host
        try:
            await self._boot_vm(vm, host)
        except VmUnreachable as exc:  # the host agent is not connected
            self.report(v.VmStartFailed(vm=vm, detail=str(exc), host_unreachable=True))
            return
        except (OSError, TimeoutError) as exc:
            self.report(v.VmStartFailed(vm=vm, detail=str(exc) or "no hello from its guest"))
            return
        self.report(v.VmUp(vm=vm, host=host))

    # --- VNFCs ----------------------------------------------------------------------------------

    def vnfc_zone(self, vm: str, name: str) -> Path:
        """A VNFC's own cgroup inside its VM's (``vnfc-NAME``: no guest is named so): a daemon
        that detaches stays in it, and its cleanup is confirmed by it."""
        return self.zone_of[vm] / f"vnfc-{name}"

    async def start_vnfc(self, vm: str, name: str, argv: list[str], env: dict, cwd: Path) -> int:
        """Ask the VM's guest agent to start a VNFC, in its own cgroup (``vnfc_zone``). Raises
        VmUnreachable when the guest is not connected, goes away, or does not answer within
        ``RPC_TIMEOUT_S``."""
        link = self.links.get(("guest", vm))
        if link is None or link.closed:
            raise VmUnreachable(f"VM {vm} is not connected")
        zone = self.vnfc_zone(vm, name)
        zone.mkdir(exist_ok=True)
        req = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._rpc[req] = (vm, answer)
        self._send(
            ("guest", vm),
            "start_vnfc",
            req=req,
            vnfc=name,
            argv=argv,
            env=env,
            cwd=str(cwd),
            cgroup=str(zone),
        )
        try:
            return await asyncio.wait_for(answer, RPC_TIMEOUT_S)
        except TimeoutError:
            raise VmUnreachable(f"VM {vm} did not answer within {RPC_TIMEOUT_S:g} s") from None
        finally:
            self._rpc.pop(req, None)

    # --- faults ---------------------------------------------------------------------------------

    def inject(self, kind: str, target: str) -> dict[str, Any]:
        if kind in ("vm-crash", "vm-hang"):
            if target not in self.vm_host:
                raise KeyError(f"no VM named {target!r}")
            zone = self.zone_of[target]
            self.cgroups.kill(zone) if kind == "vm-crash" else self.cgroups.freeze(zone, True)
        elif kind == "host-crash":
            if target not in self.placement.hosts:
                raise KeyError(f"no host named {target!r}")
            self.cgroups.kill(self.cgroups.zone(target))
            link = self.links.get(("host", target))
            if self.spec.host_agents == "external" and link is not None:
                with contextlib.suppress(ProcessLookupError):  # the host's own agent goes too
                    os.kill(link.pid, signal.SIGKILL)
        else:
            raise KeyError(f"unknown fault {kind!r}")
        return {"target": target, "fault": kind}

    # --- the agents' side -----------------------------------------------------------------------

    def _spawn_agent(self, kind: str, name: str, zone: Path) -> None:
        argv = [
            sys.executable,
            "-m",
            "nfvha.agents.agent",
            kind,
            name,
            str(self.socket_path),
            str(self.spec.heartbeat_interval_ms),
        ]
        proc = subprocess.Popen(
            in_cgroup(str(zone), argv), stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._agents.append(proc)
        pidfd = os.pidfd_open(proc.pid)
        loop = asyncio.get_running_loop()

        def reaped() -> None:  # reap only: a host's death is for its heartbeat to tell
            loop.remove_reader(pidfd)
            os.close(pidfd)
            proc.wait()
            self._agents.remove(proc)

        loop.add_reader(pidfd, reaped)

    def _expect(self, kind: str, name: str) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self._hello[(kind, name)] = fut
        return fut

    def _forget(self, kind: str, name: str) -> None:
        self.heartbeats.forget(name)
        link = self.links.pop((kind, name), None)
        if link:
            link.writer.close()
        if kind == "guest":
            self._fail_rpcs(name)

    def _fail_rpcs(self, vm: str) -> None:
        for target, answer in self._rpc.values():
            if target == vm and not answer.done():
                answer.set_exception(VmUnreachable(f"VM {vm} went away"))

    def _send(self, key: tuple[str, str], kind: str, **fields: Any) -> None:
        link = self.links.get(key)
        if link is None or link.closed:
            raise VmUnreachable(f"{key[0]} {key[1]} is not connected")
        link.writer.write(encode(kind, token=self.token, **fields))

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str | None = None
    ) -> None:
        """One agent's connection; ``peer``: the member its TLS certificate names (None on the
        machine's own socket)."""
        link: AgentLink | None = None
        try:
            while line := await reader.readline():
                try:
                    msg = decode_from_agent(line, link.kind if link else None)
                except ProtocolError as exc:  # not acted on, not even as a heartbeat
                    who = f"{link.kind} agent {link.name}" if link else "an NFVI agent"
                    self.note("MessageRefused", f"from {who}: {exc}")
                    continue
                if link is None and (why := self._not_for(peer, msg)):
                    self.note("MessageRefused", f"from {peer}: {why}")
                    return  # a member posing as another's VM: not heard at all
                link = self._on_message(link, writer, msg)
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            if link is not None:
                # A dead agent answers nothing more; that it is dead is for its heartbeat (a
                # silent host) or its host agent (a guest's exit) to tell the VIM.
                link.closed = True
                self._fail_rpcs(link.name)

    def _not_for(self, peer: str | None, hello: dict[str, Any]) -> str:
        """Why a TLS peer may not say this hello: a host's certificate speaks for its guests."""
        if peer is None:
            return ""
        name = hello["name"]
        if hello["kind"] == "host" and self.spec.host_agents == "external":
            return "" if name == peer else f"member {peer} may not speak for host {name}"
        if hello["kind"] != "guest":
            return f"a {hello['kind']} agent does not dial in (hello as {name})"
        base = name.removesuffix(".standby")
        host = self.placement.standby_host.get(base) if is_standby(name) else self.vm_host.get(name)
        if host != peer:
            return f"member {peer} may not speak for VM {name} (on {host or 'no host'})"
        return ""

    def _on_message(self, link: AgentLink | None, writer, msg: dict[str, Any]) -> AgentLink | None:
        kind = msg["t"]
        now = time.monotonic()
        if kind == "hello":
            self.known_pids.add(int(msg["pid"]))
            agent: AgentKind = "host" if msg["kind"] == "host" else "guest"
            key = (agent, msg["name"])
            link = self.links[key] = AgentLink(agent, key[1], writer, int(msg["pid"]))
            self.heartbeats.forget(key[1])  # a new agent: a new life for its heartbeats
            self.heartbeats.beat(key[1], agent, now)
            waiter = self._hello.pop(key, None)
            if waiter and not waiter.done():
                waiter.set_result(None)
            return link
        if link is None or self.links.get((link.kind, link.name)) is not link:
            return link  # a fenced or cleaned-up agent's last words
        self.heartbeats.beat(link.name, link.kind, now)
        if kind == "hb" and msg["n"] is not None and self.spec.fencing == "watchdog":
            self._lease(link, msg["n"], now)
        elif kind == "vm_exited":
            self._guest_exited(link.name, msg["name"], msg["status"])
        elif kind in ("vnfc_started", "vnfc_failed"):
            _, fut = self._rpc.get(msg["req"], (None, None))
            if fut is not None and not fut.done():
                if kind == "vnfc_started":
                    self.known_pids.add(int(msg["pid"]))
                    fut.set_result(msg["pid"])
                else:
                    fut.set_exception(OSError(msg["reason"]))
        return link

    def _lease(self, link: AgentLink, n: int, now: float) -> None:
        if not self.leases.answer(link.name, now):
            return  # being isolated by its watchdog: its lease must run out
        link.writer.write(encode("lease", token=self.token, n=n, ms=self.spec.agent_lease_ms))

    def _reap_orphans(self) -> None:
        """Reap those of our known pids that died as our (adopted) children."""
        for pid in list(self.known_pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid if not os.path.exists(f"/proc/{pid}") else 0
            if done:
                self.known_pids.discard(pid)

    async def _watch_heartbeats(self) -> None:
        """Ask the core's rule four times per interval which silences are failures."""
        while True:
            await asyncio.sleep(self.heartbeats.interval_s / 4)
            self._reap_orphans()
            standbys = frozenset(name for _, name in self.links if is_standby(name))
            for failure in self.heartbeats.expired(time.monotonic(), standby=standbys):
                self.report(failure)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def agents(self) -> dict[str, dict[str, Any]]:
        """Each guest's link for ``nfvha status``: how it is connected, and with watchdog
        fencing how much of its lease the VIM still counts (0: it has fenced itself or will)."""
        now = time.monotonic()
        out = {}
        for (kind, name), link in self.links.items():
            if kind != "guest":
                continue
            view: dict[str, Any] = {"transport": self.spec.transport, "connected": not link.closed}
            if self.spec.fencing == "watchdog":
                view["lease_remaining_ms"] = round(self.leases.remaining(name, now) * 1000)
            out[name] = view
        return out

    def host_agents(self) -> dict[str, dict[str, Any]]:
        """Each host's link for ``nfvha status``; with watchdog fencing, its lease: the longest
        its guests still hold (a host cut off now has fenced itself once that has passed); a
        host without guests has none to hold."""
        guests = self.agents()
        out: dict[str, dict[str, Any]] = {}
        for host in self.placement.hosts:
            link = self.links.get(("host", host))
            view: dict[str, Any] = {"connected": link is not None and not link.closed}
            if self.spec.fencing == "watchdog":
                held = [
                    guests[g]["lease_remaining_ms"]
                    for g, z in self.zone_of.items()
                    if z.parent.name == host and g in guests
                ]
                if held:
                    view["lease_remaining_ms"] = max(held)
            out[host] = view
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"cgroups": str(self.cgroups.root), "vm_host": dict(self.vm_host)}
