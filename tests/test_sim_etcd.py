"""etcd as a simulated store (sim/etcd.py): leases, revisions and lost quorum on virtual time; under
random interleavings of campaigns, renewals, delays, lost replies, late proposals, expiry and
quorum loss, never two members believing they lead at one instant, and never a deposed leader's
guarded write applied."""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from nfvha.core.lease import LeaseTiming
from nfvha.sim.etcd import LEADER_KEY, LeadershipWorld

TIMING = LeaseTiming(2, 0.5, 0.75)


def test_a_member_is_elected_renews_and_is_demoted_when_renewals_fail() -> None:
    world = LeadershipWorld.of(2, TIMING)
    world.send(0)
    world.deliver(0, "loop")
    world.reply(0, "loop")
    first = world.members[0].tenure.token
    assert first is not None and world.members[0].tenure.leads(world.now)
    world.send(1)  # a campaign that loses: the key exists
    world.deliver(1, "loop")
    world.reply(1, "loop")
    assert not world.members[1].tenure.leads(world.now)

    world.advance(0.5)
    world.set_quorum(False)
    world.send(0)
    world.advance(0.8)  # the renewal is never answered in time
    world.reply(0, "loop")
    assert world.members[0].demotions == ["demoted (token 1): lease renewal failed"]
    world.advance(5.0)
    assert LEADER_KEY in world.store.keys  # nothing expires without a quorum

    world.set_quorum(True)
    world.advance(2.0)  # the lease got its whole TTL again when the quorum returned
    assert LEADER_KEY not in world.store.keys
    world.send(1)
    world.deliver(1, "loop")
    world.reply(1, "loop")
    second = world.members[1].tenure.token
    assert second is not None and second > first


def elect(world: LeadershipWorld, i: int) -> int | None:
    world.send(i)
    world.deliver(i, "loop")
    world.reply(i, "loop")
    return world.members[i].tenure.token


def test_a_dead_leaders_witness_lets_the_next_lead_at_once_a_lost_machine_after_the_ttl() -> None:
    for witnessed in (True, False):
        world = LeadershipWorld.of(2, TIMING)
        first = elect(world, 0)
        world.send(0, write=True)  # in flight when it dies: applied after the takeover
        world.crash(0, witnessed)
        world.advance(0.1)
        second = elect(world, 1)
        if witnessed:  # revoked by the witness: the key was gone at once
            assert second is not None and second > first
        else:  # the lease runs on: nobody leads until it expires
            assert second is None
            world.advance(float(TIMING.ttl_s))
            assert elect(world, 1) is not None
        world.deliver_late(0)  # the dead leader's write: refused, its term is over
        assert world.applied_writes == []


def test_a_deposed_leaders_write_is_refused_by_the_store() -> None:
    world = LeadershipWorld.of(2, TIMING)
    for i in (0,):
        world.send(i)
        world.deliver(i, "loop")
        world.reply(i, "loop")
    world.send(0, write=True)  # sent while it leads, applied after its lease expired
    world.advance(2.5)
    world.send(1)
    world.deliver(1, "loop")
    world.reply(1, "loop")
    world.deliver(0, "write")
    world.reply(0, "write")
    assert world.applied_writes == []
    assert world.members[1].tenure.leads(world.now)


members = st.integers(0, 2)
delays = st.floats(0.0, 1.0)
rarely = st.sampled_from([False, False, False, True])
actions = st.one_of(
    # One request end to end: sent, applied after a delay, answered (or lost) after another.
    st.tuples(st.just("exchange"), members, st.booleans(), delays, delays, rarely),
    st.tuples(st.just("exchange"), members, st.booleans(), delays, delays, rarely),
    st.tuples(st.just("advance"), st.floats(0.0, 1.5)),
    st.tuples(st.just("send"), members, st.booleans()),
    st.tuples(st.just("deliver"), members, st.sampled_from(["loop", "write"])),
    st.tuples(st.just("reply"), members, st.sampled_from(["loop", "write"]), st.booleans()),
    st.tuples(st.just("late"), st.integers(0, 10)),
    st.tuples(st.just("quorum"), st.booleans()),
    st.tuples(st.just("crash"), members, st.booleans()),  # witnessed, or the machine lost
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(actions, max_size=80))
def test_never_two_believers_and_never_a_deposed_write(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    world = LeadershipWorld.of(3, TIMING)
    for step in steps:  # each action checks the invariants (SimViolation)
        match step:
            case ("advance", dt):
                world.advance(dt)
            case ("exchange", i, write, apply_after, reply_after, lost):
                slot = "write" if write else "loop"
                world.send(i, write)
                world.advance(apply_after)
                world.deliver(i, slot)
                world.advance(reply_after)
                world.reply(i, slot, lost)
            case ("send", i, write):
                world.send(i, write)
            case ("deliver", i, slot):
                world.deliver(i, slot)
            case ("reply", i, slot, lost):
                world.reply(i, slot, lost)
            case ("late", k):
                world.deliver_late(k)
            case ("quorum", up):
                world.set_quorum(up)
            case ("crash", i, witnessed):
                world.crash(i, witnessed)
    tokens = world.issued
    event(f"{len(tokens)} terms")
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # monotonic
