"""Recover first, repair after: a VNFC restarted while the service is served starts below the
active's work (nice), and runs at everyone's priority once it is up."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from nfvha.lab.experiment import vnf_active, wait_steady
from tests.integration.support.deployments import example, free_udp_port, unique_name
from tests.integration.support.runs import running_engine
from tests.integration.support.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lowering a niceness needs root")


def nice_of(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_a_repair_starts_below_and_is_raised_once_up(tmp_path: Path) -> None:
    dep = example("2n", name=unique_name(), port=free_udp_port())

    async def scenario() -> None:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await wait_steady(engine)
            assert not [r for r in engine.trace.records if r["name"] == "StartedBelow"]
            failed = vnf_active(engine, "counter")
            os.kill(engine.procs.pid_of(failed), signal.SIGKILL)
            await wait_for(
                lambda: any(
                    r["name"] == "StartedBelow" and r.get("dst") == failed
                    for r in engine.trace.records
                ),
                "the repair started below the active",
            )
            await wait_steady(engine)  # the repaired VNFC is up again, as standby
            pid = engine.procs.pid_of(failed)
            assert pid is not None and nice_of(pid) == 0
            assert nice_of(engine.procs.pid_of(vnf_active(engine, "counter"))) == 0

    asyncio.run(scenario())
