"""Events the managers observe and commands they issue.

Frozen, slotted, keyword-only dataclasses: every one is a record in the trace, so each has a
``name`` and a flat ``fields()`` view for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Traced:
    """Anything a manager receives or issues: it has a name and flat fields for the trace."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def subject(self) -> str:
        """The entity it is about (a VNFC, VM or host name)."""
        raise NotImplementedError

    def fields(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(Traced):
    vnfc: str

    @property
    def subject(self) -> str:
        return self.vnfc


# --- events: what the runtime observed --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessStarted(Message):
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StartFailed(Message):
    reason: str
    vm_unreachable: bool = False  # the VNFC's VM did not answer: not the VNFC's fault
    token: int = 0  # the StartVnfc it answers (a late answer to an older start is stale)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentRegistered(Message):
    """The VNFC's SDK connected (or, without the SDK, its process is running)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessExited(Message):
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckPassed(Message):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckFailed(Message):
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReported(Message):
    """The component itself reports an error through the SDK."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupDone(Message):
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleConfirmed(Message):
    """The VNFC took the role it was given (an active has claimed the service address)."""

    role: str
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerExpired(Message):
    """A deadline the manager set (``SetTimer``) has passed."""

    timer: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreFailed(Message):
    """The checkpoint store could not make this VNFC's writes durable (a full disk, say): they
    were refused, never acknowledged."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreRecovered(Message):
    """A checkpoint write of this VNFC is durable again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VmLost(Message):
    """From the VNFM, relaying the VIM: the VM of this VNFC failed. The VNFC is isolated with
    it; its repair waits for the VM (use cases 2, 4, 6, 8)."""

    vm: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VmRestored(Message):
    """From the VNFM, relaying the VIM: the VM of this VNFC is running again."""

    vm: str


# --- commands: what a manager asks the drivers (or another manager) to do ---------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StartVnfc(Message):
    token: int = 0  # which start this is; StartFailed carries it back


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer(Message):
    """Report ``TimerExpired(timer, token)`` after ``after_s``: the core keeps no clock."""

    timer: str
    after_s: float
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Cleanup(Message):
    """Isolate the VNFC: SIGTERM its process group, SIGKILL after grace, confirm it is gone."""

    grace_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignRole(Message):
    role: str
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchHealth(Message):
    on: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportError(Message):
    """To the VNFM: the service is interrupted (use case 1, 'report failure')."""

    service: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearError(Message):
    """To the VNFM: the service is back."""

    service: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalate(Message):
    """To the VNFM: repairing the VNFC did not help; the wider fault zone needs repair."""

    failures: int
    probation_s: float
    reason: str


# Commands that leave the HA manager for another manager rather than a driver.
TO_VNFM = (ReportError, ClearError, Escalate)
