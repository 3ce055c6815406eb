"""Where things run: VNFCs on VMs, VMs on hosts, with anti-affinity. Pure, from the config."""

from __future__ import annotations

from dataclasses import dataclass

from nfvha.config import Deployment


@dataclass(frozen=True, slots=True)
class Placement:
    hosts: tuple[str, ...]
    vm_host: dict[str, str]
    vm_vnf: dict[str, str]
    vnfc_vm: dict[str, str]


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
    for vm, host in declared.items():
        if host is not None:
            vm_host[vm] = host
            load[host] += 1
    for vm, host in declared.items():
        if host is None:
            siblings = {vm_host[v] for v in vm_host if vm_vnf.get(v) == vm_vnf.get(vm)}
            free = [h for h in hosts if h not in siblings] or list(hosts)
            vm_host[vm] = min(free, key=lambda h: (load[h], hosts.index(h)))
            load[vm_host[vm]] += 1
    return Placement(hosts, vm_host, {vm: vm_vnf.get(vm, "") for vm in vm_host}, vnfc_vm)
