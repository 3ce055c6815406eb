"""Events the managers observe, commands they issue, and the decision that carries them.

Frozen, slotted, keyword-only dataclasses: every one is a record in the trace, so each has a
``name`` and a flat ``fields()`` view for it. The VNF side (about VNFCs) comes first, then the
infrastructure side (about VMs and hosts, the VIM's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple


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


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorRequest(Message):
    """An operator's verb for one VNFC (``nfvha clear|restart|stop|start VNFC``)."""

    action: Literal["clear", "restart", "stop", "start"]


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
class ClaimAddress(Message):
    """Make the VNFC's node hold the service's virtual IP and announce it (gratuitous ARP).
    Claiming an address held already announces it again."""

    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseAddress(Message):
    """Take the service's virtual IP off the VNFC's node; releasing one not held is a no-op."""

    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepRole(Message):
    """A VNFC adopted by a new manager keeps the role it held: nothing is sent to it; its
    checkpoint writes are accepted with its epoch."""

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


# === infrastructure: the VIM's events and commands =========================================


@dataclass(frozen=True, slots=True, kw_only=True)
class VmMsg(Traced):
    vm: str

    @property
    def subject(self) -> str:
        return self.vm


@dataclass(frozen=True, slots=True, kw_only=True)
class HostMsg(Traced):
    host: str

    @property
    def subject(self) -> str:
        return self.host


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VmFailed(VmMsg):
    """Seen by the NFVI: the guest exited (``exit``) or its heartbeat stopped (``heartbeat``)."""

    cause: Literal["exit", "heartbeat"]
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VmErrorReport(VmMsg):
    """From a VNFM: repairing inside this VM did not help (escalation, use case 9)."""

    vnfm: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairConsent(VmMsg):
    vnfm: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VmCleanedUp(VmMsg):
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VmUp(VmMsg):
    host: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VmStartFailed(VmMsg):
    """The VM did not come up where it was started."""

    detail: str = ""
    host_unreachable: bool = False  # its host agent could not be reached at all


@dataclass(frozen=True, slots=True, kw_only=True)
class StandbyVmUp(VmMsg):
    """The standby VM of ``vm`` is booted on ``host``, ready to take its place."""

    host: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StandbyVmFailed(VmMsg):
    host: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFailed(HostMsg):
    cause: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFenced(HostMsg):
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HostUp(HostMsg):
    pass


# --- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm(Traced):
    entity: str
    severity: Literal["critical", "major", "cleared"]
    text: str

    @property
    def subject(self) -> str:
        return self.entity


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupVm(VmMsg):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class FenceHost(HostMsg):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class StartHost(HostMsg):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class StartVm(VmMsg):
    host: str
    restore: bool  # True: from its last snapshot (its disk as it was); False: initial state


@dataclass(frozen=True, slots=True, kw_only=True)
class PromoteStandbyVm(VmMsg):
    """The standby VM on ``host`` becomes ``vm`` (answered by VmUp)."""

    host: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartStandbyVm(VmMsg):
    """Boot a standby VM for ``vm`` on ``host`` (answered by StandbyVmUp or StandbyVmFailed)."""

    host: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyVmFailed(VmMsg):
    """To the VNFM of the VNF on the VM; in negotiation mode also a request for consent."""

    vnf: str
    host: str
    reason: str
    consent_needed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyVmRepaired(VmMsg):
    vnf: str
    host: str


# Messages that leave the VIM for the VNFM rather than a driver.
VIM_TO_VNFM = (NotifyVmFailed, NotifyVmRepaired)


class Decision(NamedTuple):
    """What a manager decided about one event: the commands to carry out, and why."""

    commands: tuple[Traced, ...]
    why: str
