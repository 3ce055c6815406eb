"""Host and guest agents: small processes that make the NFVI real on one machine.

    python -m nfvha.agents.agent host NAME SOCKET INTERVAL_MS
    python -m nfvha.agents.agent guest NAME SOCKET INTERVAL_MS

Both connect to the VIM's NFVI socket, say hello, and send a heartbeat every interval. A host
agent starts guest agents (``start_vm``) inside the VM's cgroup and reports a guest's exit the
moment it is reaped (``vm_exited``). A guest agent starts VNFCs (``start_vnfc``), each in
its own session, and reaps them. Messages are JSON lines, each checked on arrival
(``nfvha.agents.protocol``); a command of a leader older than one already obeyed is refused by
its fencing token (``core/fencing.py``), logged as
``nfvha event=command-refused agent=NAME token=N reason="..."`` and answered ``*_failed``.

An agent is a host or a VM: it outlives the manager, as the VNFCs it runs do. When the VIM's
connection goes away it reconnects to the same socket (every 20 ms, backing off to 50 ms) for
as long as it runs, and says hello again; the manager that leads then adopts it. What it saw
meanwhile is not replayed: the new manager observes (pidfds, heartbeats). A deliberate stop of
the deployment, or the next run that cannot adopt it, ends it with its cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from typing import Any

from nfvha.agents.protocol import decode_from_driver
from nfvha.core.fencing import FenceGate, Refused
from nfvha.drivers.cgroups import in_cgroup
from nfvha.sdk.protocol import MAX_LINE, ProtocolError, encode

PR_SET_CHILD_SUBREAPER = 36
RETRY_FIRST_S = 0.020  # reconnecting: the first delay, doubled after each failure ...
RETRY_MAX_S = 0.050  # ... up to this
LEADER_KIND = "managers"


class Agent:
    def __init__(self, kind: str, name: str, socket_path: str, interval_ms: int) -> None:
        self.kind, self.name, self.socket_path = kind, name, socket_path
        self.interval = interval_ms / 1000
        self.children: dict[int, tuple[subprocess.Popen, str, str]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.gate = FenceGate()  # a deployment's managers lead together: one kind (ADR 014)

    async def run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of our VNFCs come to us
        asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, self._reap)
        beat = asyncio.create_task(self._heartbeat())
        delay = RETRY_FIRST_S
        try:
            while True:
                try:
                    reader, writer = await asyncio.open_unix_connection(
                        self.socket_path, limit=MAX_LINE
                    )
                except OSError:  # no manager listens (yet): it will
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

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        """Act on the driver's messages until its connection ends."""
        with contextlib.suppress(ConnectionError, ValueError):  # reset, or a line too long
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
            self.send("hb")
            await asyncio.sleep(self.interval)

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
            what, name = ("vm", msg["vm"]) if msg["t"] == "start_vm" else ("vnfc", msg["vnfc"])
            self.send(f"{what}_failed", name=name, req=msg.get("req"), reason=verdict.reason)
            return
        if msg["t"] == "start_vm":
            argv = [
                sys.executable,
                "-m",
                "nfvha.agents.agent",
                "guest",
                msg["vm"],
                self.socket_path,
                str(int(self.interval * 1000)),
            ]
            self._spawn(in_cgroup(msg["cgroup"], argv), "vm", msg["vm"], {}, None)
            pid = next((p for p, (_, _, n) in self.children.items() if n == msg["vm"]), None)
            if msg["nice"] and pid is not None:  # a standby boots below the VNFs' work
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, pid, msg["nice"])
        else:
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


def main() -> None:
    kind, name, socket_path, interval = sys.argv[1:5]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Agent(kind, name, socket_path, int(interval)).run())


if __name__ == "__main__":
    main()
