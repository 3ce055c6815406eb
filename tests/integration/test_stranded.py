"""Nothing stranded: a VNFC waiting for its repair until the new active serves is restarted
when that new active fails too — here because a stranger holds the service port — instead of
staying stopped for ever. Every VNFC ends running or visibly escalated."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from nfvha.lab.experiment import vnf_active, wait_steady
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    example,
    free_udp_port,
    unique_name,
)
from tests.integration.support.runs import running_engine
from tests.integration.support.trace import dump_records
from tests.integration.support.waiting import wait_for


@pytest.mark.timeout(60)
def test_a_waiting_vnfc_is_not_stranded_when_its_successor_fails(tmp_path: Path) -> None:
    port = free_udp_port()
    dep = example(
        "2n",
        name=unique_name(),
        port=port,
        health=RELAXED_HEALTH,
        policies={"restart_max": 1, "cleanup_grace_ms": 50},
    )

    async def scenario() -> None:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await wait_steady(engine)
            active = vnf_active(engine, "counter")
            stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                # The port is free the instant the active dies; the stranger, spinning on bind,
                # takes it before the successor (which must first see the exit) can.
                grab = asyncio.create_task(asyncio.to_thread(take_port, stranger, port))
                await asyncio.sleep(0.05)
                os.kill(engine.procs.pid_of(active), signal.SIGKILL)
                assert await grab, "the stranger could not take the port"
                await wait_for(lambda: settled(engine), "every VNFC running or escalated")
            finally:
                stranger.close()
            states = {c["name"]: c["state"] for c in engine.status()["vnfs"][0]["vnfcs"]}
            recs = list(engine.trace.records)
            assert "stopped" not in states.values(), f"{states}\n{dump_records(recs)}"

    asyncio.run(scenario())


def take_port(sock: socket.socket, port: int, tries: int = 2_000_000) -> bool:
    for _ in range(tries):
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            continue
    return False


def settled(engine) -> bool:  # noqa: ANN001
    """No VNFC starting or being cleaned up; each running or escalated, none merely stopped
    while another is on its way (a stopped one with nothing coming is the defect)."""
    vnfcs = engine.status()["vnfs"][0]["vnfcs"]
    if any(c["state"] in ("starting", "failed") for c in vnfcs):
        return False
    return all(c["state"] in ("running", "escalated", "stopped") for c in vnfcs) and any(
        c["state"] == "escalated" for c in vnfcs
    )
