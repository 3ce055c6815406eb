"""Containment of VNFCs that run on this machine: each in a cgroup v2 of its own.

A process group does not hold a daemon that detaches (setsid, a double fork: dnsmasq without
--no-daemon): it leaves the group, and a group scan would then call the VNFC gone while it still
serves. A cgroup holds every process the VNFC ever started, whatever sessions they made; the
kernel moves none out, and says when it is empty (``populated 0`` in cgroup.events).

Where: as root, ``MOUNT/nfvha/DEPLOYMENT/_vnfc/VNFC`` (beside the NFVI's zones; ``_vnfc`` is no
valid host name, so the two never meet). Not as root: under the parent of the manager's own
cgroup when that is delegated to us (as it is under ``systemd-run --user -p Delegate=yes`` or in
a user service with ``Delegate=yes``), in ``nfvha-DEPLOYMENT/VNFC``. Else there is no cgroup
containment: VNFCs stay in process groups, and ``nfvha check``/``run`` warn that a daemon that
detaches escapes them. ``NFVHA_CGROUPS=off`` forces that mode (tests, or a kernel that
misbehaves).

Contracts:
- ``prepare`` makes the VNFC's cgroup, refuses one still populated (what ran there last is not
  confirmed gone), and writes its limits (enabling the controllers down the path).
- ``kill_and_confirm`` is ``cgroup.kill`` and then True only when the kernel says
  ``populated 0``; a cgroup that does not exist holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from nfvha.drivers.cgroups import CGROUP2_MOUNTS, Cgroups

ENV_SWITCH = "NFVHA_CGROUPS"
VNFC_DIR = "_vnfc"
ESCAPE_WARNING = (
    "VNFCs run in process groups only ({why}): a daemon that detaches (setsid, double fork) "
    "escapes its group and is not stopped with it; run as root, or in a delegated cgroup "
    "(systemd-run --user -p Delegate=yes), for cgroup containment"
)


def _mount() -> Path | None:
    return next(
        (m for m in CGROUP2_MOUNTS if (m / "cgroup.subtree_control").exists()),
        None,
    )


def _own_cgroup(mount: Path) -> Path | None:
    """The cgroup v2 of this process, as a directory under ``mount``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].lstrip("/")
    return None


def locate(deployment: str) -> tuple[Path | None, str]:
    """Where this deployment's VNFC cgroups go, or None and why there are none."""
    if os.environ.get(ENV_SWITCH, "").lower() in ("off", "0", "no"):
        return None, f"{ENV_SWITCH}=off"
    mount = _mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    if os.geteuid() == 0:
        return mount / "nfvha" / deployment / VNFC_DIR, ""
    own = _own_cgroup(mount)
    if own is not None and own != mount and _delegated(own.parent):
        return own.parent / f"nfvha-{deployment}", ""
    return None, "not root, and the manager's cgroup is not delegated to it"


def _delegated(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path / "cgroup.procs", os.W_OK)


def controllers(base: Path) -> set[str]:
    """The controllers the VNFC cgroups under ``base`` can have: as root, all the hierarchy
    offers (nfvha enables them down the path); else those of the delegated parent."""
    mount = next((m for m in CGROUP2_MOUNTS if m in base.parents), None)
    start = mount if mount is not None and os.geteuid() == 0 else base
    for path in (start, *start.parents):
        with contextlib.suppress(OSError):
            return set((path / "cgroup.controllers").read_text().split())
    return set()


class VnfcCgroups:
    """One cgroup per VNFC under ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @classmethod
    def open(cls, deployment: str) -> tuple[VnfcCgroups | None, str]:
        """The containment of a deployment, or None and why (then process groups only)."""
        base, why = locate(deployment)
        if base is None:
            return None, why
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return None, f"cannot create {base}: {exc.strerror}"
        if not (base / "cgroup.kill").exists():  # Linux before 5.14
            return None, "the kernel has no cgroup.kill"
        return cls(base), ""

    def path(self, vnfc: str) -> Path:
        return self.base / vnfc

    def prepare(self, vnfc: str, limits: dict[str, str]) -> Path:
        """The VNFC's cgroup, empty, with its limits; ``OSError`` if it cannot be."""
        path = self.path(vnfc)
        path.mkdir(exist_ok=True)
        if Cgroups.populated(path):
            raise OSError(f"cgroup {path} still holds processes of an earlier start")
        if limits:
            self._enable({file.split(".")[0] for file in limits})
            for file, value in limits.items():
                (path / file).write_text(value)
        return path

    def _enable(self, wanted: set[str]) -> None:
        """Turn the controllers on in every ancestor's subtree_control, top down."""
        mount = next((m for m in CGROUP2_MOUNTS if m in self.base.parents), None)
        chain = [p for p in reversed(self.base.parents) if mount and p.is_relative_to(mount)]
        for parent in [*chain, self.base]:
            have = set((parent / "cgroup.subtree_control").read_text().split())
            for controller in sorted(wanted - have):
                (parent / "cgroup.subtree_control").write_text(f"+{controller}")

    @staticmethod
    def members(path: Path) -> list[int]:
        try:
            return [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    @classmethod
    def signal_all(cls, path: Path, sig: int) -> list[int]:
        """``sig`` to every process of the cgroup (a graceful stop reaches a detached daemon
        too, as systemd's KillMode=control-group does). Returns the pids signalled."""
        pids = cls.members(path)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return pids

    @staticmethod
    async def emptied(path: Path, timeout_s: float) -> bool:
        """Whether the cgroup becomes empty within ``timeout_s`` (without killing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while Cgroups.populated(path):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.001)
        return True

    kill_and_confirm = staticmethod(Cgroups.kill_and_confirm)

    def populated(self) -> list[str]:
        """The VNFCs whose cgroup holds processes now."""
        if not self.base.exists():
            return []
        return sorted(p.name for p in self.base.iterdir() if p.is_dir() and Cgroups.populated(p))

    def remove(self) -> None:
        """Remove the empty cgroups (rmdir refuses a populated one), then the deployment's own
        directories if nothing else is in them (as root: nfvha/DEPLOYMENT, nfvha)."""
        if not self.base.exists():
            return
        for path in self.base.iterdir():
            if path.is_dir():
                with contextlib.suppress(OSError):
                    path.rmdir()
        ours = [self.base]
        if self.base.name == VNFC_DIR:
            ours += [self.base.parent, self.base.parent.parent]
        for path in ours:
            with contextlib.suppress(OSError):
                path.rmdir()


def reap_ours(pids: list[int]) -> None:
    """Reap those of ``pids`` that are zombies of ours (orphans of a VNFC reparented to the
    manager, a subreaper)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
