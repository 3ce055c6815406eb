"""What the trace means to the tools around nfvha: failovers, restarts, escalations, failures
detected, services up or down, roles taken.

Metrics (``runtime.metrics``), the structured stderr lines (``runtime.journal``) and the notify
hooks (``runtime.hooks``) all read the trace through ``Outcomes``, which turns its records into
these outcomes once, so the three can never tell different stories, and none of them can tell
one the trace does not.

How a record is read (the managers' rules, ``core.ha``, seen from outside):
- A failure is decided when the manager orders the VNFC's ``Cleanup``; it was first seen at the
  earliest sign before it (``ProcessExited``, ``HealthCheckFailed``, ``ErrorReported``,
  ``StartFailed``, ``TimerExpired``) since the VNFC was last healthy.
- A failover is an ``AssignRole`` to active, of another VNFC, after the active was lost; the
  recovery ends when a VNFC of that VNF confirms the active role (``RoleConfirmed``).
- A restart is a ``StartVnfc`` of a VNFC whose failure was decided before.
- An escalation is the HA manager's ``Escalate`` message to the VNFM.
- A service is up while a VNFC confirmed (or kept, after a takeover) in the active role holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nfvha.config import Deployment
from nfvha.runtime.trace import Record

# Events that show a VNFC may have failed: the first of them starts the detection time.
SIGNS = frozenset(
    {"ProcessExited", "HealthCheckFailed", "ErrorReported", "StartFailed", "TimerExpired"}
)


@dataclass(frozen=True, slots=True)
class Failed:
    vnf: str
    vnfc: str
    role: str  # the role it held
    detection_s: float | None  # first sign -> decided; None when no sign was traced
    reason: str


@dataclass(frozen=True, slots=True)
class Failover:
    vnf: str
    source: str  # the lost active
    target: str  # the VNFC made active
    epoch: int


@dataclass(frozen=True, slots=True)
class Recovered:
    vnf: str
    vnfc: str  # the new active
    recovery_s: float  # failure decided -> new active confirmed


@dataclass(frozen=True, slots=True)
class Restart:
    vnf: str
    vnfc: str


@dataclass(frozen=True, slots=True)
class Escalation:
    vnf: str
    vnfc: str
    failures: int
    reason: str


@dataclass(frozen=True, slots=True)
class ServiceState:
    vnf: str
    service: str
    up: bool


@dataclass(frozen=True, slots=True)
class RoleTaken:
    vnf: str
    vnfc: str
    role: str  # confirmed by the VNFC: it serves (active) or holds the state (standby)


Outcome = Failed | Failover | Recovered | Restart | Escalation | ServiceState | RoleTaken


@dataclass(slots=True)
class _Vnf:
    service: str
    serving: set[str] = field(default_factory=set)
    lost_active: tuple[str, int] | None = None  # (VNFC, t of the decision) until recovered


class Outcomes:
    """Reads trace records in order; ``feed`` returns the outcomes each one makes."""

    def __init__(self, deployment: Deployment) -> None:
        self.owner = {c.name: v.name for v in deployment.vnfs for c in v.vnfcs}
        self.vnfs = {v.name: _Vnf(v.service.name) for v in deployment.vnfs}
        self.assigned: dict[str, tuple[str, int]] = {}  # VNFC -> (role, epoch) last assigned
        self.first_sign: dict[str, tuple[int, str]] = {}  # VNFC -> (t, reason)
        self.failed: set[str] = set()  # decided failed, not started again yet

    def feed(self, rec: Record) -> list[Outcome]:
        data: dict[str, Any] = rec.get("data") or {}
        vnfc = data.get("vnfc", "")
        kind, name = rec["kind"], rec["name"]
        if kind == "message" and name == "Escalate" and vnfc in self.owner:
            return [Escalation(self.owner[vnfc], vnfc, data.get("failures", 0), data["reason"])]
        if vnfc not in self.owner:
            return []
        vnf = self.owner[vnfc]
        if kind == "event":
            return self._event(vnf, vnfc, rec, data)
        if kind == "command":
            return self._command(vnf, vnfc, rec, data)
        return []

    def _event(self, vnf: str, vnfc: str, rec: Record, data: dict[str, Any]) -> list[Outcome]:
        name = rec["name"]
        if name in SIGNS:
            self.first_sign.setdefault(vnfc, (rec["t"], rec.get("why", name)))
        elif name == "HealthCheckPassed":
            self.first_sign.pop(vnfc, None)  # a miss that healed was no failure
        elif name == "RoleConfirmed" and self.assigned.get(vnfc) == (data["role"], data["epoch"]):
            return self._confirmed(vnf, vnfc, data["role"], rec["t"])
        return []

    def _command(self, vnf: str, vnfc: str, rec: Record, data: dict[str, Any]) -> list[Outcome]:
        name, state = rec["name"], self.vnfs[vnf]
        if name == "Cleanup":
            return self._decided(vnf, vnfc, rec["t"])
        if name == "StartVnfc":
            self.assigned.pop(vnfc, None)
            out: list[Outcome] = self._not_serving(vnf, vnfc)
            if vnfc in self.failed:
                self.failed.discard(vnfc)
                out.append(Restart(vnf, vnfc))
            return out
        if name == "AssignRole":
            self.assigned[vnfc] = (data["role"], data["epoch"])
            out = self._not_serving(vnf, vnfc)
            lost = state.lost_active
            if data["role"] == "active" and lost is not None and lost[0] != vnfc:
                out.append(Failover(vnf, lost[0], vnfc, data["epoch"]))
            return out
        if name == "KeepRole" and data.get("role") == "active":  # adopted by a new manager
            self.assigned[vnfc] = ("active", data.get("epoch", 0))
            return self._serving(vnf, vnfc)
        return []

    def _decided(self, vnf: str, vnfc: str, t: int) -> list[Outcome]:
        """The manager ordered the cleanup: the failure is decided."""
        role = self.assigned.pop(vnfc, ("none", 0))[0]
        sign = self.first_sign.pop(vnfc, None)
        detection = (t - sign[0]) / 1e9 if sign else None
        self.failed.add(vnfc)
        if role == "active":
            self.vnfs[vnf].lost_active = (vnfc, t)
        reason = sign[1] if sign else "cleanup ordered"
        return [Failed(vnf, vnfc, role, detection, reason), *self._not_serving(vnf, vnfc)]

    def _confirmed(self, vnf: str, vnfc: str, role: str, t: int) -> list[Outcome]:
        out: list[Outcome] = [RoleTaken(vnf, vnfc, role)]
        if role != "active":
            return out
        state = self.vnfs[vnf]
        if state.lost_active is not None:
            out.append(Recovered(vnf, vnfc, (t - state.lost_active[1]) / 1e9))
            state.lost_active = None
        return [*self._serving(vnf, vnfc), *out]

    def _serving(self, vnf: str, vnfc: str) -> list[Outcome]:
        state = self.vnfs[vnf]
        was = bool(state.serving)
        state.serving.add(vnfc)
        return [] if was else [ServiceState(vnf, state.service, True)]

    def _not_serving(self, vnf: str, vnfc: str) -> list[Outcome]:
        state = self.vnfs[vnf]
        if vnfc not in state.serving:
            return []
        state.serving.discard(vnfc)
        return [] if state.serving else [ServiceState(vnf, state.service, False)]
