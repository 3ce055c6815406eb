"""The record diff and epoch reading of runtime/recorded_state.py (pure parts); the writer
against a real etcd is in tests/integration/test_recorded_state.py."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nfvha.runtime.recorded_state import changes, epochs

records = st.dictionaries(
    st.sampled_from(["vnfs/a", "vnfs/b", "hosts/h1", "vms/v1"]),
    st.fixed_dictionaries({"epoch": st.integers(0, 5), "state": st.sampled_from(["up", "down"])}),
)


def applied(written: dict[str, Any], todo: dict[str, Any]) -> dict[str, Any]:
    out = {**written, **{k: v for k, v in todo.items() if v is not None}}
    return {k: v for k, v in out.items() if todo.get(k, 0) is not None}


@given(records, records)
def test_writing_the_changes_brings_the_records_to_now_and_nothing_more(written, now) -> None:
    todo = changes(written, now)
    assert applied(written, todo) == now
    assert all(written.get(k) != v for k, v in todo.items())  # nothing rewritten unchanged
    assert changes(now, now) == {}


def test_epochs_are_read_from_vnf_records_only_and_only_when_whole_numbers() -> None:
    got = epochs({"vnfs/a": {"epoch": 4}, "vnfs/b": {"epoch": "7"}, "hosts/h": {"epoch": 9}})
    assert got == {"a": 4}
