"""What a previous run of the same deployment left running when it died without stopping
(SIGKILL, OOM kill, a crash): VNFC process groups, and with hosts its cgroup tree. A left
process may still hold the service address (a hung active keeps its port), so a new run removes
them before it starts anything.

Contracts:
- ``GroupRecord`` keeps ``RUNTIME_DIR/vnfcs.json`` equal to the VNFC process groups the running
  manager started and has not yet confirmed empty: VNFC name, pgid (= leader pid) and the
  leader's start time (/proc/PID/stat field 22), with the boot id. Written atomically (a
  temporary file, then ``os.replace``) at each change.
- ``remove_leftover_groups``, for each recorded group: if the leader is alive with the
  recorded start time, or it is gone but live processes of that group remain, SIGKILL the group
  (SIGKILL also ends a SIGSTOPped process), reap what is ours, and confirm that no live process
  of the group is left; a zombie no longer holds anything. A pid now used by an unrelated
  process (alive, another start time) is left alone: the kernel does not hand out a pid still in
  use as a process group id, so the old group is empty. A record from before a reboot is
  ignored. Each group removed is a ``LeftoverRemoved`` note in the trace; one that cannot be
  confirmed gone raises ``OSError`` (the new run must not start next to it).
- ``adoptable_groups``: the recorded groups whose leader runs with its recorded start time; a
  new manager adopts those (deployments without hosts) and removes the rest.
- With cgroup containment a record also names the VNFC's cgroup: a recorded group is then
  removed through it (``cgroup.kill``, confirmed ``populated 0``), which takes a daemon that
  detached from the group too; ``remove_leftover_zones`` does the same for every populated VNFC
  cgroup of the deployment that is not adopted, recorded or not.
- ``remove_leftover_cgroup``: a populated cgroup tree of the deployment is killed
  (``cgroup.kill``) and confirmed ``populated 0``, else ``OSError``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nfvha.drivers.cgroups import Cgroups
from nfvha.drivers.containment import VnfcCgroups
from nfvha.drivers.process import group_processes, kill_group, proc_stat

if TYPE_CHECKING:
    from nfvha.runtime.trace import Trace

RECORD = "vnfcs.json"
KILL_WAIT_S = 5.0
WHY = (
    "left running by a previous run of this deployment that did not stop; "
    "it may hold the service address"
)


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    return [pid for pid, stat in group_processes(pgid) if stat.state not in "ZX"]


def cgroup_pids(root: Path) -> list[int]:
    pids = []
    for procs in root.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):  # a zone removed meanwhile
            pids += [int(p) for p in procs.read_text().split()]
    return sorted(pids)


class GroupRecord:
    """The running manager's VNFC process groups, on disk for the next run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.groups: dict[int, dict[str, Any]] = {}
        self.escalated: list[str] = []  # VNFCs escalated: a new manager does not restart them

    def carry_over(self, groups: list[dict[str, Any]], escalated: list[str]) -> None:
        """A new manager records at once what it is about to adopt from the dead one."""
        self.groups = {entry["pgid"]: dict(entry) for entry in groups}
        self.escalated = list(escalated)
        self._write()

    def set_escalated(self, names: list[str]) -> None:
        if names != self.escalated:
            self.escalated = names
            self._write()

    def add(self, vnfc: str, pgid: int, cgroup: str | None = None) -> None:
        stat = proc_stat(pgid)  # None: a guest agent reaped it already; the group still counts
        entry = {"vnfc": vnfc, "pgid": pgid, "start": stat.start if stat else None}
        self.groups[pgid] = entry | ({"cgroup": cgroup} if cgroup else {})
        self._write()

    def discard(self, pgid: int) -> None:
        if self.groups.pop(pgid, None) is not None:
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        record = {
            "boot_id": boot_id(),
            "groups": list(self.groups.values()),
            "escalated": self.escalated,
        }
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)


def _read(path: Path) -> dict[str, Any]:
    """The record of this boot (an older boot's processes are all gone), else an empty one."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise OSError(f"{path} is not a record of VNFC processes ({exc}); remove it") from None
    return record if record.get("boot_id") == boot_id() else {}


def read_record(path: Path) -> list[dict[str, Any]]:
    return list(_read(path).get("groups", []))


def recorded_escalations(path: Path) -> list[str]:
    return [n for n in _read(path).get("escalated", []) if isinstance(n, str)]


def adoptable_groups(path: Path) -> list[dict[str, Any]]:
    """Recorded groups whose leader (the VNFC's main process) still runs, with the recorded
    start time: a new manager can adopt them (``pidfd_open``) instead of removing them."""
    return [entry for entry in read_record(path) if runs_as_recorded(entry)]


def runs_as_recorded(entry: dict[str, Any]) -> bool:
    """The group's leader runs, and is the process recorded (not a reused pid)."""
    leader = proc_stat(entry["pgid"])
    return leader is not None and leader.state not in "ZX" and leader.start == entry["start"]


async def remove_leftover_groups(
    path: Path, trace: Trace, keep: frozenset[int] = frozenset()
) -> None:
    """Remove every recorded group but those in ``keep`` (adopted)."""
    for entry in read_record(path):
        if entry["pgid"] in keep:
            continue
        pgid, start = entry["pgid"], entry["start"]
        if entry.get("cgroup"):
            await _remove_zone(Path(entry["cgroup"]), entry["vnfc"], trace)
        leader = proc_stat(pgid)
        if leader is not None and leader.state not in "ZX" and leader.start != start:
            continue  # the pid is an unrelated process's now
        members = group_members(pgid)
        if not members:
            continue
        if not await kill_group(pgid, KILL_WAIT_S):
            raise OSError(
                f"process group {pgid} of {entry['vnfc']}, {WHY}, is still there "
                f"{KILL_WAIT_S:g} s after SIGKILL; not starting next to it"
            )
        data = {"vnfc": entry["vnfc"], "pgid": pgid, "pids": members}
        trace.record("note", "LeftoverRemoved", src="nfvha", data=data, why=WHY)


async def remove_leftover_zones(zones: VnfcCgroups, keep: frozenset[str], trace: Trace) -> None:
    """Every populated VNFC cgroup of the deployment but the adopted VNFCs' (``keep``)."""
    for vnfc in zones.populated():
        if vnfc not in keep:
            await _remove_zone(zones.path(vnfc), vnfc, trace)


async def kill_leftover_cgroup(path: Path, why: str = WHY) -> list[int] | None:
    """Kill what a dead run left in the cgroup tree at ``path``: the pids it held, or None if
    it held nothing. Raises OSError when the kernel does not confirm it empty."""
    if not Cgroups.populated(path):
        return None
    pids = cgroup_pids(path)
    if not await Cgroups.kill_and_confirm(path, KILL_WAIT_S):
        raise OSError(f"cgroup {path}, {why}, is still populated after cgroup.kill")
    return pids


async def _remove_zone(zone: Path, vnfc: str, trace: Trace) -> None:
    pids = await kill_leftover_cgroup(zone)
    if pids is not None:
        data = {"vnfc": vnfc, "cgroup": str(zone), "pids": pids}
        trace.record("note", "LeftoverRemoved", src="nfvha", data=data, why=WHY)


async def remove_leftover_cgroup(cgroups: Cgroups, trace: Trace) -> None:
    pids = await kill_leftover_cgroup(cgroups.root)
    if pids is not None:
        data = {"cgroup": str(cgroups.root), "pids": pids}
        trace.record("note", "LeftoverRemoved", src="nfvha", data=data, why=WHY)
