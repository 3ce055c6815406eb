"""The VIM of one site: hosts and VMs, fencing, VM repair, alarms, and correlation of failures.

Rules (design brief 3, 4, 6; tests in tests/test_core_vim.py):

1. Fence before restart elsewhere. The VMs of a failed host are started again (here or on
   another host) only after the host is confirmed fenced; a failed VM only after its guest is
   confirmed cleaned up. If fencing fails, nothing is restarted and a critical alarm is raised.
2. Coordination, not interference. Every VM failure is notified to the VNFM of the VNF it hosts,
   once the VM is isolated (its guest confirmed cleaned up, or its host fenced): the HA manager
   may take the notification as confirmed isolation of the VNFCs on it, never as a suspicion.
   In ``negotiation`` mode the VM is restarted only when the VNFM consents (an error report from
   the VNFM on that VM counts as consent: it asked for the repair). In ``auto`` mode the VIM applies
   the VNF's configured action without asking. Either way the VIM never touches VNFC roles.
3. Handled once. A VM already failed is not failed again, whoever reports it.
4. Correlation. Failures or error reports on two different VMs of one host within the
   correlation window mean the host is at fault: the host is fenced and repaired, and all its
   VMs with it, instead of each VM on its own.
5. Anti-affinity. A VM restarted away from its failed host goes to an up host that runs no
   other VM of the same VNF, if there is one; otherwise it waits for its host to come back.
6. Standby VMs (``failover_standby_vm``). A VM with a booted standby on another host is
   repaired by promoting the standby (once isolated and consented, as any repair), not by a
   boot; a new standby is then started on a host other than the VM's.

Theory of operation: events carry the current monotonic time; ``handle`` returns commands and
one sentence of why. Detection (heartbeats, exits seen by host agents) is the runtime's; the
decisions are here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from nfvha.core.messages import VIM_TO_VNFM as TO_VNFM
from nfvha.core.messages import (
    Alarm,
    CleanupVm,
    Decision,
    FenceHost,
    HostFailed,
    HostFenced,
    HostMsg,
    HostUp,
    NotifyVmFailed,
    NotifyVmRepaired,
    PromoteStandbyVm,
    RepairConsent,
    StandbyVmFailed,
    StandbyVmUp,
    StartHost,
    StartStandbyVm,
    StartVm,
    Traced,
    VmCleanedUp,
    VmErrorReport,
    VmFailed,
    VmMsg,
    VmStartFailed,
    VmUp,
)

# The VIM's messages live in core.messages with all the others; they stay importable from
# here for the VIM's readers.
__all__ = [
    "TO_VNFM",
    "Vim",
    "VmSpec",
    "Alarm",
    "CleanupVm",
    "FenceHost",
    "HostFailed",
    "HostFenced",
    "HostMsg",
    "HostUp",
    "NotifyVmFailed",
    "NotifyVmRepaired",
    "PromoteStandbyVm",
    "RepairConsent",
    "StandbyVmFailed",
    "StandbyVmUp",
    "StartHost",
    "StartStandbyVm",
    "StartVm",
    "TO_VNFM",
    "VmCleanedUp",
    "VmErrorReport",
    "VmFailed",
    "VmMsg",
    "VmStartFailed",
    "VmUp",
]

# --- state --------------------------------------------------------------------------------------


class VmLife(StrEnum):
    UP = "up"
    FAILED = "failed"  # isolation (cleanup or fencing) and consent pending
    STARTING = "starting"


class HostLife(StrEnum):
    UP = "up"
    FENCING = "fencing"
    DOWN = "down"  # fenced; being restarted
    FENCE_FAILED = "fence-failed"


@dataclass(frozen=True, slots=True)
class VmSpec:
    name: str
    host: str
    vnf: str
    repair: Literal["negotiation", "auto"] = "negotiation"
    action: Literal["restart", "restart_from_snapshot", "failover_standby_vm"] = (
        "restart_from_snapshot"
    )
    standby_host: str | None = None  # where its standby VM is booted at the start


@dataclass(slots=True)
class VmState:
    spec: VmSpec
    host: str
    life: VmLife = VmLife.UP
    isolated: bool = False
    consent: bool = False
    reason: str = ""
    notify: bool = False  # the VNFM is to be told once the VM is isolated
    standby: str | None = None  # host of its booted standby VM, ready to take over
    standby_starting: bool = False


@dataclass(slots=True)
class Vim:
    hosts: dict[str, HostLife]
    vms: dict[str, VmState]
    correlation_window_s: float = 10.0
    recent: dict[str, deque[tuple[float, str]]] = field(default_factory=dict)
    # Indexes, so that no event costs a scan of every VM (thousands of hosts, tens of thousands
    # of VMs): VMs by host, VMs by VNF.
    by_host: dict[str, set[str]] = field(default_factory=dict)
    by_vnf: dict[str, set[str]] = field(default_factory=dict)
    standby_on: dict[str, set[str]] = field(default_factory=dict)  # host -> VMs with a standby
    needs_standby: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, hosts: list[str], vms: list[VmSpec], correlation_window_s: float) -> Vim:
        vim = cls(
            {h: HostLife.UP for h in hosts},
            {v.name: VmState(v, v.host) for v in vms},
            correlation_window_s,
        )
        for spec in vms:
            vim.by_host.setdefault(spec.host, set()).add(spec.name)
            vim.by_vnf.setdefault(spec.vnf, set()).add(spec.name)
            if spec.standby_host:
                vim.vms[spec.name].standby = spec.standby_host
                vim.standby_on.setdefault(spec.standby_host, set()).add(spec.name)
        return vim

    def _move(self, vm: VmState, host: str) -> None:
        self.by_host[vm.host].discard(vm.spec.name)
        self.by_host.setdefault(host, set()).add(vm.spec.name)
        vm.host = host

    def handle(self, event: Traced, now: float) -> Decision:
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is None:
            raise ValueError(f"VIM: no rule for {event.name}")
        decision: Decision = handler(event, now)
        return decision

    # --- VM failures ----------------------------------------------------------------------------

    def _on_VmFailed(self, e: VmFailed, now: float) -> Decision:
        return self._vm_failure(e.vm, f"VM {e.cause}: {e.detail}".rstrip(": "), now, reporter=None)

    def _on_VmErrorReport(self, e: VmErrorReport, now: float) -> Decision:
        return self._vm_failure(e.vm, f"error report from {e.vnfm}: {e.reason}", now, e.vnfm)

    def _vm_failure(self, name: str, reason: str, now: float, reporter: str | None) -> Decision:
        vm = self.vms[name]
        if reporter is not None:
            vm.consent = True  # the VNFM asked for this repair
        if vm.life is not VmLife.UP:
            return Decision((), f"{name} {reason}; already {vm.life}, handled once")
        suspects = self._correlate(vm.host, name, now)
        if len(suspects) >= 2 and self.hosts[vm.host] is HostLife.UP:
            why = f"{', '.join(sorted(suspects))} of {vm.host} failed within the window"
            return self._fail_host(vm.host, why)
        self._vm_down(vm, reason, reporter)
        commands: list[Traced] = [
            Alarm(entity=name, severity="major", text=reason),
            CleanupVm(vm=name),
        ]
        return Decision(
            tuple(commands), f"{name} failed ({reason}); isolating it before any repair"
        )

    def _correlate(self, host: str, vm: str, now: float) -> set[str]:
        window = self.recent.setdefault(host, deque())
        window.append((now, vm))
        while window and now - window[0][0] > self.correlation_window_s:
            window.popleft()
        return {v for _, v in window}

    def _vm_down(self, vm: VmState, reason: str, reporter: str | None) -> None:
        vm.life, vm.isolated, vm.reason = VmLife.FAILED, False, reason
        if vm.spec.repair != "negotiation":
            vm.consent = True
        vm.notify = reporter is None  # the VNFM that reported it knows

    def _isolated(self, vm: VmState, text: str) -> Decision:
        """The VM is confirmed gone: tell its VNFM (now), then repair it when allowed."""
        vm.isolated = True
        commands: list[Traced] = []
        if vm.notify:
            vm.notify = False
            commands.append(
                NotifyVmFailed(
                    vm=vm.spec.name,
                    vnf=vm.spec.vnf,
                    host=vm.host,
                    reason=vm.reason,
                    consent_needed=not vm.consent,
                )
            )
        restart = self._maybe_restart(vm, text)
        return Decision(tuple(commands) + restart.commands, restart.why)

    def _on_VmCleanedUp(self, e: VmCleanedUp, now: float) -> Decision:
        vm = self.vms[e.vm]
        if vm.life is not VmLife.FAILED:
            return Decision((), f"ignored cleanup result of {e.vm}: it is {vm.life}")
        if not e.ok:
            return self._fail_host(vm.host, f"{e.vm} could not be cleaned up ({e.detail})")
        return self._isolated(vm, f"{e.vm} is isolated")

    def _on_RepairConsent(self, e: RepairConsent, now: float) -> Decision:
        vm = self.vms[e.vm]
        vm.consent = True
        if vm.life is not VmLife.FAILED:
            return Decision((), f"consent for {e.vm} noted; it is {vm.life}")
        return self._maybe_restart(vm, f"{e.vnfm} consents to repairing {e.vm}")

    def _maybe_restart(self, vm: VmState, text: str) -> Decision:
        if not vm.isolated:
            return Decision((), f"{text}; waiting for its isolation")
        if not vm.consent:
            return Decision((), f"{text}; waiting for the VNFM's consent")
        if vm.standby is not None and self.hosts.get(vm.standby) is HostLife.UP:
            host, vm.standby = vm.standby, None
            self.standby_on[host].discard(vm.spec.name)
            vm.life = VmLife.STARTING
            self._move(vm, host)
            return Decision(
                (PromoteStandbyVm(vm=vm.spec.name, host=host),),
                f"{text}; its standby VM on {host} takes its place",
            )
        target = self._place(vm)
        if target is None:
            return Decision((), f"{text}; no host can take it, waiting for {vm.host}")
        vm.life = VmLife.STARTING
        self._move(vm, target)
        restore = vm.spec.action == "restart_from_snapshot"
        return Decision(
            (StartVm(vm=vm.spec.name, host=target, restore=restore),),
            f"{text}; restarting it on {target}" + (" from its last snapshot" if restore else ""),
        )

    def _place(self, vm: VmState) -> str | None:
        if self.hosts.get(vm.host) is HostLife.UP:
            return vm.host
        siblings = {self.vms[n].host for n in self.by_vnf[vm.spec.vnf] if n != vm.spec.name}
        for host, life in self.hosts.items():
            if life is HostLife.UP and host not in siblings:
                return host
        return None

    def _on_VmStartFailed(self, e: VmStartFailed, now: float) -> Decision:
        vm = self.vms[e.vm]
        if vm.life is not VmLife.STARTING:
            return Decision((), f"ignored start failure of {e.vm}: it is {vm.life}")
        vm.life = VmLife.FAILED  # still isolated and consented: try again, elsewhere if need be
        if e.host_unreachable and self.hosts[vm.host] is HostLife.UP:
            # A host that cannot even be asked is treated as failed: fenced, so that the VM
            # goes elsewhere (or waits for it), never retried on it in a loop.
            return self._fail_host(vm.host, f"unreachable when starting {e.vm}")
        return self._maybe_restart(vm, f"{e.vm} did not start ({e.detail})")

    def _on_VmUp(self, e: VmUp, now: float) -> Decision:
        vm = self.vms[e.vm]
        vm.life, vm.consent, vm.isolated = VmLife.UP, False, False
        self._move(vm, e.host)
        return Decision(
            (
                Alarm(entity=e.vm, severity="cleared", text=f"running on {e.host}"),
                NotifyVmRepaired(vm=e.vm, vnf=vm.spec.vnf, host=e.host),
                *self._ensure_standby(vm),
            ),
            f"{e.vm} is up again on {e.host}",
        )

    def _ensure_standby(self, vm: VmState) -> list[Traced]:
        """A VM repaired by its standby gets a new one, on a host other than its own."""
        if vm.spec.action != "failover_standby_vm" or vm.standby or vm.standby_starting:
            return []
        avoid = {vm.host}
        host = next(
            (h for h, life in self.hosts.items() if life is HostLife.UP and h not in avoid), None
        )
        if host is None or vm.life is not VmLife.UP:
            self.needs_standby.add(vm.spec.name)
            return []
        self.needs_standby.discard(vm.spec.name)
        vm.standby_starting = True
        return [StartStandbyVm(vm=vm.spec.name, host=host)]

    def _on_StandbyVmUp(self, e: StandbyVmUp, now: float) -> Decision:
        vm = self.vms[e.vm]
        vm.standby_starting = False
        if self.hosts.get(e.host) is not HostLife.UP or e.host == vm.host:
            self.needs_standby.add(e.vm)
            return Decision((), f"standby of {e.vm} came up on {e.host}, which cannot keep it")
        vm.standby = e.host
        self.standby_on.setdefault(e.host, set()).add(e.vm)
        return Decision((), f"{e.vm} has a standby VM on {e.host} again")

    def _on_StandbyVmFailed(self, e: StandbyVmFailed, now: float) -> Decision:
        vm = self.vms[e.vm]
        vm.standby_starting = False
        if vm.standby == e.host:  # the booted standby died: no longer ready
            vm.standby = None
            self.standby_on.get(e.host, set()).discard(e.vm)
        self.needs_standby.add(e.vm)
        return Decision((), f"standby of {e.vm} did not start on {e.host}: {e.detail}")

    # --- host failures --------------------------------------------------------------------------

    def _on_HostFailed(self, e: HostFailed, now: float) -> Decision:
        if self.hosts[e.host] is not HostLife.UP:
            return Decision((), f"{e.host} {e.cause}; already {self.hosts[e.host]}")
        return self._fail_host(e.host, e.cause)

    def _fail_host(self, host: str, reason: str) -> Decision:
        self.hosts[host] = HostLife.FENCING
        commands: list[Traced] = [Alarm(entity=host, severity="critical", text=reason)]
        for name in sorted(self.standby_on.pop(host, ())):  # their standbys die with it
            self.vms[name].standby = None
            self.needs_standby.add(name)
        for vm in self._vms_on(host):
            if vm.life is VmLife.UP:
                self._vm_down(vm, f"host {host} failed: {reason}", reporter=None)
            else:
                vm.life, vm.isolated = VmLife.FAILED, False
        commands.append(FenceHost(host=host))
        return Decision(tuple(commands), f"host {host} is at fault ({reason}); fencing it first")

    def _on_HostFenced(self, e: HostFenced, now: float) -> Decision:
        if not e.ok:
            self.hosts[e.host] = HostLife.FENCE_FAILED
            return Decision(
                (Alarm(entity=e.host, severity="critical", text=f"fencing failed: {e.detail}"),),
                f"{e.host} could not be fenced; none of its VMs is restarted anywhere",
            )
        self.hosts[e.host] = HostLife.DOWN
        commands: list[Traced] = [StartHost(host=e.host)]
        texts = [f"{e.host} fenced; repairing it"]
        for vm in self._vms_on(e.host):
            if vm.life is not VmLife.FAILED:
                continue  # already restarted elsewhere after its own cleanup
            decision = self._isolated(vm, f"{vm.spec.name} isolated with its host")
            commands += decision.commands
            texts.append(decision.why)
        return Decision(tuple(commands), "; ".join(texts))

    def _on_HostUp(self, e: HostUp, now: float) -> Decision:
        self.hosts[e.host] = HostLife.UP
        self.recent.pop(e.host, None)
        commands: list[Traced] = [Alarm(entity=e.host, severity="cleared", text="host is up")]
        texts = [f"{e.host} is up"]
        for name in sorted(self.needs_standby):
            commands += self._ensure_standby(self.vms[name])
        for vm in self._vms_on(e.host):
            if vm.life is VmLife.FAILED and vm.isolated:
                decision = self._maybe_restart(vm, f"{vm.spec.name} was waiting for {e.host}")
                commands += decision.commands
                texts.append(decision.why)
        return Decision(tuple(commands), "; ".join(texts))

    def _vms_on(self, host: str) -> list[VmState]:
        return [self.vms[n] for n in sorted(self.by_host.get(host, ()))]

    def snapshot(self) -> dict[str, object]:
        return {
            "hosts": {h: life.value for h, life in self.hosts.items()},
            "vms": {
                n: {"host": v.host, "vnf": v.spec.vnf, "state": v.life.value, "reason": v.reason}
                for n, v in self.vms.items()
            },
        }
