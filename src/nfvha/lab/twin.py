"""The simulated twin of a real run: the same deployment and the same faults, at the same
moments, on the same roles, through the simulator — and the message chains of both, so that
the simulator can be shown to be the system that runs.

A chain is what one manager says to another (or to the operator), in order: one list per
channel (source, destination). Within a channel the order is causal and must match step for
step; across channels it is timing (a VNFC's exit seen by pidfd and its VM's exit seen by the
host agent race in a real run), so channels are compared each on its own. Entity names are
replaced by their role at the first fault (``$failed``, ``$other``, ``$vm``, ``$host``...),
since the active of a real run and of its twin may be different VNFCs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nfvha.config import Deployment
from nfvha.faults import TARGET_OF, canonical
from nfvha.sim.faults import Fault
from nfvha.sim.world import Simulation

Record = dict[str, Any]
Chains = dict[tuple[str, str], list[tuple[str, str]]]
DATA_PATH = {"CheckpointRefused"}  # per write, not a decision: not part of the chains


def simulate_alongside(
    deployment: Deployment, records: list[Record], seed: int = 0
) -> tuple[Simulation, str]:
    """Replay a real run's faults in the simulator: each at the same time after the managers
    started, on the entity that plays the same role then (the serving active, its VM, its
    host), and run on to the real run's last record. Returns the simulation and the VNFC that
    was the active at its first fault."""
    start = next(r["t"] for r in records if r["name"] == "ManagerStarted")
    sim = Simulation(deployment, seed)
    first = ""
    for rec in (r for r in records if r["kind"] == "fault"):
        at = (rec["t"] - start) / 1e9
        sim.run(at)
        kind = canonical(rec["name"])
        first = first or sim_active(sim, deployment.vnfs[0].name)
        sim.inject(Fault(at, kind, _target(sim, deployment, kind)))
    sim.run((records[-1]["t"] - start) / 1e9)
    return sim, first


def sim_roles(sim: Simulation, failed: str) -> dict[str, str]:
    vm_of = dict(sim.placement.vnfc_vm) if sim.placement else {}
    return roles(sim.deployment, failed, vm_of, {vm: s.host for vm, s in sim.vms.items()})


def _target(sim: Simulation, deployment: Deployment, kind: str) -> str:
    vnf = deployment.vnfs[0].name
    active = sim_active(sim, vnf)
    if TARGET_OF[kind] == "vnfc":
        return active
    vm = sim.placement.vnfc_vm[active] if sim.placement else ""
    return vm if TARGET_OF[kind] == "vm" else sim.vms[vm].host


def sim_active(sim: Simulation, vnf: str) -> str:
    return next(c.name for c in sim.ha[vnf].vnfcs.values() if c.role.value == "active")


def roles(
    deployment: Deployment, failed: str, vm_of: Mapping[str, str], host_of: Mapping[str, str]
) -> dict[str, str]:
    """Entity name -> its role, seen from the VNFC hit first."""
    vnf = next(v for v in deployment.vnfs if failed in {c.name for c in v.vnfcs})
    names = {c.name: "$failed" if c.name == failed else "$other" for c in vnf.vnfcs}
    failed_vm = vm_of.get(failed)
    for c in vnf.vnfcs:
        vm = vm_of.get(c.name)
        if vm is not None:
            mine = vm == failed_vm
            names[vm] = "$vm" if mine else "$other-vm"
            names[f"{vm}.standby"] = "$vm.standby" if mine else "$other-vm.standby"
    failed_host = host_of.get(failed_vm or "")
    for host in set(host_of.values()):
        names.setdefault(host, "$host" if host == failed_host else "$other-host")
    return names


def chains(records: Iterable[Record], names: Mapping[str, str]) -> Chains:
    """The messages from the first fault on, per channel, entities named by role."""
    out: Chains = {}
    faulted = False
    for rec in records:
        faulted = faulted or rec["kind"] == "fault"
        if not faulted or rec["kind"] != "message" or rec["name"] in DATA_PATH:
            continue
        subject = _subject(rec)
        out.setdefault((rec["src"], rec["dst"]), []).append(
            (rec["name"], names.get(subject, subject))
        )
    return out


def _subject(rec: Record) -> str:
    data = rec.get("data") or {}
    for key in ("vnfc", "vm", "host", "entity"):
        if key in data:
            return str(data[key])
    return str(rec.get("dst", ""))


def differences(real: Chains, simulated: Chains) -> list[str]:
    """One line per channel whose chains differ; empty when they match step for step."""
    lines = []
    for channel in sorted(set(real) | set(simulated)):
        a, b = real.get(channel, []), simulated.get(channel, [])
        if a != b:
            lines.append(f"{channel[0]} -> {channel[1]}: real {a} / simulated {b}")
    return lines
