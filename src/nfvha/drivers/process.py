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
- With cgroup containment (``VnfcCgroups``), each VNFC also runs in a cgroup of its own, from
  its first instruction (the start moves itself in, then execs); its cleanup is the stop signal
  to every process of the cgroup, ``cgroup.kill`` after the grace, and True only on
  ``populated 0``: a daemon that detached from the group is in the cgroup still.
- ``StartSpec``: the stop signal of the graceful stop, the user and group to run as (root
  only), the cgroup limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import grp
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from nfvha.drivers.cgroups import in_cgroup
from nfvha.drivers.containment import VnfcCgroups, reap_ours
from nfvha.drivers.network import NETNS_DIR, enter_netns

if TYPE_CHECKING:
    from nfvha.drivers.leftovers import GroupRecord

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class StartSpec:
    """How a VNFC is started and stopped (config ``Vnfc``)."""

    stop_signal: int = signal.SIGTERM
    user: str | None = None
    group: str | None = None
    limits: dict[str, str] = field(default_factory=dict)
    netns: str | None = None  # a network namespace (``ip netns`` name) to start it in
    nice: int = 0  # started below the others' work (a repair while the service is served)


def _in_child(netns_fd: int | None, nice: int) -> Callable[[], None] | None:
    """What the child does before its exec: enter the namespace, lower its priority."""
    if netns_fd is None and not nice:
        return None

    def run() -> None:
        if netns_fd is not None:
            enter_netns(netns_fd)
        if nice:
            os.nice(nice)

    return run


@contextlib.contextmanager
def _netns_fd(netns: str | None) -> Iterator[int | None]:
    """An fd of the namespace, opened before the fork (the child only calls setns)."""
    if netns is None:
        yield None
        return
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def resolve_ids(user: str | None, group: str | None) -> tuple[int | None, int | None]:
    """(uid, gid) of a user and group given by name or number; the group defaults to the
    user's own. ``OSError`` naming the one that does not exist, or when not root."""
    if user is None and group is None:
        return None, None
    if os.geteuid() != 0:
        raise PermissionError(
            f"running a VNFC as another user or group needs root (nfvha runs as uid {os.geteuid()})"
        )
    uid = gid = None
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise OSError(f"no user {user!r} on this machine") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise OSError(f"no group {group!r} on this machine") from None
    return uid, gid


