"""Leadership of a manager kind on a real 3-member etcd cluster (runtime/etcd_leadership.py): one
leader among candidates, a killed leader's successor with a higher fencing token, a deposed
leader's writes refused by etcd, one etcd member lost without effect, no quorum demoting the
leader before its lease ends and electing nobody until quorum returns.

Only orderings and outcomes are asserted; the takeover time is printed for information."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path

import pytest
from aetcd import transactions  # type: ignore[import-untyped]

from nfvha.core.lease import TimingError
from nfvha.runtime.etcd_leadership import Deposed, EtcdCoordinator, Leader, LeadershipChange
from nfvha.sdk.stores import EtcdEndpoints, parse_endpoints
from tests.integration.support.etcd import EtcdCluster
from tests.integration.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 60.0  # turns a hang into a failure; never a bound on how fast


class Member:
    """A coordinator in this process and every transition it reported."""

    def __init__(self, endpoints: list[str], prefix: str, name: str, ttl: int, **timing: float):
        self.changes: list[LeadershipChange] = []
        self.coordinator = EtcdCoordinator(
            endpoints, prefix, "vim", name, ttl, on_change=self.changes.append, **timing
        )

    def elections(self) -> list[LeadershipChange]:
        return [c for c in self.changes if c.leading]

    def demotions(self) -> list[LeadershipChange]:
        return [c for c in self.changes if not c.leading]


def prefix() -> str:
    return f"/nfvha/test-{uuid.uuid4().hex}"  # each test its own keys on the shared cluster


async def elected(member: Member) -> int:
    async with asyncio.timeout(HANG_GUARD_S):
        assert await member.coordinator.wait_to_lead(asyncio.Event())
    token = member.coordinator.token
    assert token is not None
    return token


async def value(cluster: EtcdCluster, key: bytes) -> bytes | None:
    return await asyncio.to_thread(cluster.value, key.decode())


def test_one_leader_and_a_killed_leaders_successor_leads_with_a_higher_token(
    etcd_cluster: EtcdCluster,
) -> None:
    keys = prefix()
    ttl = 1

    async def scenario() -> None:
        candidate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.support.etcd_candidate",
            ",".join(etcd_cluster.endpoints),
            keys,
            "vim",
            "a",
            str(ttl),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        standby = Member(etcd_cluster.endpoints, keys, "b", ttl)
        try:
            assert candidate.stdout is not None
            async with asyncio.timeout(HANG_GUARD_S):
                line = (await candidate.stdout.readline()).decode().split()
            assert line[0] == "leading"
            first = int(line[1])
            assert await standby.coordinator.leader() == Leader("a", first)
            assert not standby.coordinator.try_lead()  # starts campaigning
            await asyncio.sleep(2 * ttl)  # several campaign attempts and renewals
            assert standby.elections() == []
            assert await standby.coordinator.leader() == Leader("a", first)

            loop = asyncio.get_running_loop()
            candidate.send_signal(signal.SIGKILL)
            killed_at = loop.time()
            await candidate.wait()
            second = await elected(standby)
            assert second > first
            assert await standby.coordinator.leader() == Leader("b", second)
            took = standby.elections()[0].at - killed_at
            print(f"takeover after a SIGKILL, ttl {ttl} s: {took:.3f} s")  # for information
        finally:
            if candidate.returncode is None:
                candidate.kill()
                await candidate.wait()
            await standby.coordinator.close()

    asyncio.run(scenario())


def test_a_deposed_leaders_guarded_write_is_refused_by_etcd_and_writes_nothing(
    etcd_cluster: EtcdCluster,
) -> None:
    keys = prefix()
    state = f"{keys}/state".encode()

    async def scenario() -> None:
        # The old leader renews rarely: it still believes it leads when its write reaches etcd,
        # so it is etcd's compare that refuses it, not its own belief.
        old = Member(etcd_cluster.endpoints, keys, "a", 10, renew_s=8.0, retry_s=1.0)
        new = Member(etcd_cluster.endpoints, keys, "b", 1)
        outside = EtcdEndpoints(parse_endpoints(etcd_cluster.endpoints))
        try:
            first = await elected(old)
            await old.coordinator.guarded_put(state, b"written by a")
            # A compare of the caller's that fails is an answer, not a deposition.
            other = transactions.Value(state) == b"something else"
            ok, _ = await old.coordinator.guarded_txn([other], [transactions.Put(state, b"x")], [])
            assert not ok and old.coordinator.leads()
            held = await outside.call(lambda client: client.get(old.coordinator.key))
            await outside.call(lambda client: client.revoke_lease(held.lease))  # its lease is lost
            second = await elected(new)
            assert second > first
            assert old.coordinator.leads()  # it does not know yet
            with pytest.raises(
                Deposed, match=rf"token {first}\) no longer leads vim.*b's \(token {second}\)"
            ):
                await old.coordinator.guarded_put(state, b"written by a, deposed")
            assert await value(etcd_cluster, state) == b"written by a"
            assert not old.coordinator.leads()  # the refusal demoted it
            assert old.demotions()[0].why.startswith("deposed")
            with pytest.raises(Deposed, match="does not lead vim"):
                await old.coordinator.guarded_put(state, b"again")
            await new.coordinator.guarded_put(state, b"written by b")
            assert await value(etcd_cluster, state) == b"written by b"
        finally:
            await outside.close()
            await old.coordinator.close()
            await new.coordinator.close()

    asyncio.run(scenario())


def test_leadership_and_guarded_writes_go_on_with_the_etcd_leader_killed(
    etcd_cluster: EtcdCluster,
) -> None:
    keys = prefix()
    state = f"{keys}/state".encode()
    victim = etcd_cluster.leader()
    # The killed member first: the coordinators have to fail over to the others. A TTL of 3 s
    # leaves each renewal 1.25 s of retries, longer than etcd's election here (0.5 to 1 s).
    endpoints = etcd_cluster.endpoints[victim:] + etcd_cluster.endpoints[:victim]
    leader = Member(endpoints, keys, "a", 3, renew_s=0.5, retry_s=1.25)
    standby = Member(endpoints, keys, "b", 3, renew_s=0.5, retry_s=1.25)

    async def scenario() -> None:
        try:
            token = await elected(leader)
            standby.coordinator.try_lead()
            etcd_cluster.kill(victim)
            for n in range(6):  # across several renewals and etcd's election
                await leader.coordinator.guarded_put(state, f"{n}".encode())
                await asyncio.sleep(0.5)
            assert leader.coordinator.token == token
            assert leader.demotions() == [] and standby.elections() == []
            assert await value(etcd_cluster, state) == b"5"
        finally:
            await leader.coordinator.close()
            await standby.coordinator.close()

    try:
        asyncio.run(scenario())
    finally:
        etcd_cluster.start(victim)


def test_without_quorum_the_leader_demotes_before_its_lease_ends_and_nobody_leads_until_it_returns(
    etcd_cluster: EtcdCluster,
) -> None:
    keys = prefix()
    state = f"{keys}/state".encode()
    leader = Member(etcd_cluster.endpoints, keys, "a", 1)
    standby = Member(etcd_cluster.endpoints, keys, "b", 1)
    lost = [1, 2]

    async def scenario() -> None:
        try:
            first = await elected(leader)
            standby.coordinator.try_lead()
            for i in lost:
                etcd_cluster.kill(i)
            demoted = await wait_for(leader.demotions, "the leader's demotion")
            assert demoted[0].at < demoted[0].held_until  # before its lease could end in etcd
            assert demoted[0].why.startswith("lease renewal failed")
            assert not leader.coordinator.leads()
            with pytest.raises(Deposed):
                await leader.coordinator.guarded_put(state, b"no quorum")
            await asyncio.sleep(2.0)  # several campaign attempts of both, without a quorum
            assert leader.elections()[1:] == [] and standby.elections() == []

            for i in lost:
                await asyncio.to_thread(etcd_cluster.start, i)
            await wait_for(
                lambda: leader.coordinator.leads() or standby.coordinator.leads(), "a new leader"
            )
            back = leader if leader.coordinator.leads() else standby
            again = back.coordinator.token
            assert again is not None and again > first
            await back.coordinator.guarded_put(state, b"quorum back")
            assert await value(etcd_cluster, state) == b"quorum back"
            assert await back.coordinator.leader() == Leader(back.coordinator.member, again)
        finally:
            for i in lost:
                if etcd_cluster.procs[i] is None:
                    await asyncio.to_thread(etcd_cluster.start, i)
            await leader.coordinator.close()
            await standby.coordinator.close()

    asyncio.run(scenario())


def test_a_released_leader_is_followed_at_once_without_waiting_for_its_lease(
    etcd_cluster: EtcdCluster,
) -> None:
    keys = prefix()
    # A long TTL: the successor is elected because the lease was revoked, not because it expired.
    first = Member(etcd_cluster.endpoints, keys, "a", 30)
    second = Member(etcd_cluster.endpoints, keys, "b", 30, renew_s=0.2)

    async def scenario() -> None:
        try:
            token = await elected(first)
            second.coordinator.try_lead()
            await first.coordinator.close()
            assert first.demotions()[0].why == "released"
            assert await elected(second) > token
            assert first.demotions()[0].at < second.elections()[0].at
        finally:
            await second.coordinator.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("ttl", "timing", "message"),
    [
        (2, {"renew_s": 1.0, "retry_s": 1.0}, r"renewal period \+ 2 x retry time must be <= TTL"),
        (0, {}, "whole number of seconds"),
    ],
)
def test_timings_that_could_outlive_the_lease_are_refused(
    ttl: int, timing: dict[str, float], message: str
) -> None:
    with pytest.raises(TimingError, match=message):
        EtcdCoordinator(["127.0.0.1:2379"], "/nfvha/d", "vim", "a", ttl, **timing)


def test_a_malformed_prefix_or_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        EtcdCoordinator(["127.0.0.1:2379"], "nfvha/d", "vim", "a")
    with pytest.raises(ValueError, match="manager kind"):
        EtcdCoordinator(["127.0.0.1:2379"], "/nfvha/d", "ha/x", "a")
