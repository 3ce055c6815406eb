"""Where things run: VNFCs on VMs, VMs on hosts, with anti-affinity. Pure, from the config."""

from __future__ import annotations

from dataclasses import dataclass

from nfvha.config import Deployment
from nfvha.core.vim import VmSpec


@dataclass(frozen=True, slots=True)
class Placement:
    hosts: tuple[str, ...]
    vm_host: dict[str, str]
    vm_vnf: dict[str, str]
    vnfc_vm: dict[str, str]
    standby_host: dict[str, str]  # VM -> host of its standby VM (repair failover_standby_vm)


def standby_name(vm: str) -> str:
    return f"{vm}.standby"


def other_host(hosts: tuple[str, ...], avoid: set[str], load: dict[str, int]) -> str | None:
    """The least loaded host not in ``avoid``, or None."""
    free = [h for h in hosts if h not in avoid]
    return min(free, key=lambda h: (load.get(h, 0), hosts.index(h))) if free else None


def _preferring(
    hosts: tuple[str, ...], avoid: set[str], never: set[str], load: dict[str, int]
) -> str:
    """The least loaded host outside ``avoid``, else outside ``never`` (the configuration
    guarantees one: at least one host, two when a standby VM is wanted)."""
    chosen = other_host(hosts, avoid, load) or other_host(hosts, never, load)
    if chosen is None:
        raise ValueError("no host to place on")  # ruled out by the configuration's checks
    return chosen


def plan(deployment: Deployment) -> Placement | None:
    """None without hosts. A VNFC without ``vm`` gets a VM of its own; a VM without ``host``
    goes to the least loaded host that runs no other VM of the same VNF (anti-affinity),
    falling back to the least loaded host when every host already has one."""
    if not deployment.hosts:
        return None
    hosts = tuple(h.name for h in deployment.hosts)
    declared = {vm.name: vm.host for vm in deployment.vms}
    vnfc_vm: dict[str, str] = {}
    vm_vnf: dict[str, str] = {}
    for vnf in deployment.vnfs:
        for c in vnf.vnfcs:
            vm = c.vm or f"vm-{c.name}"
            vnfc_vm[c.name] = vm
            vm_vnf.setdefault(vm, vnf.name)
            declared.setdefault(vm, None)
    load = dict.fromkeys(hosts, 0)
    vm_host: dict[str, str] = {}
    hosts_of: dict[str, set[str]] = {}  # VNF -> hosts its VMs are on
    for vm, host in declared.items():
        if host is not None:
            vm_host[vm] = host
            load[host] += 1
            hosts_of.setdefault(vm_vnf.get(vm, ""), set()).add(host)
    for vm, declared_host in declared.items():
        if declared_host is None:
            siblings = hosts_of.setdefault(vm_vnf.get(vm, ""), set())
            vm_host[vm] = _preferring(hosts, siblings, set(), load)
            load[vm_host[vm]] += 1
            siblings.add(vm_host[vm])
    wants_standby = {v.name for v in deployment.vnfs if v.repair.action == "failover_standby_vm"}
    standby_host: dict[str, str] = {}
    for vm, host in vm_host.items():
        if vm_vnf.get(vm) in wants_standby:
            avoid = {host} | hosts_of.get(vm_vnf[vm], set())
            standby_host[vm] = _preferring(hosts, avoid, {host}, load)
            load[standby_host[vm]] += 1
    return Placement(
        hosts, vm_host, {vm: vm_vnf.get(vm, "") for vm in vm_host}, vnfc_vm, standby_host
    )


def vm_specs(deployment: Deployment, placement: Placement) -> list[VmSpec]:
    """What the VIM is told about each VM: where it runs, its VNF and its repair policy."""
    vnfs = {v.name: v for v in deployment.vnfs}
    return [
        VmSpec(
            vm,
            host,
            placement.vm_vnf[vm],
            vnfs[placement.vm_vnf[vm]].repair.mode,
            vnfs[placement.vm_vnf[vm]].repair.action,
            placement.standby_host.get(vm),
        )
        for vm, host in placement.vm_host.items()
    ]
