"""Restart intensity: escalate exactly on the (max+1)-th failure inside the probation window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nfvha.core.escalation import RestartIntensity


def test_escalates_on_the_failure_after_the_maximum() -> None:
    r = RestartIntensity(max_restarts=3, probation_s=10)
    assert [r.record(t) for t in (0, 1, 2, 3)] == [False, False, False, True]


def test_window_slides() -> None:
    r = RestartIntensity(max_restarts=1, probation_s=10)
    assert not r.record(0)
    assert not r.record(10.5)  # the first one is outside the window
    assert r.record(11)


def test_zero_maximum_escalates_at_once() -> None:
    assert RestartIntensity(max_restarts=0, probation_s=1).record(0)


@given(
    st.integers(0, 5),
    st.floats(0.1, 100),
    st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=30),
)
def test_matches_a_count_over_the_window(
    max_restarts: int, probation: float, gaps: list[float]
) -> None:
    r = RestartIntensity(max_restarts, probation)
    times: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        times.append(now)
        in_window = [t for t in times if now - t <= probation]
        assert r.record(now) == (len(in_window) > max_restarts)
