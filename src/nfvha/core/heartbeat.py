"""Heartbeats of the NFVI's agents: when silence means a host or a VM has failed.

Rules (tests in tests/test_core_heartbeat.py):
1. An agent silent for ``misses`` x ``interval`` (from its last beat) has failed: a host agent
   as ``HostFailed``, a guest agent as ``VmFailed(cause="heartbeat")``.
2. Each silence is reported once; a beat after it starts a new life that can fail again.
3. A standby VM's silence is not reported: a dead standby is found when it is promoted.
4. An agent that is forgotten (stopped on purpose, fenced, cleaned up) is not reported.

Pure: the runtime calls ``beat`` when a heartbeat arrives and ``expired(now)`` as often as it
likes; the simulator calls ``beat`` at the last moment an agent was heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nfvha.core.messages import HostFailed, Traced, VmFailed

AgentKind = Literal["host", "guest"]


@dataclass(slots=True)
class _Agent:
    kind: AgentKind
    last_beat: float
    reported: bool = False


@dataclass(slots=True)
class Heartbeats:
    interval_s: float
    misses: int
    _agents: dict[str, _Agent] = field(default_factory=dict)

    @property
    def limit_s(self) -> float:
        return self.interval_s * self.misses

    def beat(self, name: str, kind: AgentKind, now: float) -> None:
        agent = self._agents.get(name)
        if agent is None or agent.reported or agent.kind != kind:
            self._agents[name] = _Agent(kind, now)  # rule 2: a new life
        else:
            agent.last_beat = max(agent.last_beat, now)

    def last_beat(self, name: str) -> float | None:
        agent = self._agents.get(name)
        return agent.last_beat if agent else None

    def forget(self, name: str) -> None:
        self._agents.pop(name, None)

    def expired(self, now: float, *, standby: frozenset[str] = frozenset()) -> list[Traced]:
        """The failures that silence proves at ``now``, each reported once."""
        failed: list[Traced] = []
        for name, agent in self._agents.items():
            if agent.reported or name in standby or now - agent.last_beat < self.limit_s:
                continue
            agent.reported = True
            silent = f"no heartbeat for {(now - agent.last_beat) * 1000:.0f} ms"
            if agent.kind == "host":
                failed.append(HostFailed(host=name, cause=silent))
            else:
                failed.append(VmFailed(vm=name, cause="heartbeat", detail=silent))
        return failed
