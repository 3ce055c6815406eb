"""The simulator's latencies from a mapping or from a recorded trace."""

from __future__ import annotations

import pytest

from nfvha.config import ConfigError
from nfvha.sim.latency import from_mapping, from_trace
from nfvha.sim.world import Latencies


def rec(t_ms: float, kind: str, name: str, src: str, dst: str) -> dict:
    return {"t": int(t_ms * 1e6), "kind": kind, "name": name, "src": src, "dst": dst}


def test_medians_of_the_intervals_in_a_trace() -> None:
    trace = [
        rec(0, "fault", "vnfc-crash", "operator", "a"),
        rec(3, "event", "ProcessExited", "a", "ha:x"),
        rec(3, "command", "Cleanup", "ha:x", "a"),
        rec(3.5, "event", "CleanupDone", "a", "ha:x"),
        rec(10, "command", "StartVnfc", "ha:x", "a"),
        rec(12, "event", "ProcessStarted", "a", "ha:x"),
        rec(150, "event", "ComponentRegistered", "a", "ha:x"),
        rec(150, "command", "AssignRole", "ha:x", "b"),  # another subject: not paired
        rec(151, "command", "AssignRole", "ha:x", "a"),
        rec(152, "event", "RoleConfirmed", "a", "ha:x"),
    ]
    lat, counts = from_trace(trace)
    assert lat.exit_seen == pytest.approx(0.003)
    assert lat.cleanup == pytest.approx(0.0005)
    assert lat.fork == pytest.approx(0.002)
    assert lat.spawn == pytest.approx(0.138)
    assert lat.assign == pytest.approx(0.001)
    assert lat.vm_boot == Latencies().vm_boot and counts["vm_boot"] == 0  # not seen: default


def test_mapping_is_checked() -> None:
    assert from_mapping({"spawn": 0.5}, "f").spawn == 0.5
    with pytest.raises(ConfigError, match=r"f: bogus: Extra inputs.*\nf: known latencies: fork,"):
        from_mapping({"bogus": 1}, "f")
    with pytest.raises(ConfigError, match="f: spawn: Input should be greater than or equal to 0"):
        from_mapping({"spawn": -1}, "f")
    with pytest.raises(ConfigError, match="f: fork: Input should be a valid number"):
        from_mapping({"fork": True}, "f")  # seconds, not a flag or a string
    with pytest.raises(ConfigError, match=r"f: \(top level\): Input should be a valid dict"):
        from_mapping([1, 2], "f")
