"""The local coordinator: one leader at a time, released with its holder, no file left behind
after a deliberate stop, and never two leaders across a removal."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nfvha.runtime.leadership import LocalLock


def test_one_leader_at_a_time_and_the_next_leads_once_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "d.lock"
    first, second = LocalLock(path), LocalLock(path)
    assert first.try_lead() and first.try_lead()  # idempotent for its holder
    assert not second.try_lead()
    first.release()
    assert second.try_lead()
    second.release(remove=True)
    assert not path.exists()


def test_a_lock_taken_on_a_removed_file_does_not_lead(tmp_path: Path) -> None:
    """A standby that opened the file just before the leader removed it must not lead on the
    removed file while a newcomer leads on the new one."""
    path = tmp_path / "d.lock"
    leader = LocalLock(path)
    assert leader.try_lead()
    stale_fd = os.open(path, os.O_RDWR)  # the standby's open, racing the removal
    leader.release(remove=True)
    newcomer = LocalLock(path)
    assert newcomer.try_lead()
    late = LocalLock(path)
    assert not late.try_lead()
    os.close(stale_fd)
    newcomer.release(remove=True)


def test_a_standby_waits_and_gives_up_when_told(tmp_path: Path) -> None:
    path = tmp_path / "d.lock"
    leader, standby = LocalLock(path), LocalLock(path)
    assert leader.try_lead()

    async def scenario() -> tuple[bool, bool]:
        give_up = asyncio.Event()
        waiting = asyncio.ensure_future(standby.wait_to_lead(give_up))
        await asyncio.sleep(0.05)
        leader.release()  # the leader dies
        took = await asyncio.wait_for(waiting, 5)
        standby.release()
        other = LocalLock(path)
        assert other.try_lead()
        stop = asyncio.Event()
        stop.set()
        gave_up = await LocalLock(path).wait_to_lead(stop)
        other.release(remove=True)
        return took, gave_up

    assert asyncio.run(scenario()) == (True, False)
