"""Watchdog fencing of a VM: the lease its guest agent holds, seen from both ends.

A guest agent numbers its heartbeats; the VIM answers each with a lease of ``lease_s``. The
guest holds it from when it *sent* that heartbeat; the VIM counts it from when it *received*
it, which is later. A guest that hears no answer for a lease kills its VNFCs and exits (it
fences itself). The VIM may count a VM it cannot reach as isolated only once the guest has.

Rules (tests in tests/test_core_watchdog.py):
1. The guest's lease ends at the send of the last answered heartbeat + ``lease_s``; an answer
   never shortens it (a late answer to an older heartbeat changes nothing).
2. The VIM's view of it ends at the receipt of the last heartbeat it answered + ``lease_s``
   stretched by ``margin`` (clock rates of two machines) + ``slack_s`` (the guest's own exit):
   never before the guest's own end, since a heartbeat is received after it is sent.
3. A VM being isolated gets no more lease: its end can only come.
4. A VM never leased has nothing to wait for (there is no guest that could be serving under
   a lease; the kernel or its host says whether anything runs).

Pure: the caller passes the times (the agent and the VIM their monotonic clocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BEATS_KEPT = 64  # send times kept to date an answer; an older answer is dropped (rule 1)


@dataclass(slots=True)
class GuestLease:
    """The guest's side."""

    lease_s: float | None = None  # None: no lease held (kernel fencing): never fences itself
    held_until: float | None = None
    _sent: dict[int, float] = field(default_factory=dict)
    _last: int = 0

    def beat(self, now: float) -> int:
        """A heartbeat sent at ``now``: its number."""
        self._last += 1
        self._sent[self._last] = now
        self._sent.pop(self._last - BEATS_KEPT, None)
        return self._last

    def answered(self, n: int, lease_s: float) -> bool:
        """An answer to heartbeat ``n``: whether it extended the lease (rule 1)."""
        sent = self._sent.get(n)
        if sent is None:
            return False
        until = sent + lease_s
        if self.held_until is not None and until <= self.held_until:
            return False
        self.lease_s, self.held_until = lease_s, until
        return True

    def expired(self, now: float) -> bool:
        """Whether the guest must fence itself now."""
        return self.held_until is not None and now >= self.held_until


@dataclass(slots=True)
class VimLeases:
    """The VIM's side, for every guest."""

    lease_s: float
    margin: float = 0.05
    slack_s: float = 0.05
    _answered: dict[str, float] = field(default_factory=dict)
    _isolating: set[str] = field(default_factory=set)

    def answer(self, guest: str, received: float) -> bool:
        """Whether to answer a heartbeat of ``guest`` received at ``received`` (rule 3)."""
        if guest in self._isolating:
            return False
        self._answered[guest] = received
        return True

    def isolate(self, guest: str) -> float | None:
        """No more lease for ``guest``; when it is fenced by its own watchdog at the latest
        (rule 2), or None if it never held one (rule 4)."""
        self._isolating.add(guest)
        last = self._answered.get(guest)
        return None if last is None else last + self.lease_s * (1 + self.margin) + self.slack_s

    def isolating(self, guest: str) -> bool:
        return guest in self._isolating

    def remaining(self, guest: str, now: float) -> float:
        """How much of its lease the VIM still counts for ``guest`` (0 when none)."""
        last = self._answered.get(guest)
        return 0.0 if last is None else max(0.0, last + self.lease_s - now)

    def booted(self, guest: str) -> None:
        """A new life for ``guest`` (booted again): it may be leased again."""
        self._isolating.discard(guest)
        self._answered.pop(guest, None)
