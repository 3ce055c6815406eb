"""Host and guest agents: small processes that make the NFVI real on one machine.

    python -m nfvha.agents.agent host NAME SOCKET INTERVAL_MS
    python -m nfvha.agents.agent guest NAME SOCKET INTERVAL_MS
    python -m nfvha.agents.agent guest NAME HOST:PORT INTERVAL_MS --tls DIR MEMBER SERVER

Both connect to the VIM's NFVI socket (a guest of a ``tls`` NFVI dials HOST:PORT with mutual
TLS instead, as MEMBER, checking the driver is SERVER), say hello, and send a heartbeat every
interval. A host
agent starts guest agents (``start_vm``) inside the VM's cgroup and reports a guest's exit the
moment it is reaped (``vm_exited``). A guest agent starts VNFCs (``start_vnfc``), each in
its own session, and reaps them. Messages are JSON lines, each checked on arrival
(``nfvha.agents.protocol``); a command of a leader older than one already obeyed is refused by
its fencing token (``core/fencing.py``), logged as
``nfvha event=command-refused agent=NAME token=N reason="..."`` and answered ``*_failed``.

An external host agent (``nfvha agent``, ``nfvi.host_agents: external``) is given a ``find``
instead of an address: it asks it before every dial where the leader listens (through etcd,
``agents/finder.py``) and dials it with mutual TLS as its host.

An agent is a host or a VM: it outlives the manager, as the VNFCs it runs do. When the VIM's
connection goes away it reconnects to the same socket (every 20 ms, backing off to 50 ms) for
as long as it runs, and says hello again; the manager that leads then adopts it. What it saw
meanwhile is not replayed: the new manager observes (pidfds, heartbeats). A deliberate stop of
the deployment, or the next run that cannot adopt it, ends it with its cgroup.

Watchdog fencing: a guest numbers its heartbeats, and a driver that fences by watchdog answers
each with a ``lease``, held from when that heartbeat was *sent*. A guest whose lease passes
with no newer one (cut off from every manager) fences itself: it kills its VNFCs' cgroups,
logs ``nfvha event=self-fenced agent=NAME at_ns=<CLOCK_MONOTONIC ns> ...`` and exits, as a
node reset by its watchdog does; the VIM counts the VM isolated only after the same lease.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nfvha.agents.protocol import decode_from_driver
from nfvha.core.fencing import FenceGate, Refused
from nfvha.core.watchdog import GuestLease
from nfvha.drivers.cgroups import in_cgroup
from nfvha.sdk.protocol import MAX_LINE, ProtocolError, encode

PR_SET_CHILD_SUBREAPER = 36
RETRY_FIRST_S = 0.020  # reconnecting: the first delay, doubled after each failure ...
RETRY_MAX_S = 0.050  # ... up to this
LEADER_KIND = "managers"
FENCE_CONFIRM_S = 0.5  # how long a guest that fences itself waits for its VNFCs to be gone
EXIT_SELF_FENCED = 4


@dataclass(frozen=True, slots=True)
class Dial:
    """A guest's way to the driver over the network (``--tls``)."""

    host: str
    port: int
    dir: Path
    member: str
    server: str
    netns: str | None = None  # dialled from this namespace (the management node's)


