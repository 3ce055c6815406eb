"""A checkpoint disk that fills up: a write is acknowledged only when all of it is durable, the
consumer gets ERR (never silence), the manager reports the failure and clears it once writes
are durable again, and a restart continues from exactly what was acknowledged.

The disk is a real 64 KiB tmpfs (root only), filled up with a file that the test then removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from nfvha.drivers.store import DiskStore, StoreError
from nfvha.lab.experiment import wait_steady
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    example,
    free_udp_port,
    unique_name,
)
from tests.integration.support.runs import running_engine
from tests.integration.support.trace import dump_records, index
from tests.integration.support.waiting import wait_for


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up to about ``leave`` free bytes with a file; removing it frees the space."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"x" * max(0, free - leave))
    return filler


def records_on_disk(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines(keepends=True)]


def test_a_store_on_a_full_disk_never_acknowledges_a_cut_record(small_disk: Path) -> None:
    path = small_disk / "c.log"
    filler = fill(small_disk, leave=4096)
    big = {"total": 0, "pad": "p" * 300}  # about 330 bytes a record: the disk fills quickly

    async def until_full() -> int:
        store = DiskStore(path)
        store.load()
        acked = 0
        for version in range(1, 1000):
            try:
                await store.write(version, 1, {**big, "total": version})
            except StoreError:
                break
            acked = version
        else:
            raise AssertionError("the disk never filled")
        # Every byte on disk is a whole record, and the last one is the last acknowledged.
        assert records_on_disk(path)[-1]["v"] == acked
        # Space again: the store recovers by itself, without a restart.
        filler.unlink()
        await store.write(acked + 5, 1, {**big, "total": acked + 5})
        store.close()
        return acked

    acked = asyncio.run(until_full())
    assert records_on_disk(path)[-1]["v"] == acked + 5
    assert DiskStore(path).load()[0] == acked + 5


def test_loading_a_cut_log_on_a_full_disk_needs_no_space(small_disk: Path) -> None:
    path = small_disk / "c.log"
    path.write_bytes(b'{"v":1,"epoch":2,"state":{"total":1}}\n{"v":2,"epoch":2,"state":{"to')
    fill(small_disk, leave=0)
    with contextlib.suppress(OSError), open(small_disk / "more", "wb") as f:
        f.write(b"x" * 65536)  # the last bytes the filler could not take
    store = DiskStore(path)
    assert store.load() == (1, 2, {"total": 1})
    assert store.discarded > 0  # reported, and cut off the file
    assert path.read_bytes().endswith(b"}}\n")


def request(sock: socket.socket, address: tuple[str, int], text: str) -> bytes:
    sock.sendto(text.encode(), address)
    return sock.recv(2048)


@pytest.mark.timeout(90)
def test_full_disk_under_a_counter_refuses_reports_and_recovers(
    small_disk: Path, tmp_path: Path
) -> None:
    dep = example("none", name=unique_name(), port=free_udp_port(), health=RELAXED_HEALTH)
    host, _, port = dep.vnfs[0].service.address.rpartition(":")
    address = (host, int(port))
    log = small_disk / "checkpoints" / "counter.log"

    async def first_life() -> int:
        async with running_engine(dep, tmp_path, small_disk) as engine:
            await wait_steady(engine)
            # The log's last page has room for some more records; then the disk is full.
            assert await asyncio.to_thread(request_with_retry, address, "INC 1")
            filler = fill(small_disk, leave=0)
            acked, answers = await asyncio.to_thread(incs_until_refused, address)
            assert acked > 1, answers[-3:]
            assert answers[-1].startswith(b"ERR checkpoint store failed"), answers[-3:]
            # GET answers what is durable, never the refused increment.
            assert await asyncio.to_thread(get_total, address) == acked
            assert records_on_disk(log)[-1]["state"]["total"] == acked
            status = engine.status()["vnfs"][0]
            assert "No space left" in status["store_error"], status
            recs = engine.trace.records
            failed = index(recs, kind="event", name="StoreFailed")
            index(recs, failed, kind="message", name="ReportError", dst="vnfm")
            # Space again: the next increment is durable and the error is cleared.
            filler.unlink()
            reply = await asyncio.to_thread(request_with_retry, address, "INC 999")
            assert reply == f"OK 999 {acked + 1} counter-solo".encode(), reply
            await wait_for(lambda: not engine.status()["vnfs"][0]["store_error"], "a clear")
            recs = engine.trace.records
            back = index(recs, failed, kind="event", name="StoreRecovered")
            index(recs, back, kind="message", name="ClearError", dst="vnfm")
            assert engine.errors_open == {}, dump_records(list(recs))
            return acked + 1

    acked = asyncio.run(first_life())

    async def second_life() -> None:
        async with running_engine(dep, tmp_path, small_disk) as engine:
            await wait_steady(engine)
            assert await asyncio.to_thread(get_total, address) == acked

    asyncio.run(second_life())


def incs_until_refused(address: tuple[str, int]) -> tuple[int, list[bytes]]:
    """INC one after another until one is refused; every INC must be answered."""
    answers: list[bytes] = []
    acked = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)
        for seq in range(1, 5000):
            try:
                reply = request(sock, address, f"INC {seq}")
            except TimeoutError:
                raise AssertionError(f"INC {seq} got no answer at all (after {acked})") from None
            answers.append(reply)
            if reply.startswith(b"ERR"):
                return acked, answers
            acked = int(reply.split()[2])
    raise AssertionError("the disk never filled")


def request_with_retry(address: tuple[str, int], text: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)
        return request(sock, address, text)


def get_total(address: tuple[str, int]) -> int:
    return int(request_with_retry(address, "GET 1").split()[2])
