"""VNFC processes: start in their own process group, see their exit at once through a pidfd,
and isolate them (SIGTERM, SIGKILL after grace, whole group, confirmed gone).

Contracts:
- ``spawn`` returns the pid or raises ``OSError``; the exit callback fires exactly once, from
  the event loop, as soon as the kernel reports the exit (pidfd readable; no polling).
- A VNFC's process group (pgid = leader pid, started in a session of its own) is remembered
  from ``spawn``/``adopt`` until a cleanup has confirmed it empty, whether or not the leader
  has exited: a child the VNFC forked may outlive it and still hold the service address.
- ``cleanup`` SIGKILLs and sweeps every remembered group of the VNFC, also when its leader
  already exited, and returns True only when the leader is reaped and ``killpg(pgid, 0)``
  finds no process of the group; ``shutdown`` does the same for every remembered group.
- The leader we started is not reaped when it exits (its exit is read with ``WNOWAIT``); the
  cleanup reaps it. Its zombie keeps the pid, so the pgid cannot be reused by an unrelated
  process before the group is swept.
- The manager is made a child subreaper, so orphans of a VNFC are reparented to it and are
  reaped here instead of lingering as zombies that still pass ``kill -0``.
- With a ``GroupRecord``, the remembered groups are also kept on disk, so that the next run
  can remove them if this one dies without stopping (``nfvha.drivers.leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from nfvha.drivers.leftovers import GroupRecord

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def describe_status(status: int, code: int) -> str:
    if code == os.CLD_EXITED:
        return f"exit code {status}"
    name = signal.Signals(status).name if status in signal.Signals._value2member_map_ else status
    return f"killed by {name}"


@dataclass(slots=True)
class Child:
    name: str
    pid: int
    pidfd: int
    popen: subprocess.Popen | None = None  # None: started by a guest agent, watched from here
    exited: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ProcessDriver:
    def __init__(
        self,
        on_exit: Callable[[str, int, str], None],
        log_dir: Path,
        record: GroupRecord | None = None,
    ) -> None:
        self._on_exit = on_exit
        self._log_dir = log_dir
        self._record = record
        self.children: dict[str, Child] = {}
        self.groups: dict[int, str] = {}  # pgid -> VNFC, until confirmed empty
        self._starting: set[str] = set()
        self._pending: set[asyncio.Task[int]] = set()
        self._closing = False
        become_subreaper()

    async def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        """Start ``argv`` in a new session; fork/exec runs in a thread so the loop keeps serving.

        The start runs to its end even if the caller is cancelled, and ``shutdown`` waits for
        it, so a process started while the deployment stops is stopped too, never left behind.
        """
        if self._closing:
            raise OSError("the deployment is stopping")
        if name in self.children or name in self._starting:
            raise OSError(f"{name} is already running")
        self._starting.add(name)
        task = asyncio.get_running_loop().create_task(self._spawn(name, argv, env, cwd))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        try:
            popen = await asyncio.to_thread(self._popen, name, argv, env, cwd)
        finally:
            self._starting.discard(name)
        self._watch(name, popen.pid, popen)  # our child: it cannot be reaped before this
        return popen.pid

    def adopt(self, name: str, pid: int) -> None:
        """Watch a VNFC that this manager did not start — a guest agent did, or a manager that
        died did (its parent reaps it; the pidfd still tells us the moment it exits, and its
        process group is still ours to clean up)."""
        try:
            self._watch(name, pid, None)
        except ProcessLookupError:
            self._on_exit(name, pid, "exited before it could be watched")

    def _watch(self, name: str, pid: int, popen: subprocess.Popen | None) -> None:
        pidfd = os.pidfd_open(pid)
        child = Child(name, pid, pidfd, popen)
        self.children[name] = child
        self.groups[pid] = name
        if self._record is not None:
            self._record.add(name, pid)
        asyncio.get_running_loop().add_reader(pidfd, self._reap, child)

    def _popen(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_dir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own session and process group: cleanup takes the group
            )

    def _reap(self, child: Child) -> None:
        asyncio.get_running_loop().remove_reader(child.pidfd)
        try:  # WNOWAIT: the zombie keeps its pid (and pgid) until the cleanup sweeps the group
            info = os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            text = describe_status(info.si_status, info.si_code) if info else "exited"
            if child.popen is not None:
                child.popen.returncode = info.si_status if info else -1
        except ChildProcessError:
            text = "exited (not our child: its parent has its status)"  # adopted
        os.close(child.pidfd)
        self.children.pop(child.name, None)
        child.exited.set_result(text)
        self._on_exit(child.name, child.pid, text)

    def pid_of(self, name: str) -> int | None:
        child = self.children.get(name)
        return child.pid if child else None

    def signal(self, name: str, sig: int) -> int:
        """Fault injection: signal the VNFC's main process. Returns its pid."""
        child = self.children.get(name)
        if child is None:
            raise ProcessLookupError(f"{name} is not running")
        signal.pidfd_send_signal(child.pidfd, sig)
        return child.pid

    async def cleanup(
        self, name: str, grace_s: float, kill_wait_s: float = 5.0
    ) -> tuple[bool, str]:
        child = self.children.get(name)
        if child is not None:
            if grace_s > 0:
                _signal_group(child.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(child.exited), grace_s)
            if not child.exited.done():
                _signal_group(child.pid, signal.SIGKILL)
                try:
                    await asyncio.wait_for(asyncio.shield(child.exited), kill_wait_s)
                except TimeoutError:
                    return False, f"pid {child.pid} still alive {kill_wait_s:g} s after SIGKILL"
        # Also when the leader had already exited: what it forked may still run in its group.
        detail = "no process group left"
        for pgid in [g for g, n in self.groups.items() if n == name]:
            ok, detail = await self._sweep_group(pgid, kill_wait_s)
            if not ok:
                return False, detail
        return True, detail

    async def _sweep_group(self, pgid: int, wait_s: float) -> tuple[bool, str]:
        """Kill and reap what is left of a process group whose leader has exited; forget the
        group once the kernel says it is empty."""
        if not await kill_group(pgid, wait_s):
            return False, f"process group {pgid} still has members"
        if self.groups.pop(pgid, None) is not None and self._record is not None:
            # Off the failover's path: a record that still lists an empty group for a moment
            # is harmless (the next run finds no member in it).
            asyncio.get_running_loop().call_soon(self._record.discard, pgid)
        return True, "process group gone"

    async def shutdown(self, grace_s: float) -> None:
        self._closing = True
        await asyncio.gather(*self._pending, return_exceptions=True)
        names = set(self.children) | set(self.groups.values())  # exited leaders' groups too
        await asyncio.gather(*(self.cleanup(n, grace_s) for n in names))


