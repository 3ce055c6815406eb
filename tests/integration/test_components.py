"""The component side of the manager: what a VNFC may say on the component socket, who may
write checkpoints, and components that do not link the SDK at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from nfvha.lab.experiment import is_steady, vnf_active, wait_steady
from nfvha.runtime.control import request
from nfvha.runtime.engine import HELLO_LINE
from tests.integration.support.consumers import UdpClient
from tests.integration.support.deployments import (
    RELAXED_HEALTH,
    customize,
    deployment,
    example,
    example_raw,
    free_udp_port,
    plain_counter,
    unique_name,
)
from tests.integration.support.processes import pid_alive
from tests.integration.support.runs import running_engine
from tests.integration.support.trace import dump_records, index, select
from tests.integration.support.waiting import PATIENCE_S, wait_for

STALE_WRITER = Path(__file__).parent / "components" / "stale_writer.py"


# --- malformed messages -------------------------------------------------------------------------


async def answer_to(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes):
    writer.write(line)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), PATIENCE_S)
    assert answer, f"the manager closed the connection instead of answering {line[:60]!r}"
    return json.loads(answer)


@pytest.mark.timeout(60)
def test_malformed_messages_are_refused(tmp_path: Path) -> None:
    dep = example("2n", name=unique_name(), port=free_udp_port(), health=RELAXED_HEALTH)
    address = dep.vnfs[0].service.address

    async def scenario() -> None:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await wait_steady(engine)
            active = vnf_active(engine, "counter")
            (standby,) = [n for n in ("counter-a", "counter-b") if n != active]
            pids = {n: engine.procs.pid_of(n) for n in (active, standby)}
            client = UdpClient(address)
            total = (await client.request("INC"))[0]

            # Before hello, a bad line is refused and the connection dropped at once.
            cases = [
                (b"this is not json\n", "not JSON"),
                (b"[1, 2]\n", "expected an object with a string 't'"),
                (b"\xff\xfe\n", "not JSON"),
                (b'{"t": "bogus"}\n', "unknown message type 'bogus'"),
                (b'{"t": "hello", "vnfc": "counter-a", "pid": "1"}\n', "field 'pid' must be int"),
                (b'{"t": "hello", "vnfc": "nope", "pid": 1}\n', "unknown VNFC 'nope'"),
                (
                    b'{"t": "hello", "vnfc": "%s", "pid": 1}\n' % standby.encode(),
                    "is not a process nfvha started for",
                ),
                # Claiming the real pid does not help: the kernel says who the peer is.
                (
                    b'{"t": "hello", "vnfc": "%s", "pid": %d}\n' % (active.encode(), pids[active]),
                    "is not a process nfvha started for",
                ),
                (b'{"t": "role_ok", "role": "active", "epoch": 99}\n', "role_ok before hello"),
                (b'{"t": "error", "reason": "fake"}\n', "error before hello"),
            ]
            for line, expected in cases:
                reader, writer = await asyncio.open_unix_connection(str(engine.component_socket))
                answer = await answer_to(reader, writer, line)
                assert answer["t"] == "refused" and expected in answer["reason"], (line, answer)
                assert "connection dropped" in answer["reason"], answer
                assert await asyncio.wait_for(reader.read(), PATIENCE_S) == b""
                writer.close()

            # A checkpoint write before hello, with the current epoch: refused, state untouched.
            epoch = engine.vnfs["counter"].manager.epoch
            reader, writer = await asyncio.open_unix_connection(str(engine.component_socket))
            write = {"t": "ckpt_write", "req": 1, "epoch": epoch, "updates": {"total": 999999}}
            answer = await answer_to(reader, writer, json.dumps(write).encode() + b"\n")
            assert answer["t"] == "refused" and "ckpt_write before hello" in answer["reason"]
            writer.close()

            # A line longer than the limit (before hello, a small one): refused, and that
            # connection (only) is dropped. (A far longer one is reset unread: test_hostile_peers.)
            reader, writer = await asyncio.open_unix_connection(str(engine.component_socket))
            writer.write(b"x" * (HELLO_LINE + 100) + b"\n")
            with contextlib.suppress(ConnectionError):  # it may hang up while we still write
                await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.readline(), PATIENCE_S))
            assert answer["t"] == "refused" and "line too long" in answer["reason"], answer
            assert await asyncio.wait_for(reader.read(), PATIENCE_S) == b""
            writer.close()

            # Every refusal is in the trace, with its reason.
            refused = select(engine.trace.records, kind="note", name="MessageRefused")
            assert len(refused) == len(cases) + 2, dump_records(engine.trace.records)
            assert all(r["why"] for r in refused)

            # The manager did not crash, nothing failed over, the service still serves.
            answer = await client.request("INC")
            assert answer is not None and answer == (total + 1, active), answer
            assert (await client.request("GET")) == (total + 1, active)
            client.close()
            status = await asyncio.to_thread(
                request, engine.runtime_dir / "control.sock", {"op": "status"}
            )
            assert status["vnfs"][0]["service"]["active"] == [active]
            assert is_steady(engine)
            assert {n: engine.procs.pid_of(n) for n in pids} == pids
            assert set(engine.links) == {active, standby}
            assert not select(engine.trace.records, name="Cleanup")
            assert not select(engine.trace.records, name="InternalError")

    asyncio.run(scenario())


# --- who may write checkpoints --------------------------------------------------------------


def results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def outcome(rows: list[dict], vnfc: str, epoch: int, case: str) -> dict | None:
    for row in rows:
        if row["vnfc"] == vnfc and row["epoch"] == epoch and row["case"] == case:
            return row
    return None


@pytest.mark.timeout(60)
def test_checkpoint_write_with_stale_epoch_is_refused(tmp_path: Path) -> None:
    """Only the current active with the current epoch (fencing token) writes the state; after a
    failover the old active's epoch is stale for everyone."""
    out = tmp_path / "writes.jsonl"
    vnfcs = [
        {"name": n, "command": [sys.executable, str(STALE_WRITER)], "env": {"STALE_OUT": str(out)}}
        for n in ("writer-a", "writer-b")
    ]
    raw = customize(
        example_raw("2n"),
        name=unique_name(),
        port=free_udp_port(),
        vnf={"vnfcs": vnfcs, "state_sync": "manager"},  # the manager's fencing, as tested here
        health=RELAXED_HEALTH,
    )
    dep = deployment(raw)

    def expect_round(rows: list[dict], active: str, standby: str, epoch: int) -> bool:
        return all(
            outcome(rows, v, epoch, case)
            for v, case in [
                (active, "stale-epoch"),
                (active, "future-epoch"),
                (active, "current-epoch"),
                (standby, "as-standby"),
            ]
        )

    def check_round(rows: list[dict], active: str, standby: str, epoch: int) -> None:
        for case in ("stale-epoch", "future-epoch"):
            row = outcome(rows, active, epoch, case)
            assert row["result"] == "refused" and "not the writer" in row["reason"], row
        assert outcome(rows, active, epoch, "current-epoch")["result"] == "ok"
        row = outcome(rows, standby, epoch, "as-standby")
        assert row["result"] == "refused" and "not the writer" in row["reason"], row

    async def scenario() -> None:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            vnf = engine.vnfs["counter"]
            await wait_steady(engine)
            first = vnf_active(engine, "counter")
            (second,) = [n for n in ("writer-a", "writer-b") if n != first]
            epoch1 = vnf.manager.epoch
            await wait_for(
                lambda: expect_round(results(out), first, second, epoch1), "the first writes"
            )
            check_round(results(out), first, second, epoch1)
            assert vnf.checkpoints.state["who"] == f"{first}:current-epoch"
            refused = select(engine.trace.records, kind="message", name="CheckpointRefused")
            assert sorted(r["dst"] for r in refused) == sorted([first, first, second])
            assert all("not the writer" in r["why"] for r in refused)

            # Failover: the new active's stale epoch is exactly the old active's token.
            engine.inject("vnfc-crash", first)
            await wait_for(lambda: vnf.manager.epoch > epoch1 and is_steady(engine), "the failover")
            epoch2 = vnf.manager.epoch
            assert vnf_active(engine, "counter") == second
            await wait_for(
                lambda: expect_round(results(out), second, first, epoch2), "the second writes"
            )
            rows = results(out)
            check_round(rows, second, first, epoch2)
            stale = outcome(rows, second, epoch2, "stale-epoch")
            assert f"epoch {epoch2 - 1}; writer is {second} (epoch {epoch2})" in stale["reason"]
            assert vnf.checkpoints.state["who"] == f"{second}:current-epoch"
            # The refusals did not count as failures of the writers.
            assert not select(engine.trace.records, name="ErrorReported")
            assert len(select(engine.trace.records, name="Cleanup")) == 1

    asyncio.run(scenario())