class Agent:
    def __init__(
        self,
        kind: str,
        name: str,
        socket_path: str,
        interval_ms: int,
        dial: Dial | None = None,
        find: Callable[[], Awaitable[Dial]] | None = None,
    ) -> None:
        self.kind, self.name, self.socket_path, self.dial = kind, name, socket_path, dial
        self.find = find  # an external host agent: where the leader listens, asked each time
        self.interval = interval_ms / 1000
        self.children: dict[int, tuple[subprocess.Popen, str, str]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.gate = FenceGate()  # a deployment's managers lead together: one kind (ADR 014)
        self.vnfc_zones: dict[str, str] = {}  # VNFC -> its cgroup, for a self-fencing
        self.lease = GuestLease()  # core/watchdog.py: held only if the VIM gives one
        self._lease_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of our VNFCs come to us
        asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, self._reap)
        beat = asyncio.create_task(self._heartbeat())
        delay = RETRY_FIRST_S
        try:
            while True:
                try:
                    reader, writer = await self._connect()
                except (OSError, TimeoutError):  # no manager listens (yet), or not reachable
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = RETRY_FIRST_S
                self.writer = writer
                self.send("hello", kind=self.kind, name=self.name, pid=os.getpid())
                await self._serve(reader)
                self.writer = None
                writer.close()
        finally:
            beat.cancel()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        d = await self.find() if self.find is not None else self.dial
        if d is None:
            return await asyncio.open_unix_connection(self.socket_path, limit=MAX_LINE)
        from nfvha.drivers import tls

        context = tls.client_context(d.dir, d.member)
        async with asyncio.timeout(max(1.0, self.interval * 10)):  # a cut link: try again
            reader, writer = await tls.open_connection(d.host, d.port, context, d.server, d.netns)
        reader._limit = MAX_LINE  # type: ignore[attr-defined]  # as for the unix socket
        return reader, writer

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        """Act on the driver's messages until its connection ends."""
        with contextlib.suppress(OSError, ValueError):  # reset, a TLS alert, a line too long
            while line := await reader.readline():
                try:
                    msg = decode_from_driver(line, self.kind)
                except ProtocolError as exc:  # refused, not acted on; the agent lives on
                    print(f"{self.kind} agent {self.name}: refused: {exc}", file=sys.stderr)
                    continue
                self._dispatch(msg)

    def send(self, kind: str, /, **fields: Any) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode(kind, **fields))

    async def _heartbeat(self) -> None:
        while True:
            if self.kind == "guest":  # numbered: a lease may answer it
                self.send("hb", n=self.lease.beat(time.monotonic()))
            else:
                self.send("hb")
            await asyncio.sleep(self.interval)

    # --- watchdog fencing ------------------------------------------------------------------------

    def _leased(self, n: int, ms: int) -> None:
        """A lease answering heartbeat ``n`` (core/watchdog.py rule 1), and its end armed."""
        if not self.lease.answered(n, ms / 1000) or self.lease.held_until is None:
            return
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        loop = asyncio.get_running_loop()
        self._lease_timer = loop.call_later(self.lease.held_until - time.monotonic(), self._expire)

    def _expire(self) -> None:
        if self.lease.expired(time.monotonic()):
            self._fence_self()
        elif self.lease.held_until is not None:  # the timer came early: look again then
            loop = asyncio.get_running_loop()
            delay = self.lease.held_until - time.monotonic()
            self._lease_timer = loop.call_later(delay, self._expire)

    def _fence_self(self) -> None:
        """Cut off from every manager for a lease: kill every VNFC (its cgroup, whatever it
        detached) and exit, before the VIM may count this VM isolated and promote elsewhere."""
        at = time.monotonic_ns()
        for zone in self.vnfc_zones.values():
            with contextlib.suppress(OSError):
                Path(zone, "cgroup.kill").write_text("1")
        for pid, (_, what, _) in list(self.children.items()):
            if what == "vnfc":
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + FENCE_CONFIRM_S
        while time.monotonic() < deadline and any(map(_populated, self.vnfc_zones.values())):
            time.sleep(0.001)
        print(
            f"nfvha event=self-fenced agent={self.name} at_ns={at} "
            f"vnfcs={','.join(sorted(self.vnfc_zones)) or '-'} "
            f'reason="no lease from any manager for its lease time"',
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_SELF_FENCED)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        """A checked message: start_vm for a host agent, start_vnfc for a guest agent, each
        executed only if its leader is not older than one obeyed before."""
        verdict = self.gate.admit(LEADER_KIND, msg["token"])
        if isinstance(verdict, Refused):
            print(
                f"nfvha event=command-refused agent={self.name} command={msg['t']} "
                f'token={msg["token"]} reason="{verdict.reason}"',
                file=sys.stderr,
                flush=True,
            )
            if msg["t"] != "lease":  # a stale lease is simply not held
                what, name = ("vm", msg["vm"]) if msg["t"] == "start_vm" else ("vnfc", msg["vnfc"])
                self.send(f"{what}_failed", name=name, req=msg.get("req"), reason=verdict.reason)
            return
        if msg["t"] == "lease":
            self._leased(msg["n"], msg["ms"])
        elif msg["t"] == "start_vm":
            argv = guest_argv(msg, self.socket_path, int(self.interval * 1000))
            self._spawn(in_cgroup(msg["cgroup"], argv), "vm", msg["vm"], {}, None)
            pid = next((p for p, (_, _, n) in self.children.items() if n == msg["vm"]), None)
            if msg["nice"] and pid is not None:  # a standby boots below the VNFs' work
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, pid, msg["nice"])
        else:
            if msg["cgroup"]:
                self.vnfc_zones[msg["vnfc"]] = msg["cgroup"]
            argv = in_cgroup(msg["cgroup"], msg["argv"]) if msg["cgroup"] else msg["argv"]
            self._spawn(argv, "vnfc", msg["vnfc"], msg["env"], msg["cwd"], msg["req"])

    def _spawn(
        self,
        argv: list[str],
        what: str,
        name: str,
        env: dict,
        cwd: str | None,
        req: int | None = None,
    ) -> None:
        try:
            proc = subprocess.Popen(
                argv,
                env=env or None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr if what == "vm" else None,
                start_new_session=True,
            )
        except OSError as exc:
            self.send(f"{what}_failed", name=name, req=req, reason=exc.strerror or str(exc))
            return
        self.children[proc.pid] = (proc, what, name)
        self.send(f"{what}_started", name=name, req=req, pid=proc.pid)

    def _reap(self) -> None:
        """SIGCHLD: reap every child, ours or orphans reparented to us (we are a subreaper),
        and report the exit of the guests and VNFCs we started."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry is not None:
                proc, what, name = entry
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.send(f"{what}_exited", name=name, pid=pid, status=proc.returncode)


def guest_argv(msg: dict[str, Any], socket_path: str, interval_ms: int) -> list[str]:
    """The guest agent a ``start_vm`` asks for: in the VM's namespace if it has one, dialling
    the driver over TLS if told how, else on this host agent's socket."""
    dial = msg.get("dial")
    address = f"{dial['host']}:{dial['port']}" if dial else socket_path
    argv = [sys.executable, "-m", "nfvha.agents.agent", "guest", msg["vm"], address]
    argv.append(str(interval_ms))
    if dial:
        argv += ["--tls", dial["dir"], dial["member"], dial["server"]]
    if msg.get("netns"):  # entered by setns alone: `ip netns exec` would hide the cgroup fs
        argv += ["--netns", msg["netns"]]
    return argv


def _populated(zone: str) -> bool:
    try:
        return "populated 1" in Path(zone, "cgroup.events").read_text()
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(prog="nfvha.agents.agent")
    parser.add_argument("kind", choices=["host", "guest"])
    parser.add_argument("name")
    parser.add_argument("address", help="the NFVI socket, or HOST:PORT with --tls")
    parser.add_argument("interval_ms", type=int)
    parser.add_argument("--tls", nargs=3, metavar=("DIR", "MEMBER", "SERVER"))
    parser.add_argument("--netns", help="a network namespace (ip netns name) to live in")
    args = parser.parse_args()
    if args.netns:
        from nfvha.drivers.network import NETNS_DIR, enter_netns

        enter_netns(os.open(os.path.join(NETNS_DIR, args.netns), os.O_RDONLY | os.O_CLOEXEC))
    dial = None
    if args.tls:
        host, _, port = args.address.rpartition(":")
        dial = Dial(host, int(port), Path(args.tls[0]), args.tls[1], args.tls[2])
    agent = Agent(args.kind, args.name, args.address, args.interval_ms, dial)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run())


if __name__ == "__main__":
    main()
