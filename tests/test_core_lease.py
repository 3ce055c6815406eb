"""A leader's belief in its lease (core/lease.py): each rule."""

from __future__ import annotations

import pytest

from nfvha.core.lease import LeaseTiming, Tenure, TimingError


def test_rule_1_held_until_counts_from_the_send_and_never_shrinks() -> None:
    tenure = Tenure(LeaseTiming(2, 0.5, 0.75))
    tenure.won(token=41, sent_at=10.0)
    assert tenure.held_until == 12.0
    tenure.renewed(sent_at=10.6)
    assert tenure.held_until == 12.6
    tenure.renewed(sent_at=10.2)  # a late reply to an earlier renewal
    assert tenure.held_until == 12.6
    assert tenure.leads(12.5) and not tenure.leads(12.6)


def test_rule_2_and_5_a_failed_renewal_demotes_at_once_and_is_reported_once() -> None:
    tenure = Tenure(LeaseTiming(2, 0.5, 0.75))
    tenure.won(token=7, sent_at=0.0)
    assert tenure.lost("lease renewal failed: no quorum") == (
        "demoted (token 7): lease renewal failed: no quorum"
    )
    assert not tenure.leads(0.1) and tenure.token is None
    assert tenure.lost("again") is None
    tenure.renewed(sent_at=0.2)  # a renewal answered after the demotion does not bring it back
    assert not tenure.leads(0.3)


def test_rule_3_held_until_passing_demotes() -> None:
    tenure = Tenure(LeaseTiming(1, 0.25, 0.375))
    tenure.won(token=3, sent_at=5.0)
    assert tenure.expire(5.9) is None
    why = tenure.expire(6.0)
    assert why is not None and why.startswith("demoted (token 3): lease held until 6.000 passed")
    assert tenure.expire(7.0) is None


def test_rule_4_a_renewal_attempt_ends_before_held_until() -> None:
    timing = LeaseTiming(2, 0.5, 0.75)
    tenure = Tenure(timing)
    tenure.won(token=1, sent_at=0.0)
    # The worst case: the grant's reply came retry_s after its send, the next renewal starts
    # renew_s later and fails at its deadline: still before held-until.
    started = timing.retry_s + timing.renew_s
    assert tenure.attempt_deadline(started) <= tenure.held_until
    assert tenure.attempt_deadline(started) == started + timing.retry_s


@pytest.mark.parametrize(
    ("ttl", "renew", "retry", "message"),
    [
        (2, 1.0, 0.75, r"renewal period \+ 2 x retry time must be <= TTL: 1.0 \+ 2 x 0.75"),
        (0, 0.1, 0.1, "whole number of seconds"),
        (1.5, 0.1, 0.1, "whole number of seconds"),
        (2, 0.0, 0.5, "must be > 0"),
        (2, 0.5, -1.0, "must be > 0"),
    ],
)
def test_rule_4_bad_timings_are_refused_with_a_clear_error(
    ttl: int, renew: float, retry: float, message: str
) -> None:
    with pytest.raises(TimingError, match=message):
        LeaseTiming(ttl, renew, retry)


def test_the_default_timing_is_within_rule_4() -> None:
    for ttl in (1, 2, 5, 10):
        timing = LeaseTiming.for_ttl(ttl)
        assert timing.renew_s + 2 * timing.retry_s <= ttl