def resolve_command(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    """The program ``argv[0]`` names, as exec would find it (on the VNFC's PATH, or relative to
    its directory); ``FileNotFoundError``/``PermissionError`` with the reason if none."""
    name = argv[0]
    if "/" in name:
        path = cwd / name
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such file")
        if not os.access(path, os.X_OK):
            raise PermissionError(f"{name}: not executable")
        return str(path)
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(f"{name}: command not found on the VNFC's PATH")
    return found


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
    zone: Path | None = None  # its cgroup, with containment
    exited: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ProcessDriver:
    def __init__(
        self,
        on_exit: Callable[[str, int, str], None],
        log_dir: Path,
        record: GroupRecord | None = None,
        zones: VnfcCgroups | None = None,
    ) -> None:
        self._on_exit = on_exit
        self._log_dir = log_dir
        self._record = record
        self.zones = zones
        self.zone_of: dict[str, Path] = {}  # VNFC -> its cgroup, until confirmed empty
        self.stop_signal: dict[str, int] = {}
        self.children: dict[str, Child] = {}
        self.groups: dict[int, str] = {}  # pgid -> VNFC, until confirmed empty
        self._starting: set[str] = set()
        self._pending: set[asyncio.Task[int]] = set()
        self._closing = False
        become_subreaper()

    async def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        how: StartSpec = StartSpec(),
    ) -> int:
        """Start ``argv`` in a new session; fork/exec runs in a thread so the loop keeps serving.

        The start runs to its end even if the caller is cancelled, and ``shutdown`` waits for
        it, so a process started while the deployment stops is stopped too, never left behind.
        """
        if self._closing:
            raise OSError("the deployment is stopping")
        if name in self.children or name in self._starting:
            raise OSError(f"{name} is already running")
        self._starting.add(name)
        self.stop_signal[name] = how.stop_signal
        task = asyncio.get_running_loop().create_task(self._spawn(name, argv, env, cwd, how))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path, how: StartSpec
    ) -> int:
        try:
            popen, zone = await asyncio.to_thread(self._popen, name, argv, env, cwd, how)
        finally:
            self._starting.discard(name)
        self._watch(name, popen.pid, popen, zone)  # our child: it cannot be reaped before this
        return popen.pid

    def adopt(self, name: str, pid: int, cgroup: str | None = None) -> None:
        """Watch a VNFC that this manager did not start — a guest agent did, or a manager that
        died did (its parent reaps it; the pidfd still tells us the moment it exits, and its
        process group is still ours to clean up)."""
        try:
            self._watch(name, pid, None, Path(cgroup) if cgroup else None)
        except ProcessLookupError:
            self._on_exit(name, pid, "exited before it could be watched")

    def _watch(
        self, name: str, pid: int, popen: subprocess.Popen | None, zone: Path | None
    ) -> None:
        pidfd = os.pidfd_open(pid)
        child = Child(name, pid, pidfd, popen, zone)
        self.children[name] = child
        self.groups[pid] = name
        if zone is not None:
            self.zone_of[name] = zone
        if self._record is not None:
            self._record.add(name, pid, str(zone) if zone else None)
        asyncio.get_running_loop().add_reader(pidfd, self._reap, child)

    def _popen(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path, how: StartSpec
    ) -> tuple[subprocess.Popen, Path | None]:
        # Resolved here, not by a shell after the fork: a missing command is an OSError of the
        # start (StartFailed, with the reason), never the exit of a wrapper.
        argv = [resolve_command(argv, env, cwd), *argv[1:]]
        uid, gid = resolve_ids(how.user, how.group)
        zone = None
        if self.zones is not None:
            zone = self.zones.prepare(name, how.limits)
            if uid is not None or gid is not None:  # the move into the cgroup needs root: first
                argv = [*_drop_to(uid, gid), *argv]
                uid = gid = None
            argv = in_cgroup(str(zone), argv)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_dir / f"{name}.log", "ab") as log, _netns_fd(how.netns) as ns:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own session and process group: cleanup takes the group
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None or gid is not None else None,
                # In the child, before exec: the namespace is entered with no window outside.
                preexec_fn=_in_child(ns, how.nice),
                pass_fds=() if ns is None else (ns,),
            )
        return popen, zone

    def renice(self, name: str, nice: int = 0) -> None:
        """Every process of the VNFC at ``nice`` (its cgroup, else its process group)."""
        zone, child = self.zone_of.get(name), self.children.get(name)
        pids = VnfcCgroups.members(zone) if zone is not None else []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, nice)
        if not pids and child is not None:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PGRP, child.pid, nice)

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
        if name in self.zone_of:
            return await self._cleanup_zone(name, grace_s, kill_wait_s)
        child = self.children.get(name)
        if child is not None:
            if grace_s > 0:
                _signal_group(child.pid, self.stop_signal.get(name, signal.SIGTERM))
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

    async def _cleanup_zone(
        self, name: str, grace_s: float, kill_wait_s: float
    ) -> tuple[bool, str]:
        """The stop signal to every process of the VNFC's cgroup, ``cgroup.kill`` after the
        grace; isolated only when the kernel says the cgroup is empty."""
        zone, child = self.zone_of[name], self.children.get(name)
        seen = VnfcCgroups.members(zone)
        if grace_s > 0 and seen:
            VnfcCgroups.signal_all(zone, self.stop_signal.get(name, signal.SIGTERM))
            await VnfcCgroups.emptied(zone, grace_s)
        seen += VnfcCgroups.members(zone)
        if not await VnfcCgroups.kill_and_confirm(zone, kill_wait_s):
            return False, f"cgroup {zone} still populated {kill_wait_s:g} s after cgroup.kill"
        if child is not None and not child.exited.done():
            # Started a moment ago, it may not be in its cgroup yet (its wrapper moves itself
            # in, then execs): its own group is killed too, and its exit is what confirms it.
            _signal_group(child.pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(child.exited), kill_wait_s)
            except TimeoutError:
                return False, f"pid {child.pid} still alive {kill_wait_s:g} s after SIGKILL"
            if not await VnfcCgroups.kill_and_confirm(zone, kill_wait_s):  # it got in, then
                return False, f"cgroup {zone} still populated after its leader was killed"
        reap_ours(seen)
        for pgid in [g for g, n in self.groups.items() if n == name]:
            reap_group(pgid)  # the leader's zombie (kept with WNOWAIT until now)
            self._forget_group(pgid)
        del self.zone_of[name]
        return True, f"cgroup {zone.name} empty (populated 0)"

    def _forget_group(self, pgid: int) -> None:
        if self.groups.pop(pgid, None) is not None and self._record is not None:
            # Off the failover's path: a record that still lists an empty group for a moment
            # is harmless (the next run finds no member in it).
            asyncio.get_running_loop().call_soon(self._record.discard, pgid)

    async def _sweep_group(self, pgid: int, wait_s: float) -> tuple[bool, str]:
        """Kill and reap what is left of a process group whose leader has exited; forget the
        group once the kernel says it is empty."""
        if not await kill_group(pgid, wait_s):
            return False, f"process group {pgid} still has members"
        self._forget_group(pgid)
        return True, "process group gone"

    async def shutdown(self, grace_s: float) -> None:
        self._closing = True
        await asyncio.gather(*self._pending, return_exceptions=True)
        names = set(self.children) | set(self.groups.values())  # exited leaders' groups too
        names |= set(self.zone_of)  # and cgroups a detached daemon may still hold
        await asyncio.gather(*(self.cleanup(n, grace_s) for n in names))
        if self.zones is not None:
            self.zones.remove()


def _drop_to(uid: int | None, gid: int | None) -> list[str]:
    """setpriv(1) argv that runs the rest as ``uid``/``gid``, with no supplementary groups."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is needed to start a VNFC as another user")
    ids = [f"--reuid={uid}"] if uid is not None else []
    ids += [f"--regid={gid}"] if gid is not None else []
    return [setpriv, *ids, "--clear-groups", "--"]


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
