"""A leader's belief in its lease: when it leads, for how long, and when it must stop believing it.

A leader holds a lease of ``ttl_s`` in a store (etcd) and renews it every ``renew_s``; one renewal
attempt (every retry included) lasts at most ``retry_s``. The store expires the lease ``ttl_s``
after it *received* the last renewal; the leader counts from when it *sent* it, which is earlier,
on its own monotonic clock: its belief always ends before the store lets anybody else lead.

Rules (tests in tests/test_core_lease.py):
1. Held-until = send time of the last successful renewal (or of the grant) + ``ttl_s``; a renewal
   never shortens it.
2. A failed renewal demotes at once: a leader that could not renew does not hope for the next one.
3. Held-until passing demotes, whatever the renewal loop is doing.
4. ``renew_s + 2 * retry_s <= ttl_s``: a renewal starts at most ``retry_s + renew_s`` after the
   last successful send and fails within ``retry_s`` more, so rule 2 demotes the leader before
   held-until, never after. Timings breaking it are refused at construction (``TimingError``).
5. Every demotion is reported once, with one sentence saying why.

Pure: the caller passes ``now`` and send times (the runtime its monotonic clock, the simulator
virtual time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class TimingError(ValueError):
    """Lease timings that could let a leader believe it leads after its lease expired."""


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    ttl_s: int  # etcd grants whole seconds
    renew_s: float
    retry_s: float

    def __post_init__(self) -> None:
        if isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, int) or self.ttl_s < 1:
            raise TimingError(f"a lease TTL is a whole number of seconds >= 1, not {self.ttl_s!r}")
        if not (self.renew_s > 0 and self.retry_s > 0):
            raise TimingError(
                f"renewal period and retry time must be > 0 (renew {self.renew_s} s, "
                f"retry {self.retry_s} s)"
            )
        if self.renew_s + 2 * self.retry_s > self.ttl_s:  # rule 4
            raise TimingError(
                f"renewal period + 2 x retry time must be <= TTL: {self.renew_s} + 2 x "
                f"{self.retry_s} = {self.renew_s + 2 * self.retry_s} s > {self.ttl_s} s (a failed "
                "renewal would be noticed after the lease expired)"
            )

    @classmethod
    def for_ttl(cls, ttl_s: int) -> LeaseTiming:
        """Renew every quarter of the TTL, retry for 3/8 of it (at the limit of rule 4)."""
        return cls(ttl_s, ttl_s / 4, ttl_s * 3 / 8)


@dataclass(slots=True)
class Tenure:
    """One member's leadership of one manager kind, term after term."""

    timing: LeaseTiming
    token: int | None = None  # the fencing token of the current term; None: not leading
    held_until: float = -math.inf

    def won(self, token: int, sent_at: float) -> None:
        """Elected with ``token``; ``sent_at``: when the lease was asked for (rule 1)."""
        self.token = token
        self.held_until = sent_at + self.timing.ttl_s

    def renewed(self, sent_at: float) -> None:
        if self.token is not None:
            self.held_until = max(self.held_until, sent_at + self.timing.ttl_s)  # rule 1

    def leads(self, now: float) -> bool:
        return self.token is not None and now < self.held_until

    def lost(self, why: str) -> str | None:
        """Stop leading (rule 2): the sentence to report, or None if not leading (rule 5)."""
        if self.token is None:
            return None
        token, self.token, self.held_until = self.token, None, -math.inf
        return f"demoted (token {token}): {why}"

    def expire(self, now: float) -> str | None:
        """Rule 3: the demotion due at ``now``, if any."""
        if self.token is not None and now >= self.held_until:
            return self.lost(f"lease held until {self.held_until:.3f} passed at {now:.3f}")
        return None

    def attempt_deadline(self, started: float) -> float:
        """When a renewal attempt started at ``started`` gives up (and rule 2 demotes)."""
        return min(started + self.timing.retry_s, self.held_until)
