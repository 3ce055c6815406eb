"""The checkpoint service: fencing by epoch, durability per policy, degraded mode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nfvha.core.checkpoint import Ack, CheckpointService, Persist, Refuse, Replicate


def replicated() -> CheckpointService:
    svc = CheckpointService("replicated")
    svc.grant("a", 1)
    svc.attach_standby("b")
    return svc


def test_write_is_acknowledged_only_after_the_standby_acks() -> None:
    svc = replicated()
    actions = svc.write("a", 1, request=7, updates={"total": 1})
    assert actions == [Replicate("b", 1, {"total": 1})]
    assert svc.standby_acked("b", 1) == [Ack("a", 7)]


def test_acks_release_every_write_up_to_the_version_in_order() -> None:
    svc = replicated()
    for req in (1, 2, 3):
        svc.write("a", 1, req, {"total": req})
    assert svc.standby_acked("b", 2) == [Ack("a", 1), Ack("a", 2)]
    assert svc.standby_acked("b", 3) == [Ack("a", 3)]


def test_ack_from_someone_who_is_not_the_standby_counts_for_nothing() -> None:
    svc = replicated()
    svc.write("a", 1, 1, {"total": 1})
    assert svc.standby_acked("x", 1) == []


def test_stale_epoch_is_refused_and_does_not_touch_the_state() -> None:
    svc = replicated()
    svc.write("a", 1, 1, {"total": 5})
    svc.grant("b", 2)  # b took over
    actions = svc.write("a", 1, 2, {"total": 99})
    assert isinstance(actions[0], Refuse) and "not the writer" in actions[0].reason
    assert svc.state == {"total": 5}


def test_revoked_writer_is_refused() -> None:
    svc = replicated()
    svc.revoke("a")
    assert isinstance(svc.write("a", 1, 1, {"total": 1})[0], Refuse)


def test_losing_the_standby_releases_pending_writes_and_marks_degraded() -> None:
    svc = replicated()
    svc.write("a", 1, 1, {"total": 1})
    assert svc.revoke("b") == [Ack("a", 1)]
    assert svc.degraded
    assert svc.write("a", 1, 2, {"total": 2}) == [Ack("a", 2)]  # the replica is the copy
    svc.attach_standby("c")
    assert not svc.degraded
    assert svc.write("a", 1, 3, {"total": 3}) == [Replicate("c", 3, {"total": 3})]


def test_promoted_standby_stops_being_standby() -> None:
    svc = replicated()
    svc.write("a", 1, 1, {"total": 1})
    svc.revoke("a")
    svc.grant("b", 2)
    assert svc.standby is None
    assert svc.write("b", 2, 1, {"total": 2}) == [Ack("b", 1)]


def test_disk_mode_persists_the_whole_state_and_acks_on_persisted() -> None:
    svc = CheckpointService("checkpoint")
    svc.grant("a", 4)
    actions = svc.write("a", 4, 1, {"total": 1})
    assert actions == [Persist(1, 4, {"total": 1})]
    svc.write("a", 4, 2, {"total": 2})
    assert svc.persisted(2, {"total": 2}) == [Ack("a", 1), Ack("a", 2)]


def test_a_failed_store_refuses_every_pending_write_and_rolls_the_state_back() -> None:
    svc = CheckpointService("checkpoint")
    svc.grant("a", 1)
    svc.write("a", 1, 1, {"total": 1})
    assert svc.persisted(1, {"total": 1}) == [Ack("a", 1)]
    svc.write("a", 1, 2, {"total": 2})
    svc.write("a", 1, 3, {"total": 3})
    refused = svc.persist_failed("No space left on device")
    assert [(r.vnfc, r.request) for r in refused] == [("a", 2), ("a", 3)]
    assert all(isinstance(r, Refuse) and "No space" in r.reason for r in refused)
    # Nothing that was not durable is served or handed over: the replica is the disk's state.
    assert svc.state == {"total": 1} and svc.store_error
    # The next write tries again with a version of its own; once durable the error is gone.
    (persist,) = svc.write("a", 1, 4, {"total": 2})
    assert isinstance(persist, Persist) and persist.version > 3
    assert svc.persisted(persist.version, persist.state) == [Ack("a", 4)]
    assert svc.store_error == ""


def test_stateless_refuses_writes() -> None:
    svc = CheckpointService("none")
    svc.grant("a", 1)
    assert isinstance(svc.write("a", 1, 1, {"x": 1})[0], Refuse)


@given(st.lists(st.sampled_from(["write", "ack", "lose", "attach", "failover"]), max_size=60))
def test_every_acknowledged_write_is_in_the_replica(ops: list[str]) -> None:
    """Whatever the order, an acknowledged value is what the replica (given to the next
    standby or active) holds, and no write is acknowledged twice."""
    svc = CheckpointService("replicated")
    writer, epoch, standby = "a", 1, "b"
    svc.grant(writer, epoch)
    svc.attach_standby(standby)
    acked: list[Ack] = []
    total = 0
    version_sent = 0
    for i, op in enumerate(ops):
        actions = []
        if op == "write":
            total += 1
            actions = svc.write(writer, epoch, i, {"total": total})
            version_sent = svc.version
        elif op == "ack" and svc.standby:
            actions = svc.standby_acked(svc.standby, version_sent)
        elif op == "lose" and svc.standby:
            actions = svc.revoke(svc.standby)
        elif op == "attach" and not svc.standby:
            svc.attach_standby(f"s{i}")  # a newly started VNFC, never the writer
        elif op == "failover" and svc.standby:
            actions = svc.revoke(writer)
            writer, epoch = svc.standby, epoch + 1
            actions += svc.grant(writer, epoch)
        acked += [a for a in actions if isinstance(a, Ack)]
        assert svc.state.get("total", 0) == total
    assert len(set(acked)) == len(acked)


def test_a_newer_state_handed_back_replaces_the_replica_an_older_one_does_not() -> None:
    service = CheckpointService("replicated", state={"total": 5}, version=5)
    service.offered(4, {"total": 4})
    assert (service.version, service.state) == (5, {"total": 5})
    service.offered(9, {"total": 9})
    assert (service.version, service.state) == (9, {"total": 9})
