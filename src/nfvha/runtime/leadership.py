"""Who leads a deployment: one manager at a time, the others hot standbys waiting to take over.

Contract of a coordinator (``Coordinator``):
- ``try_lead`` takes the leadership if nobody holds it and says whether it did; never blocks.
- ``wait_to_lead`` returns True once this manager leads, or False when ``give_up`` is set first.
- Leadership ends with its holder: however the holder dies, it is released by then (so a
  standby can never be kept waiting by a dead leader), and never while the holder lives.

- ``token`` is the fencing token of the term this manager leads (None while it does not):
  higher for every later term, so that an agent can refuse a command of an older leader.
- ``describe`` says, for ``nfvha status``, how leadership is held and by whom.

``LocalLock`` implements it on one machine with an exclusive ``flock`` on a file beside the
deployment's runtime directory: the kernel releases it when the holder's last descriptor closes,
which process death does; the term number is kept in the locked file. A coordinator on etcd
(leases, ``runtime/etcd_leadership.py``) implements the same contract across machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nfvha.runtime.paths import leader_lock

if TYPE_CHECKING:
    from nfvha.config import Coordination
    from nfvha.runtime.etcd_leadership import LeadershipChange

POLL_S = 0.005  # how often a standby tries the lock: the takeover waits at most this long


class Coordinator(ABC):
    stopping = False  # set by close(): what ends now is a deliberate stop, not a deposition

    @abstractmethod
    def try_lead(self) -> bool: ...

    async def wait_to_lead(self, give_up: asyncio.Event) -> bool:
        while not self.try_lead():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(give_up.wait(), POLL_S)
            if give_up.is_set():
                return False
        return True

    async def lead_at_start(self) -> bool:
        """A manager started to lead (not as a standby): whether it leads now, never waiting
        behind another leader."""
        return self.try_lead()

    @abstractmethod
    def release(self) -> None: ...

    async def previous_term_left(self) -> str | None:
        """Who left VNFCs this manager could not adopt (on another machine): None on one
        machine, where every VNFC is adopted or removed."""
        return None

    async def record_deployed(self) -> None:
        """This term runs the deployment's VNFCs (for the next leader to know)."""
        return None

    async def publish(self, name: str, record: dict[str, object]) -> None:
        """Tell the other machines ``record`` for this term (with etcd: a key under the
        leader's lease, written only while it leads); one machine has nobody to tell."""
        return None

    records_state = False  # whether the deployment's state is recorded (runtime/recorded_state.py)

    async def read_state(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The deployment's records as the last term left them, and the names of malformed ones
        (skipped); one machine records nothing: its VNFCs themselves are adopted."""
        return {}, []

    async def write_state(self, changes: dict[str, dict[str, Any] | None]) -> None:
        """Write ``changes`` (record name -> value, None deletes) while this term leads."""
        return None

    async def close(self) -> None:
        """A deliberate stop: leadership ends now, nothing left behind."""
        self.stopping = True
        self.release()

    @property
    @abstractmethod
    def token(self) -> int | None: ...

    @abstractmethod
    def describe(self) -> dict[str, object]: ...


class LocalLock(Coordinator):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._term: int | None = None

    @property
    def token(self) -> int | None:
        return self._term

    def describe(self) -> dict[str, object]:
        return {"coordination": "embedded", "lock": str(self.path), "token": self._term}

    async def close(self) -> None:
        self.stopping = True
        self.release(remove=True)

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
        self._term = _next_term(fd)
        return True

    def release(self, remove: bool = False) -> None:
        """``remove``: a deliberate stop leaves no lock file behind; it is removed while still
        held, and whoever locked the removed file sees it is not the path's any more."""
        if self._fd is not None:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = self._term = None


def for_deployment(
    name: str,
    coordination: Coordination,
    host: str,
    on_change: Callable[[LeadershipChange], None],
) -> Coordinator:
    """The deployment's leadership as configured (``coordination``): the local lock alone, or
    etcd's election behind it (one key, ``PREFIX/NAME/leader/managers``: the VIM, the VNFM and
    the HA managers of a deployment lead together, ADR 014)."""
    lock = LocalLock(leader_lock(name))
    if coordination.backend == "embedded":
        return lock
    from nfvha.runtime.etcd_leadership import EtcdCoordinator, EtcdLeadership

    election = EtcdCoordinator(
        coordination.endpoints,
        f"{coordination.prefix}/{name}",
        "managers",
        f"{host}:{os.getpid()}",
        coordination.ttl_s,
        on_change=on_change,
    )
    return EtcdLeadership(lock, election, host)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _next_term(fd: int) -> int:
    """The term this leader starts: one more than the last leader's, written back to the locked
    file (a crashed leader leaves it; a deliberate stop removes it with the file, and with
    everything the term's commands went to)."""
    raw = os.pread(fd, 32, 0).strip()
    term = (int(raw) if raw.isdigit() else 0) + 1
    data = f"{term}\n".encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    return term
