"""Reading the trace: finding records, the chains a scenario expects, and never two actives
(replayed from role moves)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nfvha.core.placement import plan
from nfvha.lab import twin
from nfvha.runtime.trace import Record


def matches(rec: Record, **crit: Any) -> bool:
    """``kind``, ``name``, ``src``, ``dst`` compare to the record; ``why_has`` is a substring
    of the why; any other key compares to ``data[key]``."""
    for key, want in crit.items():
        if key in ("kind", "name", "src", "dst"):
            if rec.get(key) != want:
                return False
        elif key == "why_has":
            if want not in rec.get("why", ""):
                return False
        elif rec.get("data", {}).get(key) != want:
            return False
    return True


def find(records: list[Record], start: int = 0, **crit: Any) -> int | None:
    for i in range(start, len(records)):
        if matches(records[i], **crit):
            return i
    return None


def index(records: list[Record], start: int = 0, **crit: Any) -> int:
    """Index of the first record at or after ``start`` matching ``crit``; fails the test if none."""
    i = find(records, start, **crit)
    if i is None:
        raise AssertionError(
            f"no trace record matching {crit} from index {start}:\n" + dump_records(records)
        )
    return i


def select(records: Iterable[Record], **crit: Any) -> list[Record]:
    return [r for r in records if matches(r, **crit)]


def dump_records(records: list[Record], limit: int = 400) -> str:
    lines = []
    for i, r in enumerate(records[-limit:]):
        if r["name"] in ("HealthCheckPassed", "WatchHealth"):
            continue
        lines.append(
            f"  [{i}] {r['kind']:<7} {r['name']:<20} {r.get('src', ''):>12} -> "
            f"{r.get('dst', ''):<12} {r.get('data', {})} {r.get('why', '')}"
        )
    return "\n".join(lines)


def match_steps(
    records: list[Record], steps: Iterable[Any], bindings: dict[str, str]
) -> list[int] | str:
    """An independent check of a scenario chain: the indices, in order, of records matching each
    step (name, kind, src, dst, data; ``$x`` resolved from ``bindings``); or a description of
    the first step that has no match after the previous one."""

    def bind(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            if value[1:] not in bindings:
                raise AssertionError(f"placeholder {value} is not bound: {bindings}")
            return bindings[value[1:]]
        return value

    found, start = [], 0
    for step in steps:
        crit: dict[str, Any] = {"name": step.name}
        for key in ("kind", "src", "dst"):
            if getattr(step, key):
                crit[key] = bind(getattr(step, key))
        crit.update({k: bind(v) for k, v in step.data.items()})
        i = find(records, start, **crit)
        if i is None:
            return f"no record matching {crit} after index {start}"
        found.append(i)
        start = i + 1
    return found


def max_simultaneous_actives(records: list[Record]) -> int:
    """Replay role moves: a VNFC holds the active role from AssignRole(active) until it is
    assigned another role or its CleanupDone(ok=True) (rule 2: a failed active keeps the role
    until isolated). Returns the largest number of holders at any time."""
    holders: set[str] = set()
    most = 0
    for r in records:
        if r["kind"] == "command" and r["name"] == "AssignRole":
            if r["data"]["role"] == "active":
                holders.add(r["dst"])
            else:
                holders.discard(r["dst"])
        elif r["kind"] == "event" and r["name"] == "CleanupDone" and r["data"]["ok"]:
            holders.discard(r["src"])
        most = max(most, len(holders))
    return most


def max_simultaneous_live_actives(
    records: list[Record],
    vnfc_vm: dict[str, str] | None = None,
    vm_host: dict[str, str] | None = None,
) -> int:
    """Like ``max_simultaneous_actives``, for VNFCs that may live in VMs. A VNFC holds the active
    role from AssignRole(active) until it is given another role or it is gone for real: its
    process exited (ProcessExited), its cleanup is confirmed (CleanupDone ok), its VM is
    confirmed cleaned up (VmCleanedUp ok) or its host fenced (HostFenced ok). The VIM's word that
    a VM failed (VmLost) does *not* end it: a hung VM's VNFC still holds its address."""
    vnfc_vm = dict(vnfc_vm or {})
    vm_host = dict(vm_host or {})
    holders: set[str] = set()
    most = 0
    for r in records:
        kind, name, data = r["kind"], r["name"], r.get("data", {})
        if kind == "command" and name == "AssignRole":
            if data["role"] == "active":
                holders.add(r["dst"])
            else:
                holders.discard(r["dst"])
        elif kind == "command" and name == "StartVm":
            vm_host[data["vm"]] = data["host"]
        elif kind == "event" and (
            name == "ProcessExited" or (name == "CleanupDone" and data.get("ok"))
        ):
            holders.discard(r["src"])
        elif kind == "event" and name == "VmCleanedUp" and data.get("ok"):
            holders -= {c for c in holders if vnfc_vm.get(c) == data["vm"]}
        elif kind == "event" and name == "HostFenced" and data.get("ok"):
            holders -= {c for c in holders if vm_host.get(vnfc_vm.get(c, "")) == data["host"]}
        most = max(most, len(holders))
    return most


def assert_twin_agrees(deployment: Any, records: list[Record], failed: str, context: str) -> None:
    """The simulator, given the same faults at the same moments on the same roles, says the
    same things on every channel, step for step: it is the system that runs."""
    placement = plan(deployment)
    vm_of = dict(placement.vnfc_vm) if placement else {}
    host_of = dict(placement.vm_host) if placement else {}
    real = twin.chains(records, twin.roles(deployment, failed, vm_of, host_of))
    sim, sim_failed = twin.simulate_alongside(deployment, records)
    simulated = twin.chains(sim.records, twin.sim_roles(sim, sim_failed))
    assert real, context  # so that agreeing says something
    differ = twin.differences(real, simulated)
    assert differ == [], "\n".join(differ) + f"\nsimulated:\n{sim.trace_text()}{context}"