# --- components without the SDK ---------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["vnfc-crash", "vnfc-hang"])
def test_component_without_sdk_is_restarted(fault: str, tmp_path: Path) -> None:
    name, port = unique_name(), free_udp_port()
    address = f"127.0.0.1:{port}"
    vnfc = "plain-1"
    raw = plain_counter(
        address,
        {
            "health_check": {
                "kind": "udp",
                "send": "GET 0",
                "expect": "OK",
                "interval_ms": 150,
                "timeout_ms": 150,
                "failure_threshold": 2,
            },
            "cleanup_grace_ms": 200,
        },
        name,
    )
    dep = deployment(raw)

    async def scenario() -> None:
        async with running_engine(dep, tmp_path, tmp_path / "state") as engine:
            await wait_steady(engine)
            client = UdpClient(address)
            try:
                assert (await client.get_until_answered())[1] == "standalone"
                old = engine.procs.pid_of(vnfc)
                os.kill(old, signal.SIGKILL if fault == "vnfc-crash" else signal.SIGSTOP)
                await wait_for(
                    lambda: engine.procs.pid_of(vnfc) not in (None, old) and is_steady(engine),
                    "the component to be restarted",
                )
                new = engine.procs.pid_of(vnfc)
                assert (await client.get_until_answered())[1] == "standalone"
                answer = await client.request("INC")
                assert answer is not None and answer[1] == "standalone"
            finally:
                client.close()
            assert not pid_alive(old)

            recs = engine.trace.records
            context = dump_records(recs)
            detected = index(recs, kind="event", src=vnfc, why_has="isolating")
            expected = "ProcessExited" if fault == "vnfc-crash" else "HealthCheckFailed"
            assert recs[detected]["name"] == expected, context
            if fault == "vnfc-hang":
                assert "2 health checks missed in a row" in recs[detected]["why"], context
            isolated = index(recs, detected, kind="event", name="CleanupDone", src=vnfc, ok=True)
            restart = index(recs, isolated, kind="command", name="StartVnfc", dst=vnfc)
            started = index(recs, restart, kind="event", name="ProcessStarted", pid=new)
            # Without the SDK the first good health check is the registration.
            registered = index(
                recs, started, kind="event", name="HealthCheckPassed", src=vnfc, why_has="is up"
            )
            assign = index(recs, registered, kind="command", name="AssignRole", role="active")
            confirmed = index(recs, assign, kind="event", name="RoleConfirmed", src=vnfc)
            cleared = index(recs, detected, kind="message", name="ClearError", dst="vnfm")
            assert confirmed < cleared, context
            assert index(recs, detected, kind="message", name="ReportError") < isolated

    asyncio.run(scenario())
