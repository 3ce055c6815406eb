"""Latencies for the simulator: from a YAML/JSON mapping, or measured from a recorded trace
(``nfvha run --trace``, ``nfvha scenario run --report``): the median of each interval below,
as the runtime recorded it. Intervals the trace does not show keep their defaults."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, create_model

from nfvha import faults
from nfvha.config import ConfigError, Strict, invalid, read_yaml
from nfvha.runtime.trace import Record
from nfvha.sim.world import Latencies

# field: (command or fault that starts it, event that ends it), matched per subject
FROM_TRACE = {
    "fork": ("StartVnfc", "ProcessStarted"),
    "spawn": ("ProcessStarted", "ComponentRegistered"),
    "exit_seen": ("vnfc-crash", "ProcessExited"),
    "cleanup": ("Cleanup", "CleanupDone"),
    "assign": ("AssignRole", "RoleConfirmed"),
    "vm_boot": ("StartVm", "VmUp"),
    "host_boot": ("StartHost", "HostUp"),
    "fence": ("FenceHost", "HostFenced"),
}


Seconds = Annotated[float, Field(ge=0, strict=True)]

# A latency file: any of Latencies's fields, in seconds; made from the dataclass, so the two
# cannot drift apart.
_FIELDS: dict[str, Any] = {f.name: (Seconds | None, None) for f in dataclasses.fields(Latencies)}
LatencyFile = create_model("LatencyFile", __base__=Strict, **_FIELDS)


def from_mapping(raw: Any, where: Path | str) -> Latencies:
    """Latencies with the mapping's values; a ConfigError names the source, key and problem."""
    try:
        given = LatencyFile.model_validate(raw).model_dump(exclude_none=True)
    except ValidationError as exc:
        error = invalid(where, exc)
        if any(e["type"] == "extra_forbidden" for e in exc.errors()):
            known = ", ".join(f.name for f in dataclasses.fields(Latencies))
            raise ConfigError(f"{error}\n{where}: known latencies: {known}") from None
        raise error from None
    return dataclasses.replace(Latencies(), **given)


def load(path: Path) -> Latencies:
    return from_mapping(read_yaml(path), path)


def measured(records: Iterable[Record]) -> dict[str, list[float]]:
    """Every observed interval, in seconds, per latency field."""
    ends = {end: field for field, (_, end) in FROM_TRACE.items()}
    starts = {start: field for field, (start, _) in FROM_TRACE.items()}
    pending: dict[tuple[str, str | None], int] = {}  # (field, subject) -> start
    samples: dict[str, list[float]] = {f: [] for f in FROM_TRACE}
    for rec in records:
        name, kind = rec["name"], rec["kind"]
        if kind == "fault":
            name = faults.canonical(name)  # a trace of release 0.1 names its faults the old way
        subject = rec.get("dst") if kind in ("command", "fault") else rec.get("src")
        if kind == "event" and name in ends:
            began = pending.pop((ends[name], subject), None)
            if began is not None:
                samples[ends[name]].append((rec["t"] - began) / 1e9)
        if kind in ("command", "fault", "event") and name in starts:
            pending[(starts[name], subject)] = rec["t"]
    return samples


def from_trace(records: Iterable[Record]) -> tuple[Latencies, dict[str, int]]:
    """Latencies with the medians seen in the trace, and how many samples each had."""
    samples = measured(records)
    found = {f: statistics.median(v) for f, v in samples.items() if v}
    return dataclasses.replace(Latencies(), **found), {f: len(v) for f, v in samples.items()}
