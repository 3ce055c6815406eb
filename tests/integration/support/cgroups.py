"""The NFVI's fault zones (cgroup v2 directories): whether there is a tree to use, and what a
failed test left in it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path


def cgroup_dirs(deployment_name: str) -> list[Path]:
    """Where the NFVI of ``deployment_name`` keeps its fault zones, on every cgroup v2 mount the
    runtime may pick (/sys/fs/cgroup/unified/nfvha/NAME on this kind of machine)."""
    from nfvha.drivers.cgroups import CGROUP2_MOUNTS

    return [mount / "nfvha" / deployment_name for mount in CGROUP2_MOUNTS]


def cgroup_v2_writable() -> bool:
    """A cgroup v2 hierarchy the NFVI runtime can use (it needs to create directories in it)."""
    from nfvha.drivers.cgroups import CGROUP2_MOUNTS

    return any(
        (m / "cgroup.procs").exists()
        and (m / "cgroup.subtree_control").exists()
        and os.access(m, os.W_OK)
        for m in CGROUP2_MOUNTS
    )


def cgroup_pids(path: Path) -> list[int]:
    """Every process in the cgroup tree under ``path``."""
    pids: list[int] = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def remove_cgroup_tree(path: Path, timeout_s: float = 10.0) -> None:
    """Teardown after a failed test: kill everything in the tree, then remove it bottom-up."""
    with contextlib.suppress(OSError):
        (path / "cgroup.freeze").write_text("0")
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout_s
    while cgroup_pids(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def leftover_cgroups(names: Iterable[str]) -> dict[str, list[int]]:
    """The cgroup directories of these deployments that still exist, with the processes in
    them; each one found is killed and removed, so that a failed test leaves nothing behind."""
    left: dict[str, list[int]] = {}
    for name in names:
        for path in cgroup_dirs(name):
            if path.exists():
                left[str(path)] = cgroup_pids(path)
                remove_cgroup_tree(path)
    return left
