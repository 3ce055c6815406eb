"""Restart intensity, in the shape of the OTP supervisor's: keep the failure times inside the
probation window; more than ``max_restarts`` of them means repair at this level is not working."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class RestartIntensity:
    max_restarts: int
    probation_s: float
    failures: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> bool:
        """Record a failure at ``now``; True when it should escalate instead of restarting."""
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.probation_s:
            self.failures.popleft()
        return len(self.failures) > self.max_restarts

    @property
    def count(self) -> int:
        return len(self.failures)

    def clear(self) -> None:
        self.failures.clear()


def restart_delay_s(failures: int, first_ms: int, backoff_ms: int, max_ms: int) -> float:
    """The wait before restarting after the ``failures``-th failure within the probation:
    ``first_ms`` after the first, then ``backoff_ms`` doubled per failure, capped."""
    if failures <= 1 or backoff_ms == 0:
        return first_ms / 1000
    step: int = backoff_ms << (failures - 2)  # doubled per failure after the first
    return min(max(first_ms, step), max_ms) / 1000
