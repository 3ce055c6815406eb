"""Who leads a deployment: one manager at a time, the others hot standbys waiting to take over.

Contract of a coordinator (``Coordinator``):
- ``try_lead`` takes the leadership if nobody holds it and says whether it did; never blocks.
- ``wait_to_lead`` returns True once this manager leads, or False when ``give_up`` is set first.
- Leadership ends with its holder: however the holder dies, it is released by then (so a
  standby can never be kept waiting by a dead leader), and never while the holder lives.

``LocalLock`` implements it on one machine with an exclusive ``flock`` on a file beside the
deployment's runtime directory: the kernel releases it when the holder's last descriptor closes,
which process death does. A coordinator on etcd (leases) implements the same contract across
machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from abc import ABC, abstractmethod
from pathlib import Path

POLL_S = 0.005  # how often a standby tries the lock: the takeover waits at most this long


class Coordinator(ABC):
    @abstractmethod
    def try_lead(self) -> bool: ...

    async def wait_to_lead(self, give_up: asyncio.Event) -> bool:
        while not self.try_lead():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(give_up.wait(), POLL_S)
            if give_up.is_set():
                return False
        return True

    @abstractmethod
    def release(self) -> None: ...


class LocalLock(Coordinator):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_lead(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _same_file(fd, self.path):  # a leader that stopped removed it meanwhile
                raise BlockingIOError
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self, remove: bool = False) -> None:
        """``remove``: a deliberate stop leaves no lock file behind; it is removed while still
        held, and whoever locked the removed file sees it is not the path's any more."""
        if self._fd is not None:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
