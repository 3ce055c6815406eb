"""The processes a test started: found by their environment, killed and reaped; zombies;
NFVI agents."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path


def proc_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def pid_alive(pid: int) -> bool:
    """Running (or stopped): /proc/PID exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def processes_of(runtime_dir: Path) -> list[int]:
    """Live processes started for this test: their environment points into its runtime dir
    (VNFCs get NFVHA_SOCKET there, `nfvha run` and probes inherit NFVHA_RUNTIME_DIR)."""
    prefix = str(runtime_dir)
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        env = environ_of(int(entry.name))
        ours = any(env.get(k, "").startswith(prefix) for k in ("NFVHA_SOCKET", "NFVHA_RUNTIME_DIR"))
        if ours and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_and_reap(pids: Iterable[int]) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # VNFCs lead their own process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # ours (we may be a subreaper): do not leave a zombie


def zombies(parents: Iterable[int]) -> list[tuple[int, int, str]]:
    """(pid, ppid, command name) of every zombie whose parent is one of ``parents``."""
    parents = set(parents)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if state == "Z" and int(ppid) in parents:
            found.append((int(entry.name), int(ppid), comm))
    return found


def reap_zombie_children() -> list[tuple[int, int, str]]:
    """Reap the zombies whose parent is this (test) process. An in-process engine makes the test
    process a child subreaper, so orphans of its agents and VNFCs end up here; returns them."""
    found = zombies([os.getpid()])
    for pid, _, _ in found:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return found


def agent_processes(runtime_dir: Path) -> list[int]:
    """Live NFVI agents (``python -m nfvha.agents.agent``) started for this test: they talk to a
    socket under its runtime dir, and inherit its NFVHA_RUNTIME_DIR."""
    prefix = str(runtime_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"nfvha.agents.agent" not in argv:
            continue
        ours = any(a.decode(errors="replace").startswith(prefix) for a in argv) or environ_of(
            int(entry.name)
        ).get("NFVHA_RUNTIME_DIR", "").startswith(prefix)
        if ours and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
