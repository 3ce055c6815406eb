"""The lines `nfvha status` prints for the leadership and the hosts."""

from __future__ import annotations

from nfvha.cli.operate import hosts_line, leader_line


def test_the_leader_line_names_member_token_and_the_lease_left() -> None:
    leader = {
        "coordination": "etcd",
        "member": "host-a:4242",
        "token": 7,
        "lease_ttl_s": 2,
        "lease_remaining_ms": 1834,
        "key": "/nfvha/x/leader/managers",
    }
    line = leader_line(leader)
    assert line.startswith("leader etcd host-a:4242  token 7  lease 1.8 s of 2 s left")


def test_each_host_is_shown_with_its_state_its_link_and_its_lease_if_it_holds_one() -> None:
    nfvi = {
        "hosts": {"host-1": "up", "host-2": "failed", "host-3": "up"},
        "host_agents": {
            "host-1": {"connected": True, "lease_remaining_ms": 1900},
            "host-2": {"connected": False, "lease_remaining_ms": 0},
            "host-3": {"connected": True},  # no guests: nothing to hold
        },
    }
    assert hosts_line(nfvi) == (
        "hosts  host-1 up, lease 1.9 s  host-2 failed, not connected, lease 0.0 s  host-3 up"
    )
    assert hosts_line({}) == ""
