"""Read the trace (and the consumer's view) into a timeline and a verdict a person can follow."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nfvha.runtime.trace import Record

SUB_SECOND_MS = 1000.0
# SAL thresholds (ETSI NFV-REL 001), upper bounds of each band, for the end-to-end service.
SAL_MS = {"SAL1": 6000.0, "SAL2": 15000.0, "SAL3": 25000.0}

PHASES = {
    "fault": "failure",
    "ProcessExited": "detection",
    "HealthCheckFailed": "detection",
    "ErrorReported": "detection",
    "StartFailed": "detection",
    "Cleanup": "isolation",
    "CleanupDone": "isolation",
    "AssignRole": "failover",
    "RoleConfirmed": "recovery",
    "StartVnfc": "repair",
    "ProcessStarted": "repair",
    "ComponentRegistered": "repair",
    "ReportError": "error report",
    "ClearError": "error clear",
    "Escalate": "escalation",
    "Degraded": "redundancy",
    "Redundant": "redundancy",
    "VmFailed": "detection",
    "HostFailed": "detection",
    "NotifyVmFailed": "notification",
    "VmLost": "isolation",
    "RepairConsent": "consent",
    "VmErrorReport": "escalation",
    "CleanupVm": "isolation",
    "VmCleanedUp": "isolation",
    "FenceHost": "fencing",
    "HostFenced": "fencing",
    "StartHost": "repair",
    "HostUp": "repair",
    "StartVm": "repair",
    "VmUp": "repair",
    "NotifyVmRepaired": "repair",
    "VmRestored": "repair",
    "Alarm": "alarm",
    "ReleaseAddress": "isolation",
    "AddressReleased": "isolation",
    "ClaimAddress": "failover",
    "AddressClaimed": "failover",
    "PoolMember": "pool",
    "PoolNotConfirmed": "pool",
}

QUIET = {"HealthCheckPassed", "WatchHealth", "SetTimer", "TimerExpired"}
SUBJECTS = ("vnfc", "vm", "host", "entity")
NOTES_SHOWN = {
    "MessageRefused",
    "Degraded",
    "Redundant",
    "CheckpointLoaded",
    "PoolNotConfirmed",
    "AddressFailed",
}


def describe(rec: Record) -> str:
    data = rec.get("data", {})
    name = rec["name"]
    if rec["kind"] == "fault":
        return f"operator injects '{name}' into {rec.get('dst')} (pid {data.get('pid')})"
    if name == "AssignRole":
        return f"assign {data['role']} to {data['vnfc']} (epoch {data['epoch']})"
    if name == "RoleConfirmed":
        return f"{data['vnfc']} confirms {data['role']}"
    if name in ("AddressClaimed", "AddressReleased"):  # the kernel's side: where, and if new
        same = "" if data.get("changed", True) else " (no change)"
        return f"{name} {data.get('vip')} on {data.get('node')}{same}"
    if name == "PoolMember":
        return f"{name} {data.get('server')} {data.get('state')} on {data.get('lb')}"
    details = ", ".join(
        f"{k}={v}" for k, v in data.items() if k not in SUBJECTS and v not in ("", None)
    )
    subject = next((data[k] for k in SUBJECTS if k in data), rec.get("src", ""))
    return f"{name} {subject}" + (f" ({details})" if details else "")


def timeline(
    records: Iterable[Record],
    origin_ns: int,
    consumer: tuple[int, int] | None = None,
    longest: tuple[int, int] | None = None,
) -> list[dict]:
    """Rows of (ms from origin, phase, from, to, what, why), with the consumer's view merged in:
    ``consumer`` is the silence at the failover (its last good answer, the first after it), in
    ns; ``longest``, if another silence in the fault's window was longer, that one too."""
    rows = []
    for rec in records:
        if rec["name"] in QUIET or (rec["kind"] == "note" and rec["name"] not in NOTES_SHOWN):
            continue
        rows.append(
            {
                "t_ns": rec["t"],
                "ms": (rec["t"] - origin_ns) / 1e6,
                "phase": PHASES.get(rec["name"] if rec["kind"] != "fault" else "fault", ""),
                "src": rec.get("src", ""),
                "dst": rec.get("dst", ""),
                "what": describe(rec),
                "why": rec.get("why", ""),
            }
        )
    if consumer and consumer[0]:
        rows += _silence_rows(consumer, origin_ns, "the failover")
    if longest and longest[0] and tuple(longest) != tuple(consumer or ()):
        rows += _silence_rows(longest, origin_ns, "the longest silence (the outage)")
    rows.sort(key=lambda r: r["t_ns"])
    return rows


def _silence_rows(gap: tuple[int, int], origin_ns: int, what: str) -> list[dict]:
    """The consumer's two answers around a silence, labelled by where they fall: a reply that
    arrives after the fault is said to, so the label never claims a time it does not have."""
    begin, end = gap
    after = (begin - origin_ns) / 1e6
    where = "before the fault" if after <= 0 else f"{after:.1f} ms after the fault"
    return [
        _consumer_row(begin, origin_ns, f"last good answer before {what} ({where})"),
        _consumer_row(end, origin_ns, f"first good answer after it: {(end - begin) / 1e6:.1f} ms"),
    ]


def _consumer_row(t_ns: int, origin_ns: int, what: str) -> dict:
    return {
        "t_ns": t_ns,
        "ms": (t_ns - origin_ns) / 1e6,
        "phase": "consumer",
        "src": "consumer",
        "dst": "",
        "what": what,
        "why": "",
    }


def verdict(outage_ms: float, lost: int, interleaved: bool) -> dict[str, Any]:
    sal = next((name for name, limit in SAL_MS.items() if outage_ms <= limit), "beyond SAL3")
    return {
        "outage_ms": round(outage_ms, 3),
        "lost_acknowledged": lost,
        "two_actives_seen": interleaved,
        "sub_second": outage_ms < SUB_SECOND_MS,
        "sal": sal,
        "pass": outage_ms < SUB_SECOND_MS and lost == 0 and not interleaved,
    }
