"""The disk checkpoint store: durable appends, group commit, torn tails, compaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nfvha.drivers.store import DiskStore


def test_writes_survive_a_new_store_and_the_last_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.log"

    async def write_some() -> None:
        store = DiskStore(path)
        store.load()
        await asyncio.gather(*(store.write(v, 3, {"total": v}) for v in range(1, 50)))
        store.close()

    asyncio.run(write_some())
    assert DiskStore(path).load() == (49, 3, {"total": 49})


def test_concurrent_writes_are_grouped(tmp_path: Path) -> None:
    path = tmp_path / "c.log"

    async def burst() -> None:
        store = DiskStore(path)
        store.load()
        await asyncio.gather(*(store.write(v, 1, {"total": v}) for v in range(1, 101)))
        store.close()

    asyncio.run(burst())
    assert len(path.read_text().splitlines()) < 100  # fewer syncs than writes


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_text('{"v":1,"epoch":1,"state":{"total":1}}\n{"v":2,"epoch":1,"sta')
    assert DiskStore(path).load() == (1, 1, {"total": 1})
    assert path.read_text().count("\n") == 1  # compacted to the surviving record


def test_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    assert DiskStore(tmp_path / "sub" / "c.log").load() == (0, 0, {})
