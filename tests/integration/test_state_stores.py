"""The fenced state stores a component writes itself: a log on shared storage (real files, real
processes) and etcd (a real 3-member cluster). A writer whose epoch is older than the store's is
refused by the store, and what it tried to write is not kept."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nfvha.sdk.stores import StateStore, StoreRefused, StoreUnavailable, open_store
from tests.integration.support.etcd import EtcdCluster, free_tcp_ports
from tests.integration.test_full_disk import fill, records_on_disk, small_disk  # noqa: F401

HANG_GUARD_S = 60.0  # a StoreUnavailable must come by itself: this only turns a hang into a failure


@pytest.fixture(params=["shared_storage", "store"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A fresh, empty store of each kind."""
    if request.param == "shared_storage":
        return {"mode": "shared_storage", "path": str(tmp_path / "shared" / "state.log")}
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return {"mode": "store", "endpoints": cluster.endpoints, "key": etcd_key()}


def etcd_key() -> str:
    return f"/nfvha/test/{uuid.uuid4().hex}"  # each test its own keys on the shared cluster


async def claimed(spec: dict[str, Any], epoch: int) -> StateStore:
    store = open_store(spec)
    await store.claim(epoch)
    return store


async def read_back(spec: dict[str, Any], epoch: int) -> tuple[int, dict[str, Any]]:
    """What a new writer with ``epoch`` finds (claiming again with the same epoch is allowed)."""
    store = open_store(spec)
    try:
        return await store.claim(epoch)
    finally:
        await store.close()


# --- both stores -----------------------------------------------------------------------------


def test_an_empty_store_claims_nothing(spec: dict[str, Any]) -> None:
    assert asyncio.run(read_back(spec, 1)) == (0, {})


