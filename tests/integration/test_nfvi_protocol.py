"""The NFVI protocol checked on both ends: lines that are not messages of nfvha.agents.protocol,
or not the sender's to send, are refused and traced, never acted on, and the deployment keeps
working; an agent refuses a malformed command from its driver and lives on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nfvha.lab.experiment import is_steady, vnf_active, wait_steady
from nfvha.sdk.protocol import encode
from tests.integration.support.cgroups import cgroup_v2_writable, leftover_cgroups
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    deployment,
    free_udp_port,
    unique_name,
)
from tests.integration.support.processes import reap_zombie_children
from tests.integration.support.runs import running_engine
from tests.integration.support.trace import dump_records, find, select
from tests.integration.support.waiting import wait_for

VNF = "counter"


def two_hosts() -> dict:
    return {
        "name": unique_name("nf"),
        "hosts": [{"name": "host-1"}, {"name": "host-2"}],
        "vnfs": [
            {
                "name": VNF,
                "redundancy": {"model": "2n"},
                "service": {"name": "count", "address": f"127.0.0.1:{free_udp_port()}"},
                "vnfcs": [
                    {"name": "vnfc-1", "command": "nfvha-counter"},
                    {"name": "vnfc-2", "command": "nfvha-counter"},
                ],
                "policies": {"health_check": RELAXED_HEALTH},
            }
        ],
    }


@pytest.mark.timeout(90)
@pytest.mark.skipif(not cgroup_v2_writable(), reason="the NFVI needs a writable cgroup v2")
def test_garbage_on_the_nfvi_socket_is_refused_traced_and_not_acted_on(tmp_path: Path) -> None:
    dep = deployment(two_hosts())

    async def scenario() -> None:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await wait_steady(engine)
            nfvi = engine.nfvi
            assert nfvi is not None and engine.placement is not None
            active = vnf_active(engine, VNF)
            vm = engine.placement.vnfc_vm[active]
            host_link = nfvi.links[("host", nfvi.vm_host[vm])]
            lines = [
                b"garbage\n",
                b'{"t": "hello", "kind": "host"}\n',
                # Acted on, these would take host-1's place, or fail the active's VM.
                encode("hello", kind="host", name="host-1", pid=-1),
                encode("vm_exited", name=vm, pid=1, status=0),
            ]
            reader, writer = await asyncio.open_unix_connection(str(nfvi.socket_path))
            for line in lines:
                writer.write(line)
            await writer.drain()

            def refused() -> list:
                return select(engine.trace.records, kind="note", name="MessageRefused", src="nfvi")

            await wait_for(lambda: len(refused()) == len(lines), "the refusals traced")
            writer.close()
            whys = [r["why"] for r in refused()]
            assert "hello.pid: Input should be greater than 0" in whys[2], whys
            assert "vm_exited before hello" in whys[3], whys

            # Nothing acted on: the links are the agents', and three heartbeat timeouts later
            # no VM or host has failed.
            await asyncio.sleep(
                3 * dep.nfvi.heartbeat_interval_ms * dep.nfvi.heartbeat_misses / 1000
            )
            assert nfvi.links[("host", nfvi.vm_host[vm])] is host_link
            ctx = dump_records(engine.trace.records)
            assert not select(engine.trace.records, name="VmFailed"), ctx
            assert not select(engine.trace.records, name="HostFailed"), ctx
            assert is_steady(engine) and vnf_active(engine, VNF) == active, ctx

            # ... and the driver still hears its agents: a crashed VM is repaired.
            mark = len(engine.trace.records)
            engine.inject("vm-crash", vm)

            def repaired() -> bool:
                after = engine.trace.records[mark:]
                return (
                    is_steady(engine) and find(after, kind="event", name="VmUp", src=vm) is not None
                )

            await wait_for(repaired, "the crashed VM repaired")

    try:
        asyncio.run(scenario())
    finally:
        reap_zombie_children()
        assert not leftover_cgroups([dep.name])


@pytest.mark.timeout(60)
def test_an_agent_refuses_a_malformed_command_and_lives_on(runtime_dir: Path, tmp_path) -> None:
    """A guest agent against a stand-in for the driver: garbage, a command for a host agent and
        a start_vnfc with a bad env are refused (on its stderr); a good start_vnfc still works; when
    the driver's connection goes, the agent reconnects."""
    sock = runtime_dir / "nfvi.sock"
    ran = tmp_path / "ran"

    async def scenario() -> str:
        got: asyncio.Queue[dict] = asyncio.Queue()
        connected: asyncio.Future[asyncio.StreamWriter] = asyncio.Future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not connected.done():
                connected.set_result(writer)
            while line := await reader.readline():
                msg = json.loads(line)
                if msg["t"] != "hb":
                    await got.put(msg)

        server = await asyncio.start_unix_server(serve, str(sock))
        agent = subprocess.Popen(
            [sys.executable, "-m", "nfvha.agents.agent", "guest", "vm-1", str(sock), "50"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            writer = await asyncio.wait_for(connected, 10)
            assert (await asyncio.wait_for(got.get(), 10))["t"] == "hello"
            touch = [sys.executable, "-c", f"open({str(ran)!r}, 'w')"]
            writer.write(b"garbage\n")
            writer.write(encode("start_vm", token=1, vm="vm-2", cgroup="/x", nice=0))
            writer.write(
                encode("start_vnfc", token=1, req=1, vnfc="a", argv=touch, env={"A": 1}, cwd="/")
            )
            writer.write(
                encode("start_vnfc", token=1, req=2, vnfc="b", argv=touch, env={}, cwd="/")
            )
            started = await asyncio.wait_for(got.get(), 10)
            assert started["t"] == "vnfc_started" and started["req"] == 2, started
            exited = await asyncio.wait_for(got.get(), 10)
            assert exited == {"t": "vnfc_exited", "name": "b", "pid": started["pid"], "status": 0}
            assert agent.poll() is None  # alive after the refusals
            writer.close()  # the driver gone: the agent outlives it and says hello again
            assert (await asyncio.wait_for(got.get(), 10))["t"] == "hello"
            agent.terminate()
            return await asyncio.to_thread(lambda: agent.communicate(timeout=10)[1])
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            server.close()

    stderr = asyncio.run(scenario())
    assert ran.exists()
    refusals = [line for line in stderr.splitlines() if "guest agent vm-1: refused:" in line]
    assert len(refusals) == 3, stderr
    assert "start_vm is not for a guest agent" in refusals[1]
    assert "start_vnfc.env.A: Input should be a valid string" in refusals[2]


@pytest.mark.timeout(60)
def test_an_agent_refuses_a_command_of_an_older_leader_by_its_fencing_token(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """A replayed or late command of a deposed leader (an older token than one the agent has
    obeyed) is refused at the agent, answered vnfc_failed with the reason, logged, and never
    executed; the current leader's commands, and a newer one's, are."""
    sock = runtime_dir / "nfvi.sock"

    async def scenario() -> tuple[list[dict], str]:
        got: asyncio.Queue[dict] = asyncio.Queue()
        connected: asyncio.Future[asyncio.StreamWriter] = asyncio.Future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connected.set_result(writer)
            while line := await reader.readline():
                msg = json.loads(line)
                if msg["t"] not in ("hb", "hello", "vnfc_exited"):
                    await got.put(msg)

        server = await asyncio.start_unix_server(serve, str(sock))
        agent = subprocess.Popen(
            [sys.executable, "-m", "nfvha.agents.agent", "guest", "vm-1", str(sock), "50"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            writer = await asyncio.wait_for(connected, 10)
            answers = []
            for req, token in ((1, 7), (2, 5), (3, 7), (4, 9), (5, 8)):
                touch = [sys.executable, "-c", f"open({str(tmp_path / str(req))!r}, 'w')"]
                cmd = encode(
                    "start_vnfc", token=token, req=req, vnfc=f"c{req}", argv=touch, env={}, cwd="/"
                )
                writer.write(cmd)
                answers.append(await asyncio.wait_for(got.get(), 10))
            agent.terminate()
            return answers, await asyncio.to_thread(lambda: agent.communicate(timeout=10)[1])
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            server.close()

    answers, stderr = asyncio.run(scenario())
    assert [a["t"] for a in answers] == [
        "vnfc_started",
        "vnfc_failed",
        "vnfc_started",
        "vnfc_started",
        "vnfc_failed",
    ], answers
    assert answers[1]["reason"] == "stale managers leader: token 5 is older than 7"
    assert answers[4]["reason"] == "stale managers leader: token 8 is older than 9"
    refusals = [line for line in stderr.splitlines() if "event=command-refused" in line]
    assert len(refusals) == 2 and "agent=vm-1" in refusals[0] and "token=5" in refusals[0]
    ran = {int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()}
    assert ran == {1, 3, 4}  # the refused commands were never executed