class ProcStat(NamedTuple):
    state: str  # R, S, T (stopped), Z (zombie) ...
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process for good


def proc_stat(pid: int) -> ProcStat | None:
    """A process's /proc/PID/stat, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 of stat(5)
    return ProcStat(fields[0], int(fields[1]), int(fields[2]), int(fields[19]))


def group_processes(pgid: int) -> list[tuple[int, ProcStat]]:
    """Every process of a process group, zombies included."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and stat.pgid == pgid:
            found.append((int(entry.name), stat))
    return found


def _live_members(pgid: int) -> bool:
    """Whether the group still has a member to wait for: one alive, or a zombie of ours (we
    reap it next); a zombie that only another reaper can collect (init, for an adopted VNFC
    that is not our child) holds nothing any more."""
    me = os.getpid()
    return any(st.state not in "ZX" or st.ppid == me for _, st in group_processes(pgid))


async def kill_group(pgid: int, wait_s: float) -> bool:
    """SIGKILL a process group (it also ends a stopped process) and reap what is ours, until
    no member is left to wait for; False if some still are after ``wait_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        _signal_group(pgid, signal.SIGKILL)
        reap_group(pgid)
        if _group_gone(pgid):
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.001)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # the common case, without a scan of /proc
    except ProcessLookupError:
        return True
    return not _live_members(pgid)  # zombies an adopted group left to init hold nothing


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def reap_group(pgid: int) -> None:
    """Reap the zombies of a group that are our children: its leader, if we started it, and
    orphans reparented to us."""
    while True:
        try:
            if os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG) is None:
                return
        except ChildProcessError:
            return
