"""Heartbeats: silence for misses x interval is a failure, reported once per silence."""

from __future__ import annotations

from nfvha.core.heartbeat import Heartbeats
from nfvha.core.messages import HostFailed, VmFailed


def test_silence_for_the_limit_is_a_failure_reported_once() -> None:
    hb = Heartbeats(interval_s=0.05, misses=3)
    hb.beat("host-1", "host", 1.0)
    hb.beat("vm-a", "guest", 1.0)
    assert hb.expired(1.149) == []
    failed = hb.expired(1.151)
    assert {type(e) for e in failed} == {HostFailed, VmFailed}
    assert all(isinstance(e, HostFailed) or e.cause == "heartbeat" for e in failed)
    assert hb.expired(2.0) == []  # once per silence


def test_a_beat_after_a_reported_silence_starts_a_new_life() -> None:
    hb = Heartbeats(interval_s=0.05, misses=3)
    hb.beat("vm-a", "guest", 0.0)
    assert len(hb.expired(0.2)) == 1
    hb.beat("vm-a", "guest", 1.0)
    assert hb.expired(1.1) == []
    assert len(hb.expired(1.2)) == 1


def test_beats_keep_it_alive_and_late_beats_do_not_go_back_in_time() -> None:
    hb = Heartbeats(interval_s=0.05, misses=3)
    for t in (0.0, 0.05, 0.1, 0.15):
        hb.beat("host-1", "host", t)
    hb.beat("host-1", "host", 0.01)
    assert hb.expired(0.29) == []


def test_standbys_and_forgotten_agents_are_not_reported() -> None:
    hb = Heartbeats(interval_s=0.05, misses=3)
    hb.beat("vm-a.standby", "guest", 0.0)
    hb.beat("vm-b", "guest", 0.0)
    hb.forget("vm-b")
    assert hb.expired(5.0, standby=frozenset({"vm-a.standby"})) == []
