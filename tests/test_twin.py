"""The twin comparison: chains per channel, entities by role, and a difference is reported."""

from __future__ import annotations

from nfvha.lab import twin


def rec(kind: str, name: str, src: str = "", dst: str = "", **data: str) -> dict:
    return {"t": 0, "kind": kind, "name": name, "src": src, "dst": dst, "data": data}


REAL = [
    rec("message", "ReportError", "ha:x", "vnfm", vnfc="a"),  # before the fault: not counted
    rec("fault", "vnfc-crash", "operator", "a"),
    rec("message", "ReportError", "ha:x", "vnfm", vnfc="a"),
    rec("message", "Alarm", "vim", "operator", entity="vm-a"),
    rec("message", "CheckpointRefused", "ha:x", "a"),  # data path: not a decision
    rec("message", "ClearError", "ha:x", "vnfm", vnfc="b"),
]


def test_chains_are_per_channel_by_role_from_the_fault_on() -> None:
    names = {"a": "$failed", "b": "$other", "vm-a": "$vm"}
    assert twin.chains(REAL, names) == {
        ("ha:x", "vnfm"): [("ReportError", "$failed"), ("ClearError", "$other")],
        ("vim", "operator"): [("Alarm", "$vm")],
    }


def test_another_order_across_channels_agrees_within_a_channel_differs() -> None:
    names = {"a": "$failed", "b": "$other", "vm-a": "$vm"}
    real = twin.chains(REAL, names)
    swapped_channels = [REAL[1], REAL[3], REAL[2], REAL[5]]
    assert twin.differences(real, twin.chains(swapped_channels, names)) == []
    swapped_in_channel = [REAL[1], REAL[5], REAL[3], REAL[2]]
    assert twin.differences(real, twin.chains(swapped_in_channel, names))
    assert twin.differences(real, twin.chains(REAL[:3], names))  # a missing message
