"""The VNFM: the bridge between the VNFs it manages and the VIM.

Rules (design brief 3, 4, 5, 6; tests in tests/test_core_vnfm.py):

1. Relay. A VM failure or repair notified by the VIM is passed to the HA manager of the VNF as
   ``VmLost`` / ``VmRestored`` for each VNFC placed on that VM. (For a VNF without redundancy the
   VNFM hosts that HA manager itself: it is the VNFC life-cycle manager of use cases 3, 4, 7, 8.)
2. Consent. When the VIM asks before restarting a VM (negotiation mode), the VNFM consents once it
   has told the HA manager: the VNF level has isolated the VNFCs of that VM, so a restarted VM
   cannot fight the VNF-level failover.
3. Escalation. An ``Escalate`` from an HA manager (a VNFC failed more than its maximum within
   the probation time) becomes an error report on the VNFC's VM to the VIM (use case 9); a
   VNFC that runs on no VM (a deployment without hosts) has no wider zone to report it on.
4. Error report and clear from HA managers are kept as the VNF's open errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nfvha.core import messages as m
from nfvha.core import vim as v
from nfvha.core.ha import Decision
from nfvha.core.messages import Traced


@dataclass(slots=True)
class Vnfm:
    name: str
    placement: dict[str, str]  # vnfc -> vm
    owner: dict[str, str]  # vnfc -> vnf
    open_errors: dict[str, m.ReportError] = field(default_factory=dict)  # service -> report
    escalations: list[m.Escalate] = field(default_factory=list)
    on_vm: dict[str, list[str]] = field(init=False)  # vm -> vnfcs

    def __post_init__(self) -> None:
        self.on_vm = {}
        for vnfc, vm in self.placement.items():
            self.on_vm.setdefault(vm, []).append(vnfc)

    def handle(self, event: Traced, now: float) -> Decision:
        if isinstance(event, v.NotifyVmFailed):
            vnfcs = self.on_vm.get(event.vm, [])
            commands: list[Traced] = [m.VmLost(vnfc=c, vm=event.vm) for c in vnfcs]
            if event.consent_needed:
                commands.append(v.RepairConsent(vm=event.vm, vnfm=self.name))
            consent = "; consents to its repair" if event.consent_needed else ""
            return Decision(tuple(commands), f"VM {event.vm} failed: told the HA manager{consent}")
        if isinstance(event, v.NotifyVmRepaired):
            vnfcs = self.on_vm.get(event.vm, [])
            return Decision(
                tuple(m.VmRestored(vnfc=c, vm=event.vm) for c in vnfcs),
                f"VM {event.vm} repaired on {event.host}: its VNFCs can be restored",
            )
        if isinstance(event, m.Escalate):
            self.escalations.append(event)
            vm = self.placement.get(event.vnfc)
            if vm is None:
                return Decision((), f"{event.vnfc} cannot be repaired; no VM to report it on")
            report = v.VmErrorReport(vm=vm, vnfm=self.name, reason=f"{event.vnfc}: {event.reason}")
            return Decision((report,), f"{event.vnfc} cannot be repaired in its VM: error on {vm}")
        if isinstance(event, m.ReportError):
            self.open_errors[event.service] = event
            return Decision((), f"service {event.service} interrupted: {event.reason}")
        if isinstance(event, m.ClearError):
            self.open_errors.pop(event.service, None)
            return Decision((), f"service {event.service} is back")
        raise ValueError(f"VNFM: no rule for {event.name}")
