"""core/watchdog.py: the lease a guest holds and the VIM's view of it, rule by rule; and the
property that matters: the VIM never counts a guest fenced before the guest has fenced itself."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nfvha.core.watchdog import BEATS_KEPT, GuestLease, VimLeases


def test_rule_1_held_from_the_send_of_the_answered_beat_and_never_shortened() -> None:
    lease = GuestLease()
    assert not lease.expired(1e9)  # never leased: never fences itself
    first, second = lease.beat(10.0), lease.beat(10.5)
    assert lease.answered(second, 1.0) and lease.held_until == 11.5
    assert not lease.answered(first, 1.0)  # a late answer to an older beat: nothing
    assert lease.held_until == 11.5
    assert not lease.expired(11.49) and lease.expired(11.5)


def test_rule_1_an_answer_too_old_to_date_is_dropped() -> None:
    lease = GuestLease()
    old = lease.beat(0.0)
    for i in range(BEATS_KEPT):
        lease.beat(float(i + 1))
    assert not lease.answered(old, 5.0) and lease.held_until is None


def test_rule_2_the_vims_view_ends_after_the_guests_own_end() -> None:
    vim = VimLeases(1.0, margin=0.05, slack_s=0.05)
    assert vim.answer("vm-a", 10.2)
    assert vim.isolate("vm-a") == 10.2 + 1.05 + 0.05


def test_rule_3_a_vm_being_isolated_gets_no_more_lease_until_booted_again() -> None:
    vim = VimLeases(1.0)
    vim.answer("vm-a", 1.0)
    vim.isolate("vm-a")
    assert not vim.answer("vm-a", 1.5)
    assert vim.remaining("vm-a", 1.5) == 0.5  # still the old one, running out
    vim.booted("vm-a")
    assert vim.answer("vm-a", 3.0) and vim.remaining("vm-a", 3.0) == 1.0


def test_rule_4_a_vm_never_leased_has_nothing_to_wait_for() -> None:
    assert VimLeases(1.0).isolate("vm-a") is None


@given(
    lease_s=st.floats(0.1, 10),
    beats=st.lists(
        st.tuples(st.floats(0, 0.5), st.floats(0, 0.2), st.booleans()), min_size=1, max_size=40
    ),
)
def test_the_vim_never_counts_a_guest_fenced_before_it_is(lease_s: float, beats) -> None:
    """Beats sent at increasing times, each received after a delay (or lost): wherever the
    VIM stops, its end is never before the guest's."""
    guest, vim = GuestLease(), VimLeases(lease_s)
    now = 0.0
    for pause, delay, lost in beats:
        now += pause
        n = guest.beat(now)
        if not lost and vim.answer("vm", now + delay):
            guest.answered(n, lease_s)  # the answer arrives whenever: it is dated by the send
    until = vim.isolate("vm")
    if guest.held_until is None:
        assert until is None or until >= 0
    else:
        assert until is not None and until >= guest.held_until
