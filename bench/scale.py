"""Scale benchmark of the simulator: generated data centres up to 1,000 hosts, 10,000 VMs and
50,000 VNFCs (25,000 2n VNFs), a simulated day of failures at MTBFs of hours.

Reports simulated events per second of wall time, the cost per event as the deployment grows
(the managers must not scan all entities per event: flat is the goal), and peak memory. Writes
bench/results/scale.json. Run with `make bench`, or `python bench/scale.py --quick`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

import provenance
from run import machine

from nfvha.config import Deployment
from nfvha.sim.faults import poisson
from nfvha.sim.invariants import Invariants, Violation
from nfvha.sim.world import Simulation

RESULTS = Path(__file__).parent / "results"
HOUR = 3600.0
MTBF_H = {"vnfc-crash": 10.0, "vnfc-hang": 50.0, "vm-crash": 50.0, "host-crash": 500.0}
DAY_GOAL_S = 60.0


def generate(vnfcs: int) -> Deployment:
    """``vnfcs`` VNFCs in 2n pairs, 5 per VM, 10 VMs per host; the two VNFCs of a VNF on VMs
    of different hosts (anti-affinity)."""
    vms = vnfcs // 5
    hosts = max(2, vms // 10)
    vm_host = {f"vm-{i}": f"host-{i % hosts}" for i in range(vms)}
    vnfs = []
    for k in range(vnfcs // 2):
        a, b = (2 * k) % vms, (2 * k + 1) % vms  # consecutive VMs: different hosts
        vnfs.append(
            {
                "name": f"vnf-{k}",
                "redundancy": {"model": "2n"},
                "service": {"name": f"svc-{k}", "address": f"10.{k // 65000}.0.1:{1 + k % 65000}"},
                "vnfcs": [
                    {"name": f"c-{k}-a", "command": "x", "vm": f"vm-{a}"},
                    {"name": f"c-{k}-b", "command": "x", "vm": f"vm-{b}"},
                ],
            }
        )
    return Deployment.model_validate(
        {
            "name": f"scale-{vnfcs}",
            "hosts": [{"name": f"host-{h}"} for h in range(hosts)],
            "vms": [{"name": vm, "host": host} for vm, host in vm_host.items()],
            "vnfs": vnfs,
        }
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(vnfcs: int, hours: float, seed: int, invariants: bool) -> dict:
    t0 = time.perf_counter()
    deployment = generate(vnfcs)
    built = time.perf_counter()
    entities_probe = Simulation(deployment, seed, record=False, checkpoint_every=None)
    entities = {
        "vnfc": list(entities_probe.vnfcs),
        "vm": list(entities_probe.vms),
        "host": list(entities_probe.hosts),
        "vnf": [],
    }
    del entities_probe
    mtbf_s = {kind: h * HOUR for kind, h in MTBF_H.items()}
    warmup = 5.0  # every VNF started and steady before the first fault
    faults = [
        f.__class__(f.at + warmup, f.kind, f.target)
        for f in poisson(random.Random(seed), entities, hours * HOUR, mtbf_s)
    ]
    observers = (Invariants(),) if invariants else ()
    sim = Simulation(
        deployment, seed, faults, record=False, checkpoint_every=None, observers=observers
    )
    start = time.perf_counter()
    sim.run(warmup)
    boot_events = sim.events
    boot_wall = time.perf_counter() - start
    violation = None
    try:
        sim.run(warmup + hours * HOUR + 60.0)
        if invariants:
            observers[0].check_end(sim)
    except Violation as exc:
        violation = str(exc)
    wall = time.perf_counter() - start
    events = sim.events - boot_events
    fault_wall = wall - boot_wall
    return {
        "vnfcs": vnfcs,
        "vms": len(sim.vms),
        "hosts": len(sim.hosts),
        "vnfs": len(sim.specs),
        "simulated_hours": hours,
        "faults": len(faults),
        "invariants": invariants,
        "config_build_s": round(built - t0, 2),
        "boot_events": boot_events,
        "boot_wall_s": round(boot_wall, 2),
        "events": events,
        "wall_s": round(fault_wall, 2),
        "events_per_s": round(events / fault_wall) if fault_wall else None,
        "us_per_event": round(fault_wall / events * 1e6, 2) if events else None,
        "peak_rss_mib": round(peak_rss_mib()),
        "violation": violation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    prov = provenance.provenance()
    sizes = [1000, 5000] if args.quick else [1000, 5000, 10000, 50000]
    runs = []
    for vnfcs in sizes:  # cost per event: one simulated hour at each size
        print(f"{vnfcs} VNFCs, 1 h ...", file=sys.stderr, flush=True)
        runs.append(run(vnfcs, 1.0, seed=1, invariants=True))
    day = None
    if not args.quick:
        print("50000 VNFCs, 24 h ...", file=sys.stderr, flush=True)
        day = run(50000, 24.0, seed=2, invariants=False)
        day["goal"] = f"a simulated day in under {DAY_GOAL_S:g} s of wall time"
        day["met"] = day["wall_s"] < DAY_GOAL_S
    results = {
        "provenance": prov,
        "machine": machine(),
        "mtbf_h": MTBF_H,
        "growth": runs,
        "day": day,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
