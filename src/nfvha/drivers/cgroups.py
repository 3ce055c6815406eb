"""Fault zones as cgroup v2 directories, ROOT/HOST and ROOT/HOST/VM: a VM crash or a host's
fencing is ``cgroup.kill`` of its zone (every process in it at once, whatever process groups
they made), a VM hang ``cgroup.freeze``; empty is confirmed by the kernel (``populated 0``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

CGROUP2_MOUNTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


class NfviUnavailable(OSError):
    pass


def in_cgroup(cgroup: str, argv: list[str]) -> list[str]:
    """argv that first moves itself into ``cgroup`` (if any), then execs: no window outside."""
    if not cgroup:
        return argv
    return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *argv]


class Cgroups:
    """Fault zones as cgroup v2 directories: ROOT/HOST and ROOT/HOST/VM."""

    def __init__(self, deployment: str) -> None:
        mount = next(
            (
                m
                for m in CGROUP2_MOUNTS
                if (m / "cgroup.procs").exists() and (m / "cgroup.subtree_control").exists()
            ),
            None,
        )
        if mount is None:
            raise NfviUnavailable("the NFVI needs a cgroup v2 hierarchy (none is mounted)")
        self.root = mount / "nfvha" / deployment
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NfviUnavailable(f"cannot create {self.root}: {exc.strerror}") from None

    def zone(self, host: str, vm: str | None = None) -> Path:
        path = self.root / host / vm if vm else self.root / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def kill(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (path / "cgroup.kill").write_text("1")

    @staticmethod
    def freeze(path: Path, on: bool) -> None:
        (path / "cgroup.freeze").write_text("1" if on else "0")

    @staticmethod
    def populated(path: Path) -> bool:
        try:
            return "populated 1" in (path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False

    @staticmethod
    async def kill_and_confirm(path: Path, timeout_s: float = 5.0) -> bool:
        """``cgroup.kill`` until the cgroup is empty (True), or False after ``timeout_s``: a
        process that moves itself in after a kill (an agent or VNFC wrapper started a moment
        before) is not killed by that kill. A cgroup that does not exist holds nothing."""
        deadline = time.monotonic() + timeout_s
        while True:
            Cgroups.kill(path)
            if not Cgroups.populated(path):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.0005)

    async def remove(self) -> None:
        await self.kill_and_confirm(self.root)
        for path in sorted(self.root.rglob("*"), key=lambda p: -len(p.parts)):
            if path.is_dir():
                with contextlib.suppress(OSError):
                    path.rmdir()
        for path in (self.root, self.root.parent):  # the parent only if no other deployment
            with contextlib.suppress(OSError):
                path.rmdir()
