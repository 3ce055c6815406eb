"""Stopping a deployment stops every process it started, whatever state they are in."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from nfvha.lab.experiment import wait_steady
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    deployment,
    example,
    free_udp_port,
    plain_counter,
    unique_name,
)
from tests.integration.support.processes import kill_and_reap, pid_alive, processes_of
from tests.integration.support.runs import running_engine
from tests.integration.support.trace import select


@pytest.mark.timeout(60)
def test_shutdown_stops_a_hung_vnfc(tmp_path: Path, runtime_dir: Path) -> None:
    """A stopped (SIGSTOP) process ignores SIGTERM; shutdown must still get rid of it."""
    dep = example("2n", name=unique_name(), port=free_udp_port(), health=RELAXED_HEALTH)

    async def scenario() -> list[int]:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await wait_steady(engine)
            pids = [engine.procs.pid_of(n) for n in ("counter-a", "counter-b")]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
        assert select(engine.trace.records, kind="note", name="DeploymentStopped")
        return pids

    pids = asyncio.run(scenario())
    assert not [p for p in pids if pid_alive(p)]
    assert processes_of(runtime_dir) == []
    assert not (runtime_dir / dep.name).exists()


ATTEMPTS = 20


@pytest.mark.timeout(120)
def test_shutdown_while_a_vnfc_starts_leaves_no_process(tmp_path: Path, runtime_dir: Path) -> None:
    address = f"127.0.0.1:{free_udp_port()}"
    dep = deployment(plain_counter(address, {"health_check": {"kind": "udp"}}))

    async def scenario() -> bool:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await asyncio.sleep(0)  # the start task runs into the spawn; stop right then
            return bool(select(engine.trace.records, name="ProcessStarted"))

    # The stop must land while the spawn is under way: a race, so it is tried a bounded number
    # of times until it does; every attempt must leave nothing.
    for _ in range(ATTEMPTS):
        started_before_stop = asyncio.run(scenario())  # also joins the spawn thread
        leftovers = processes_of(runtime_dir)
        kill_and_reap(leftovers)
        assert leftovers == [], f"processes left running after shutdown: {leftovers}"
        if not started_before_stop:
            return
    pytest.fail(f"the spawn finished before the stop in all {ATTEMPTS} attempts: nothing tested")
