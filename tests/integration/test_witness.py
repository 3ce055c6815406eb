"""The leader's witness (runtime/witness.py) on a real 3-member etcd: it revokes its leader's
lease once the kernel says the leader exited, and only then; a term that ends otherwise ends it
too; the signals of a stop do not take it down before its leader; a leader stopped on purpose
takes it along."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nfvha.runtime import witness
from nfvha.sdk.stores import EtcdEndpoints, parse_endpoints
from tests.integration.support.deployments import config_2n
from tests.integration.support.etcd import EtcdCluster
from tests.integration.support.runs import NfvhaRun
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


def witnesses_of(pid: int) -> list[int]:
    """The witness processes whose leader is ``pid`` (its argv names it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"nfvha.runtime.witness" in argv and str(pid).encode() in argv:
            found.append(int(cmdline.parent.name))
    return found


@pytest.mark.timeout(120)
def test_a_leader_stopped_on_purpose_takes_its_witness_with_it_and_releases_its_lease(
    etcd_cluster: EtcdCluster, tmp_path: Path, runtime_dir: Path, nfvha_runs: list
) -> None:
    def on_etcd(raw: dict) -> None:
        raw["coordination"] = "etcd://" + ",".join(etcd_cluster.endpoints)

    name, config, _ = config_2n(tmp_path, on_etcd)
    run = NfvhaRun(config, name, runtime_dir, tmp_path, standby_manager=False)
    nfvha_runs.append(run)
    status = run.wait_steady()
    leader = run.proc.pid
    assert f"event=witnessing pid={leader} " in run.stderr, run.stderr
    assert len(witnesses_of(leader)) == 1
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=60) == 0, run.stderr
    assert witnesses_of(leader) == []  # killed by the stop, not left to watch a dead pid
    assert "event=leader-exited" not in run.stderr  # nothing for it to revoke: released
    assert etcd_cluster.value(status["leader"]["key"]) is None


@pytest.mark.timeout(60)
def test_a_one_second_lease_renewed_on_time_keeps_its_witness_watching(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    """etcd counts a lease's TTL left in whole seconds: a 1 s lease shows 0 between renewals,
    which is not gone (-1)."""
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

    async def scenario() -> tuple[bool, int]:
        client = etcd(etcd_cluster)
        try:
            lease = await client.call(lambda c: c.lease(1))
            err = open(tmp_path / "witness.err", "w+b")  # noqa: SIM115  (the child's)
            argv = [sys.executable, "-m", "nfvha.runtime.witness", str(leader.pid), str(lease.id)]
            proc = subprocess.Popen([*argv, ",".join(etcd_cluster.endpoints)], stderr=err)
            err.close()
            for _ in range(14):  # 3.5 s of renewals every 0.25 s, three lease checks
                await client.call(lambda c: c.refresh_lease(lease.id))
                await asyncio.sleep(0.25)
            watching = proc.poll() is None
            leader.kill()
            return watching, proc.wait(timeout=20)
        finally:
            await client.close()

    try:
        watching, code = asyncio.run(scenario())
    finally:
        leader.kill()
        leader.wait()
    log = (tmp_path / "witness.err").read_text()
    assert watching, log  # it did not take the renewed lease for gone
    assert code == 0 and "revoked=yes" in log, log
