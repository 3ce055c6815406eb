"""The leader's witness (runtime/witness.py) on a real 3-member etcd: it revokes its leader's
lease once the kernel says the leader exited, and only then; a term that ends otherwise ends it
too; the signals of a stop do not take it down before its leader."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nfvha.runtime import witness
from nfvha.sdk.stores import EtcdEndpoints, parse_endpoints
from tests.integration.support.etcd import EtcdCluster
from tests.integration.support.waiting import wait_for_sync

LONG_TTL_S = 60  # far beyond any test: only a revocation can end the lease in time


def etcd(cluster: EtcdCluster) -> EtcdEndpoints:
    return EtcdEndpoints(parse_endpoints(cluster.endpoints), timeout=2.0)


def grant_with_key(cluster: EtcdCluster, key: bytes) -> int:
    async def grant() -> int:
        client = etcd(cluster)
        try:
            lease = await client.call(lambda c: c.lease(LONG_TTL_S))
            await client.call(lambda c: c.put(key, b"leader", lease=lease.id))
            return int(lease.id)
        finally:
            await client.close()

    return asyncio.run(grant())


def lease_ttl(cluster: EtcdCluster, lease: int) -> int:
    async def ttl() -> int:
        client = etcd(cluster)
        try:
            return int((await client.call(lambda c: c.get_lease_info(lease))).TTL)
        finally:
            await client.close()

    return asyncio.run(ttl())


def revoke(cluster: EtcdCluster, lease: int) -> None:
    async def go() -> None:
        client = etcd(cluster)
        try:
            await client.call(lambda c: c.revoke_lease(lease))
        finally:
            await client.close()

    asyncio.run(go())


def watched(cluster: EtcdCluster, tmp_path: Path, key: bytes):
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    lease = grant_with_key(cluster, key)
    err = open(tmp_path / "witness.err", "w+b")  # noqa: SIM115  (closed by the caller)
    argv = [sys.executable, "-m", "nfvha.runtime.witness", str(leader.pid), str(lease)]
    proc = subprocess.Popen([*argv, ",".join(cluster.endpoints)], stderr=err)
    wait_for_sync(
        lambda: b"event=witnessing" in (tmp_path / "witness.err").read_bytes(), "watching"
    )
    return leader, lease, proc, err


@pytest.mark.timeout(60)
def test_the_witness_revokes_its_leaders_lease_once_the_leader_is_dead_and_not_before(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    key = b"/nfvha/witnessed/leader/managers"
    leader, lease, proc, err = watched(etcd_cluster, tmp_path, key)
    try:
        proc.send_signal(signal.SIGTERM)  # a unit's stop, a terminal's Ctrl-C: ignored
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.5)  # alive, and the lease with it, while the leader lives
        assert lease_ttl(etcd_cluster, lease) > LONG_TTL_S - 10
        assert etcd_cluster.value(key.decode()) == b"leader"
        leader.kill()
        assert proc.wait(timeout=20) == 0
        assert lease_ttl(etcd_cluster, lease) == -1  # revoked, decades before its TTL
        assert etcd_cluster.value(key.decode()) is None  # and the leader key with it
        err.seek(0)
        line = err.read().decode()
        assert f"event=leader-exited pid={leader.pid} lease={lease} revoked=yes" in line, line
    finally:
        leader.kill()
        leader.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


@pytest.mark.timeout(60)
def test_a_term_that_ends_otherwise_ends_its_witness_with_nothing_revoked(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    leader, lease, proc, err = watched(etcd_cluster, tmp_path, b"/nfvha/released/leader/x")
    try:
        revoke(etcd_cluster, lease)  # the leader released it (a deliberate stop, a deposition)
        assert proc.wait(timeout=20) == 0
        assert leader.poll() is None  # the leader was never touched
        err.seek(0)
        assert "revoked=no" in err.read().decode()
    finally:
        leader.kill()
        leader.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


def test_a_leader_dead_before_it_could_be_watched_is_revoked_at_once(
    etcd_cluster: EtcdCluster,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: no such process any more
    lease = grant_with_key(etcd_cluster, b"/nfvha/gone/leader/managers")

    async def run() -> float | None:
        client = etcd(etcd_cluster)
        try:
            return await witness.witness(dead.pid, lease, client)
        finally:
            await client.close()

    assert asyncio.run(run()) is not None
    assert lease_ttl(etcd_cluster, lease) == -1
