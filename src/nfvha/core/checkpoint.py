"""The checkpoint service of one VNF: who may write the state, and when a write is durable.

Rules:
- Only the current active, holding the current epoch (the fencing token), may write. A write
  from anyone else is refused, so a VNFC that lost its role can never overwrite the state.
- ``replicated`` (2n): a write is durable when the standby has acknowledged it. With no standby
  in service the manager's replica is the only copy; the write is acknowledged from it and the
  VNF is *degraded* until a standby is back and has been given the whole state.
- ``checkpoint`` (no redundancy): a write is durable when it is on disk (fsync).
- ``external`` (shared_storage, store): the components write the state to a store themselves,
  which fences stale epochs; the manager is not in the path and refuses a write sent to it.
- A write may carry the component's version (direct sync: the writes that went peer to peer
  counted too); the replica's version never goes back, so the newest copy is recognised.
- Every write is applied to the manager's replica first, so a standby or restarted VNFC is always
  given the latest state, acknowledged or not.
- A store that fails (a full disk) fails every write not yet durable: each is refused, never
  acknowledged, and the replica goes back to the last durable state, so a total that was not
  durable is never served or handed over. ``store_error`` says why until a write succeeds again.

Pure: returns actions for the runtime; acknowledgements come back as calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


class Ack(NamedTuple):
    vnfc: str
    request: int


class Refuse(NamedTuple):
    vnfc: str
    request: int
    reason: str


class Replicate(NamedTuple):
    standby: str
    version: int
    updates: dict[str, Any]


class Persist(NamedTuple):
    version: int
    epoch: int
    state: dict[str, Any]


Action = Ack | Refuse | Replicate | Persist


@dataclass(slots=True)
class CheckpointService:
    mode: Literal["replicated", "checkpoint", "none", "external"]
    state: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    writer: tuple[str, int] | None = None  # (vnfc, epoch) allowed to write
    standby: str | None = None
    stepping_down: str | None = None  # the active of a switchover, standby once it is done
    # version -> the write waiting for durability
    pending: dict[int, Ack] = field(default_factory=dict)
    degraded: bool = False
    store_error: str = ""  # the last store failure, until a write is durable again
    durable: tuple[int, dict[str, Any]] = (
        0,
        {},
    )  # checkpoint mode: the last (version, state) on disk

    def grant(self, vnfc: str, epoch: int) -> list[Action]:
        """``vnfc`` became active with ``epoch``; if it was the standby, it no longer is. An
        active that stepped down for it (a switchover) is its standby from now on."""
        self.writer = (vnfc, epoch)
        actions = self.drop_standby(vnfc)
        if self.stepping_down is not None:
            self.standby, self.degraded, self.stepping_down = self.stepping_down, False, None
        return actions

    def revoke(self, vnfc: str) -> list[Action]:
        """``vnfc`` is being cleaned up: it may not write, and it replicates nothing more."""
        if self.writer and self.writer[0] == vnfc:
            self.writer = None
        return self.drop_standby(vnfc)

    def attach_standby(self, vnfc: str) -> None:
        """``vnfc`` is assigned standby and is sent the whole state with its assignment. The
        active stepping down (a switchover) writes no more; it becomes the standby once its
        successor is active, which until then is the standby holding every write."""
        if self.writer is not None and self.writer[0] == vnfc:
            self.writer, self.stepping_down = None, vnfc
            return
        self.standby, self.degraded = vnfc, False

    def drop_standby(self, vnfc: str) -> list[Action]:
        if self.standby != vnfc:
            return []
        self.standby = None
        if self.mode == "replicated":
            self.degraded = True
            # The replica holds these writes; the next standby is given them all.
            released: list[Action] = list(self.pending.values())
            self.pending = {}
            return released
        return []

    def write(
        self,
        vnfc: str,
        epoch: int,
        request: int,
        updates: dict[str, Any],
        version: int | None = None,
    ) -> list[Action]:
        if self.mode == "none":
            return [Refuse(vnfc, request, "this VNF keeps no state")]
        if self.mode == "external":
            return [Refuse(vnfc, request, "this VNF's components write their state to its store")]
        if self.writer != (vnfc, epoch):
            holder = f"{self.writer[0]} (epoch {self.writer[1]})" if self.writer else "nobody"
            return [Refuse(vnfc, request, f"not the writer: epoch {epoch}; writer is {holder}")]
        self.version = max(self.version + 1, version or 0)
        self.state.update(updates)
        ack = Ack(vnfc, request)
        if self.mode == "checkpoint":
            self.pending[self.version] = ack
            return [Persist(self.version, epoch, dict(self.state))]
        if self.standby is None:
            return [ack]  # degraded: the replica is the copy
        self.pending[self.version] = ack
        return [Replicate(self.standby, self.version, updates)]

    def offered(self, version: int, state: dict[str, Any]) -> None:
        """A component hands back the state it holds, e.g. a standby promoted that could not
        take the role (direct sync: the manager's copy lags): the newer one is kept, so the
        next active is given it."""
        if self.mode == "replicated" and version > self.version:
            self.state, self.version = dict(state), version

    def standby_acked(self, vnfc: str, version: int) -> list[Action]:
        if vnfc != self.standby:
            return []
        return self._release_up_to(version)

    def persisted(self, version: int, state: dict[str, Any]) -> list[Action]:
        """The store holds ``state`` as ``version``: release the writes up to it."""
        if version > self.durable[0]:
            self.durable = (version, state)
        self.store_error = ""
        return self._release_up_to(version)

    def persist_failed(self, reason: str) -> list[Refuse]:
        """The store could not make the pending writes durable: refuse them all and go back to
        the last durable state. Versions only grow: a write still in the store's hands keeps
        a version of its own."""
        self.store_error = reason
        self.state = dict(self.durable[1])
        refused, self.pending = list(self.pending.values()), {}
        text = f"checkpoint store failed: {reason}"
        return [Refuse(ack.vnfc, ack.request, text) for ack in refused]

    def _release_up_to(self, version: int) -> list[Action]:
        done = [v for v in self.pending if v <= version]
        return [self.pending.pop(v) for v in sorted(done)]
