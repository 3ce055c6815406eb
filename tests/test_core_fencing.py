"""The agent's fence gate (core/fencing.py): each rule, and a replayed command with an old token."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nfvha.core.fencing import Admitted, FenceGate, Refused


def test_rule_1_a_replayed_command_with_an_old_token_is_refused() -> None:
    gate = FenceGate()
    assert gate.admit("vim", 7) == Admitted("vim", 7, raised=True)  # the old leader's command
    assert gate.admit("vim", 12) == Admitted("vim", 12, raised=True)  # the new leader's
    replayed = gate.admit("vim", 7)
    assert isinstance(replayed, Refused)
    assert replayed.reason == "stale vim leader: token 7 is older than 12"
    assert gate.highest() == {"vim": 12}  # a refusal changes nothing


def test_rule_2_the_current_term_is_admitted_again_and_a_newer_one_raises_the_gate() -> None:
    gate = FenceGate()
    assert gate.admit("vnfm", 3) == Admitted("vnfm", 3, raised=True)
    assert gate.admit("vnfm", 3) == Admitted("vnfm", 3, raised=False)
    assert gate.admit("vnfm", 4) == Admitted("vnfm", 4, raised=True)
    assert isinstance(gate.admit("vnfm", 3), Refused)


def test_rule_3_kinds_are_independent() -> None:
    gate = FenceGate()
    gate.admit("vim", 100)
    assert gate.admit("vnfm", 5) == Admitted("vnfm", 5, raised=True)
    assert gate.admit("ha:firewall", 1) == Admitted("ha:firewall", 1, raised=True)
    assert isinstance(gate.admit("vim", 99), Refused)


def test_rule_4_a_missing_or_malformed_token_is_refused() -> None:
    gate = FenceGate()
    for bad in (0, -1, True):
        verdict = gate.admit("vim", bad)
        assert isinstance(verdict, Refused)
        assert "no valid fencing token" in verdict.reason
    assert gate.highest() == {}


def test_a_restored_gate_refuses_what_it_refused_before_its_restart() -> None:
    before = FenceGate()
    before.admit("vim", 9)
    after = FenceGate()
    after.restore(before.highest())
    assert isinstance(after.admit("vim", 8), Refused)
    after.restore({"vim": 2})  # never lowers it
    assert isinstance(after.admit("vim", 8), Refused)


@given(st.lists(st.tuples(st.sampled_from(["vim", "vnfm"]), st.integers(1, 20)), max_size=40))
def test_admitted_tokens_never_go_back_per_kind(commands: list[tuple[str, int]]) -> None:
    gate = FenceGate()
    last: dict[str, int] = {}
    for kind, token in commands:
        verdict = gate.admit(kind, token)
        if isinstance(verdict, Admitted):
            assert token >= last.get(kind, 0)
            last[kind] = token
        else:
            assert token < last[kind]
