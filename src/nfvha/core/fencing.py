"""Fencing tokens checked by the receiver of a command (an agent), never trusted from the sender.

A manager kind ("vim", "vnfm", "ha:<vnf>" ...) is led by one manager at a time; each leadership
term has a fencing token (with etcd: the create revision of the leader key), higher for every
later term. A deposed manager may not know it is deposed yet, and its commands may be delayed or
replayed: the agent, which sees commands of every term, is where the order is enforced.

Rules (tests in tests/test_core_fencing.py):
1. A command carrying a token older than the highest one the gate has seen for its kind is
   refused, with the reason; the gate is unchanged by it.
2. A command carrying the highest token seen, or a higher one, is admitted; a higher one raises
   the gate for its kind (every older term is refused from then on).
3. Kinds are independent: the "vim" leader's token says nothing about the "vnfm" leader's.
4. A token is a positive integer; anything else is refused.

Pure: no I/O and no clock; the agent keeps one gate and persists ``highest()`` if it must
survive its own restart (a restarted agent that forgot would admit one stale command per kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Admitted:
    kind: str
    token: int
    raised: bool  # rule 2: a newer term was seen for the first time


@dataclass(frozen=True, slots=True)
class Refused:
    kind: str
    token: int
    reason: str


@dataclass(slots=True)
class FenceGate:
    _highest: dict[str, int] = field(default_factory=dict)

    def admit(self, kind: str, token: int) -> Admitted | Refused:
        """Whether a command of manager ``kind`` carrying ``token`` may be executed."""
        if isinstance(token, bool) or not isinstance(token, int) or token <= 0:
            return Refused(kind, token, f"no valid fencing token for {kind} ({token!r})")  # 4
        seen = self._highest.get(kind, 0)
        if token < seen:  # rule 1
            return Refused(kind, token, f"stale {kind} leader: token {token} is older than {seen}")
        self._highest[kind] = token
        return Admitted(kind, token, raised=token > seen)

    def highest(self) -> dict[str, int]:
        """The highest token seen per kind (a copy), to persist or to report."""
        return dict(self._highest)

    def restore(self, highest: dict[str, int]) -> None:
        """Raise the gate to tokens remembered from before a restart (never lowers it)."""
        for kind, token in highest.items():
            self._highest[kind] = max(token, self._highest.get(kind, 0))