def test_a_write_is_read_back_by_a_new_store(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        store = await claimed(spec, 1)
        await store.write(1, 1, {"total": 1})
        await store.write(1, 2, {"total": 2, "who": "ä"})
        await store.close()
        assert await read_back(spec, 1) == (2, {"total": 2, "who": "ä"})

    asyncio.run(scenario())


def test_a_newer_claim_refuses_the_older_writer(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        old = await claimed(spec, 1)
        await old.write(1, 1, {"total": 1})
        new = open_store(spec)
        assert await new.claim(2) == (1, {"total": 1})  # the newer takes over what is durable
        with pytest.raises(StoreRefused, match="stale epoch 1: the store holds epoch 2"):
            await old.write(1, 2, {"total": "stale"})
        assert await read_back(spec, 2) == (1, {"total": 1})  # the stale write was not kept
        await new.write(2, 2, {"total": 2})
        assert await read_back(spec, 2) == (2, {"total": 2})
        await old.close()
        await new.close()

    asyncio.run(scenario())


def test_a_lower_epoch_cannot_claim_and_changes_nothing(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        holder = await claimed(spec, 3)
        await holder.write(3, 1, {"total": 1})
        with pytest.raises(StoreRefused, match="stale epoch 2: the store holds epoch 3"):
            await read_back(spec, 2)
        await holder.write(3, 2, {"total": 2})  # the holder's epoch still stands
        assert await read_back(spec, 3) == (2, {"total": 2})
        await holder.close()

    asyncio.run(scenario())


def test_the_same_epoch_may_claim_again(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        first = await claimed(spec, 5)
        await first.write(5, 1, {"total": 1})
        await first.close()
        again = open_store(spec)  # the same holder after a reconnect
        assert await again.claim(5) == (1, {"total": 1})
        await again.write(5, 2, {"total": 2})
        await again.close()
        assert await read_back(spec, 5) == (2, {"total": 2})

    asyncio.run(scenario())


def test_a_writer_that_never_claimed_is_refused(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        store = open_store(spec)
        with pytest.raises(StoreRefused, match="epoch 1 never claimed"):
            await store.write(1, 1, {"total": 1})
        await store.close()
        assert await read_back(spec, 1) == (0, {})

    asyncio.run(scenario())


def test_concurrent_writes_are_all_released_and_the_last_wins(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        store = await claimed(spec, 1)
        done = await asyncio.gather(*(store.write(1, v, {"total": v}) for v in range(1, 51)))
        assert done == [None] * 50
        await store.close()
        assert await read_back(spec, 1) == (50, {"total": 50})

    asyncio.run(scenario())


def test_concurrent_writes_of_a_refused_writer_are_all_refused(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        old = await claimed(spec, 1)
        await old.write(1, 1, {"total": 1})
        await read_back(spec, 2)
        outcomes = await asyncio.gather(
            *(old.write(1, v, {"total": v}) for v in range(2, 12)), return_exceptions=True
        )
        assert all(isinstance(o, StoreRefused) for o in outcomes), outcomes
        assert await read_back(spec, 2) == (1, {"total": 1})
        await old.close()

    asyncio.run(scenario())


# --- the log on shared storage ---------------------------------------------------------------

WORKER = """
import asyncio, json, sys
from nfvha.sdk.stores import StoreUnavailable, StoreRefused, open_store

async def main() -> None:
    store = open_store({"mode": "shared_storage", "path": sys.argv[1]})
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "claim":
                reply = ["ok", *map(json.dumps, await store.claim(int(args[0])))]
            else:
                epoch, version = int(args[0]), int(args[1])
                await store.write(epoch, version, {"total": version, "pid": "w"})
                reply = ["ok"]
        except (StoreRefused, StoreUnavailable) as exc:
            reply = [type(exc).__name__, str(exc)]
        print(" ".join(reply), flush=True)

asyncio.run(main())
"""


class Worker:
    """Another OS process writing the same log, one command at a time."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def do(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(tmp_path / "state.log") for _ in range(2)]
    yield started
    for worker in started:
        worker.close()


def test_shared_log_fences_a_writer_in_another_process(
    tmp_path: Path, workers: list[Worker]
) -> None:
    old, new = workers
    assert old.do("claim 1") == "ok 0 {}"
    assert old.do("write 1 1") == "ok"
    assert new.do("claim 2") == 'ok 1 {"total": 1, "pid": "w"}'
    assert old.do("write 1 2") == "StoreRefused stale epoch 1: the store holds epoch 2"
    assert new.do("write 2 3") == "ok"
    assert old.do("claim 1") == "StoreRefused stale epoch 1: the store holds epoch 2"
    records = records_on_disk(tmp_path / "state.log")
    assert [(r["v"], r["epoch"]) for r in records] == [(1, 1), (3, 2)]
    assert (tmp_path / "state.log.epoch").read_text().strip() == "2"


def test_shared_log_appends_after_what_another_process_appended(
    tmp_path: Path, workers: list[Worker]
) -> None:
    # Two processes of the same epoch (a holder and its reconnected self) take turns: each
    # append goes at the real end of the file, never over the other's record.
    one, two = workers
    assert one.do("claim 1") == "ok 0 {}"
    assert two.do("claim 1") == "ok 0 {}"
    for version in range(1, 11):
        assert (one if version % 2 else two).do(f"write 1 {version}") == "ok"
    records = records_on_disk(tmp_path / "state.log")
    assert [r["v"] for r in records] == list(range(1, 11))


def test_shared_log_appends_after_a_record_cut_by_a_dead_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.log"

    async def scenario() -> None:
        store = await claimed({"mode": "shared_storage", "path": str(path)}, 1)
        await store.write(1, 1, {"total": 1})
        with open(path, "ab") as f:  # another writer died halfway through a long append
            f.write(b'{"v":2,"epoch":1,"state":{"pad":"' + b"p" * 200)
        await store.write(1, 3, {"total": 3})
        await store.close()

    asyncio.run(scenario())
    assert [r["v"] for r in records_on_disk(path)] == [1, 3]  # every line a whole record


def test_shared_log_on_a_full_disk_fails_and_keeps_whole_records(small_disk: Path) -> None:  # noqa: F811
    spec = {"mode": "shared_storage", "path": str(small_disk / "state.log")}
    big = {"pad": "p" * 300}

    async def scenario() -> None:
        store = await claimed(spec, 1)
        filler = fill(small_disk, leave=4096)
        acked = 0
        for version in range(1, 1000):
            try:
                await store.write(1, version, {**big, "total": version})
            except StoreUnavailable as exc:
                assert "No space left" in str(exc)
                break
            acked = version
        else:
            raise AssertionError("the disk never filled")
        assert records_on_disk(small_disk / "state.log")[-1]["v"] == acked
        filler.unlink()
        await store.write(1, acked + 1, {"total": acked + 1})  # recovers by itself
        await store.close()
        assert await read_back(spec, 1) == (acked + 1, {"total": acked + 1})

    asyncio.run(scenario())


# --- etcd ------------------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_etcd_writes_go_on_with_one_member_of_three_killed(
    etcd_cluster: EtcdCluster, victim: str
) -> None:
    leader = etcd_cluster.leader()
    member = leader if victim == "leader" else (leader + 1) % 3
    # The killed member is the first endpoint: the store has to fail over to another one.
    endpoints = etcd_cluster.endpoints[member:] + etcd_cluster.endpoints[:member]
    spec = {"mode": "store", "endpoints": endpoints, "key": etcd_key()}

    async def scenario() -> None:
        store = await claimed(spec, 1)
        await store.write(1, 1, {"total": 1})
        etcd_cluster.kill(member)
        await store.write(1, 2, {"total": 2})
        await asyncio.gather(*(store.write(1, v, {"total": v}) for v in range(3, 13)))
        await store.close()
        assert await read_back(spec, 1) == (12, {"total": 12})

    try:
        asyncio.run(scenario())
    finally:
        etcd_cluster.start(member)


def test_etcd_without_a_reachable_endpoint_fails(etcd_cluster: EtcdCluster) -> None:
    nobody = [f"127.0.0.1:{port}" for port in free_tcp_ports(3)]  # nothing listens there
    spec = {"mode": "store", "endpoints": nobody, "key": etcd_key()}

    async def scenario() -> None:
        store = open_store(spec)
        async with asyncio.timeout(HANG_GUARD_S):
            with pytest.raises(StoreUnavailable, match="no etcd endpoint answered"):
                await store.claim(1)
            with pytest.raises(StoreUnavailable, match="no etcd endpoint answered"):
                await store.write(1, 1, {"total": 1})
        await store.close()

    asyncio.run(scenario())


def test_etcd_without_a_quorum_fails_then_recovers(etcd_cluster: EtcdCluster) -> None:
    spec = {"mode": "store", "endpoints": etcd_cluster.endpoints, "key": etcd_key()}

    async def scenario() -> None:
        store = await claimed(spec, 1)
        await store.write(1, 1, {"total": 1})
        try:
            etcd_cluster.kill(1)
            etcd_cluster.kill(2)
            async with asyncio.timeout(HANG_GUARD_S):
                with pytest.raises(StoreUnavailable, match="no etcd endpoint answered"):
                    await store.write(1, 2, {"total": 2})
        finally:
            await asyncio.to_thread(etcd_cluster.start, 1)
            await asyncio.to_thread(etcd_cluster.start, 2)
        # A write that timed out may still be applied later (raft keeps the proposal), so only
        # what is written now is known.
        await store.write(1, 3, {"total": 3})
        await store.close()
        assert await read_back(spec, 1) == (3, {"total": 3})

    asyncio.run(scenario())


# --- the spec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"mode": "disk", "path": "/tmp/x.log"},
        {"mode": "shared_storage"},
        {"mode": "shared_storage", "path": "relative/x.log"},
        {"mode": "shared_storage", "path": "/tmp/dir/"},
        {"mode": "shared_storage", "path": "/tmp/x.log", "extra": 1},
        {"mode": "store", "key": "/nfvha/d/v"},
        {"mode": "store", "endpoints": [], "key": "/nfvha/d/v"},
        {"mode": "store", "endpoints": "127.0.0.1:2379", "key": "/nfvha/d/v"},
        {"mode": "store", "endpoints": ["127.0.0.1"], "key": "/nfvha/d/v"},
        {"mode": "store", "endpoints": ["127.0.0.1:99999"], "key": "/nfvha/d/v"},
        {"mode": "store", "endpoints": [2379], "key": "/nfvha/d/v"},
        {"mode": "store", "endpoints": ["127.0.0.1:2379"]},
        {"mode": "store", "endpoints": ["127.0.0.1:2379"], "key": "nfvha/d/v"},
        ["mode", "store"],
    ],
    ids=repr,
)
def test_a_malformed_spec_is_a_value_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        open_store(bad)


def test_a_log_record_is_a_json_line_with_version_epoch_and_state(tmp_path: Path) -> None:
    path = tmp_path / "state.log"

    async def scenario() -> None:
        store = await claimed({"mode": "shared_storage", "path": str(path)}, 7)
        await store.write(7, 4, {"total": 4})
        await store.close()

    asyncio.run(scenario())
    assert json.loads(path.read_text()) == {"v": 4, "epoch": 7, "state": {"total": 4}}
    assert (tmp_path / "state.log.epoch").read_text() == "7\n"


def test_etcd_keys_hold_the_padded_epoch_and_the_record(etcd_cluster: EtcdCluster) -> None:
    key = etcd_key()
    spec = {"mode": "store", "endpoints": etcd_cluster.endpoints, "key": key}

    async def scenario() -> None:
        store = await claimed(spec, 7)
        await store.write(7, 4, {"total": 4})
        await store.close()

    asyncio.run(scenario())
    assert etcd_cluster.value(f"{key}/epoch") == b"00000000000000000007"
    record = etcd_cluster.value(f"{key}/state")
    assert record is not None
    assert json.loads(record) == {"v": 4, "epoch": 7, "state": {"total": 4}}
