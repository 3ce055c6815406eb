"""A manager taking over adopts the agents that reconnect, however soon they do.

The NFVI driver of a new leader listens, publishes where (for the external host agents), then
waits for the dead leader's agents to say hello again. An agent that polls the listener (a
guest dials every 20-50 ms) may say hello while the driver is still publishing: that agent
must be adopted too. Before the fix its hello came before the driver expected it, the driver
counted it as never come back, and removed its zone: a takeover killed a serving VM."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from nfvha.config import Nfvi
from nfvha.core.placement import Placement
from nfvha.drivers import tls
from nfvha.drivers.nfvi import NfviDriver
from nfvha.sdk.protocol import encode
from tests.integration.support.cgroups import cgroup_v2_writable
from tests.integration.support.deployments import free_tcp_port, unique_name

pytestmark = pytest.mark.skipif(
    not cgroup_v2_writable(), reason="the NFVI needs a writable cgroup v2 hierarchy"
)


def cluster(directory: Path) -> Path:
    tls.create_ca(directory)
    for member in ("manager", "host-1"):
        tls.issue_member(directory, member)
    return directory


async def say_hello_now(endpoint: dict[str, Any], directory: Path) -> asyncio.StreamWriter:
    """host-1's agent, as fast as it can be: dials and says hello the moment it is told where."""
    context = tls.client_context(directory, "host-1")
    reader, writer = await tls.open_connection(
        endpoint["address"], endpoint["port"], context, endpoint["server"]
    )
    writer.write(encode("hello", kind="host", name="host-1", pid=os.getpid()))
    await writer.drain()
    return writer


def test_an_agent_saying_hello_while_the_leader_publishes_is_adopted(tmp_path: Path) -> None:
    directory = cluster(tmp_path / "cluster")
    spec = Nfvi(
        transport="tls",
        cluster_dir=str(directory),
        host_agents="external",
        port=free_tcp_port(),
    )
    placement = Placement(("host-1",), {}, {}, {}, {})
    notes: list[tuple[str, str]] = []
    driver = NfviDriver(
        unique_name("adopt"),
        placement,
        spec,
        tmp_path / "nfvi.sock",
        lambda event: None,
        lambda name, why: notes.append((name, why)),
    )
    driver.use_network((None, "127.0.0.1"), {}, directory)
    agent: list[asyncio.StreamWriter] = []

    async def publish(endpoint: dict[str, Any]) -> None:
        # The agent's hello is read while the driver still awaits this publication.
        agent.append(await say_hello_now(endpoint, directory))
        async with asyncio.timeout(10):
            while ("host", "host-1") not in driver.links:
                await asyncio.sleep(0.001)

    driver.on_listening = publish

    async def take_over() -> list[str]:
        try:
            async with asyncio.timeout(20):
                return await driver.start(adopt=True)
        finally:
            for writer in agent:
                writer.close()
            await driver.shutdown()

    adopted = asyncio.run(take_over())
    assert adopted == ["host-1"], notes
    assert not [n for n in notes if n[0] == "LeftoverRemoved"], notes
