"""Use case 3: a stateful VNF without redundancy keeps its state on disk. A restarted VNFC,
and a restarted deployment, continue from the last acknowledged total."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from nfvha.lab.experiment import is_steady, wait_steady
from tests.integration.support.consumers import UdpClient
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    example,
    free_udp_port,
    unique_name,
)
from tests.integration.support.runs import running_engine
from tests.integration.support.trace import dump_records, index, select
from tests.integration.support.waiting import wait_for

VNFC = "counter-solo"


async def increments(client: UdpClient, count: int, start: int) -> int:
    """``count`` INCs one after another; each is acknowledged with the next total."""
    total = start
    for _ in range(count):
        answer = await client.request("INC")
        assert answer is not None, "an INC got no answer from a steady deployment"
        assert answer[0] == total + 1, f"acknowledged {total}, then got {answer}"
        total = answer[0]
    return total


@pytest.mark.timeout(60)
def test_restart_restores_checkpoint(tmp_path: Path) -> None:
    dep = example("none", name=unique_name(), port=free_udp_port(), health=RELAXED_HEALTH)
    address = dep.vnfs[0].service.address
    state_dir = tmp_path / "state"

    async def first_life() -> tuple[int, int]:
        async with running_engine(dep, tmp_path, state_dir) as engine:
            await wait_steady(engine)
            client = UdpClient(address)
            try:
                acked = await increments(client, 25, 0)
                old_pid = engine.procs.pid_of(VNFC)
                os.kill(old_pid, signal.SIGKILL)  # from outside: only the pidfd tells nfvha
                await wait_for(
                    lambda: engine.procs.pid_of(VNFC) not in (None, old_pid) and is_steady(engine),
                    "the counter to be restarted",
                )
                total, who = await client.get_until_answered()
                assert who == VNFC
                assert total >= acked, f"acknowledged {acked}, the restarted VNFC has {total}"
                acked = await increments(client, 5, total)
            finally:
                client.close()
            recs = engine.trace.records
            exited = index(recs, kind="event", name="ProcessExited", src=VNFC)
            isolated = index(recs, exited, kind="event", name="CleanupDone", src=VNFC, ok=True)
            restart = index(recs, isolated, kind="command", name="StartVnfc", dst=VNFC)
            index(recs, restart, kind="event", name="RoleConfirmed", src=VNFC, role="active")
            epochs = [r["data"]["epoch"] for r in select(recs, name="AssignRole", role="active")]
            assert epochs == sorted(set(epochs)) and len(epochs) == 2, dump_records(recs)
            return acked, epochs[-1]

    acked, last_epoch = asyncio.run(first_life())
    assert (state_dir / "checkpoints").is_dir()

    async def second_life() -> None:
        async with running_engine(dep, tmp_path, state_dir) as engine:
            await wait_steady(engine)
            recs = engine.trace.records
            loaded = index(recs, kind="note", name="CheckpointLoaded")
            assert recs[loaded]["data"]["state"]["total"] >= acked, dump_records(recs)
            client = UdpClient(address)
            try:
                total, _ = await client.get_until_answered()
                assert total >= acked, f"acknowledged {acked} before the restart, now {total}"
                await increments(client, 3, total)
            finally:
                client.close()
            # The fencing token continues above the one on disk: a new writer never reuses it.
            assign = index(recs, kind="command", name="AssignRole", role="active")
            assert recs[assign]["data"]["epoch"] > last_epoch, dump_records(recs)

    asyncio.run(second_life())
