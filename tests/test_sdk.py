"""The component SDK outlives its manager: it reconnects and resumes with what it holds, keeps
its role only while its lease holds (fencing itself once it expires), refuses checkpoints while
there is no manager, and ignores what it does not understand. Against a fake manager: a Unix
socket server in the test's own event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import nfvha.sdk
from nfvha.sdk import Assignment, CheckpointRefused, Component
from nfvha.sdk.protocol import encode

WAIT_S = 10.0  # a bound on waiting for an outcome, never a measurement
ASSIGN: dict[str, Any] = {
    "role": "active",
    "epoch": 3,
    "state": {"total": 5},
    "address": "127.0.0.1:7700",
    "reuse_port": False,
}


class Peer:
    """The fake manager's end of one component connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, kind: str, /, **fields: Any) -> None:
        self.writer.write(encode(kind, **fields))

    def send_raw(self, line: bytes) -> None:
        self.writer.write(line)

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None once the component has closed the connection."""
        line = await asyncio.wait_for(self.reader.readline(), WAIT_S)
        return json.loads(line) if line else None

    def close(self) -> None:
        self.writer.close()


class FakeManager:
    def __init__(self, path: str) -> None:
        self.path = path
        self.server: asyncio.Server | None = None
        self.peers: list[Peer] = []
        self.hellos: asyncio.Queue[tuple[dict[str, Any], Peer]] = asyncio.Queue()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self.peers.append(peer)
        hello = await peer.receive()
        if hello is not None:
            await self.hellos.put((hello, peer))

    async def hello(self) -> tuple[dict[str, Any], Peer]:
        return await asyncio.wait_for(self.hellos.get(), WAIT_S)

    async def stop(self) -> None:
        """The manager is gone: no server, no socket file, every connection closed."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for peer in self.peers:
            peer.close()
        self.peers.clear()
        if os.path.exists(self.path):
            os.unlink(self.path)


class Fences:
    """on_fence: records what the component held when it was called."""

    def __init__(self) -> None:
        self.component: Component | None = None
        self.seen: list[tuple[str | None, bool]] = []  # (its role then, connected then)
        self.called = asyncio.Event()

    async def __call__(self) -> None:
        comp = self.component
        assert comp is not None
        self.seen.append((comp.assignment.role if comp.assignment else None, comp.connected))
        self.called.set()


async def no_role_work(assignment: Assignment) -> None:
    pass


def run(scenario: Callable[[FakeManager, Component, Fences], Awaitable[None]]) -> None:
    """Run a scenario with a started fake manager and a component connected to it; stop both
    and remove the socket's directory afterwards."""

    async def main(path: str) -> None:
        fake = FakeManager(path)
        await fake.start()
        fences = Fences()
        comp = Component(path, "vnfc-a", on_role=no_role_work, on_fence=fences)
        fences.component = comp
        try:
            await comp.connect()
            await scenario(fake, comp, fences)
        finally:
            comp.close()
            await fake.stop()

    with tempfile.TemporaryDirectory(prefix="nfvha-sdk-") as tmp:
        asyncio.run(main(os.path.join(tmp, "manager.sock")))


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


async def assign(peer: Peer, **changes: Any) -> None:
    fields = {**ASSIGN, **changes}
    peer.send("assign", **fields)
    assert await peer.receive() == {"t": "role_ok", "role": fields["role"], "epoch": 3}


def resume(hello: dict[str, Any]) -> dict[str, Any]:
    assert hello["t"] == "hello" and hello["vnfc"] == "vnfc-a" and hello["pid"] == os.getpid()
    return hello["resume"]


# --- connection loss --------------------------------------------------------------------------


def test_connection_loss_keeps_the_role_and_resumes_it() -> None:
    async def scenario(fake: FakeManager, comp: Component, fences: Fences) -> None:
        first, peer = await fake.hello()
        assert "resume" not in first
        await assign(peer, lease_ms=60_000)
        write = asyncio.ensure_future(comp.checkpoint({"total": 6}))
        msg = await peer.receive()
        assert msg is not None and msg["t"] == "ckpt_write"
        peer.send("ckpt_done", req=msg["req"])
        await write

        peer.close()  # the manager's end of the connection goes away
        second, peer = await fake.hello()
        assert resume(second) == {"role": "active", "epoch": 3, "state": {"total": 6}}
        assert comp.assignment is not None and comp.assignment.role == "active"
        assert comp.closed is not None and not comp.closed.done()
        assert fences.seen == []
        peer.send("ping", id=1)  # the new connection is the one it answers on
        assert await peer.receive() == {"t": "pong", "id": 1, "ok": True}

        comp.close()  # told to stop: closed resolved, connection closed, no reconnecting
        assert comp.closed.done()
        assert await peer.receive() is None
        assert fake.hellos.empty()

    run(scenario)


def test_checkpoint_without_a_manager_is_refused_at_once() -> None:
    async def scenario(fake: FakeManager, comp: Component, fences: Fences) -> None:
        _, peer = await fake.hello()
        await assign(peer, lease_ms=60_000)
        in_flight = asyncio.ensure_future(comp.checkpoint({"total": 6}))
        msg = await peer.receive()
        assert msg is not None and msg["t"] == "ckpt_write"

        await fake.stop()  # never answered
        with pytest.raises(CheckpointRefused, match="no manager") as refused:
            await asyncio.wait_for(in_flight, WAIT_S)
        assert refused.value.state == {"total": 5}  # what was last acknowledged
        assert comp.state == {"total": 5}
        assert not comp.connected

        attempt = comp.checkpoint({"total": 6})
        with pytest.raises(CheckpointRefused, match="no manager"):
            attempt.send(None)  # raised before it ever waits
        assert comp.state == {"total": 5}

        await fake.start()  # a manager again: the resume carries the acknowledged state
        hello, _ = await fake.hello()
        assert resume(hello) == {"role": "active", "epoch": 3, "state": {"total": 5}}

    run(scenario)


# --- the lease --------------------------------------------------------------------------------


def test_active_without_a_manager_fences_itself_when_its_lease_expires(capsys) -> None:
    async def scenario(fake: FakeManager, comp: Component, fences: Fences) -> None:
        _, peer = await fake.hello()
        await assign(peer, lease_ms=100)
        await fake.stop()

        await asyncio.wait_for(fences.called.wait(), WAIT_S)
        assert fences.seen == [("active", False)]  # called while still active, then dropped
        assert comp.assignment == dataclasses.replace(
            Assignment("active", 3, "127.0.0.1", 7700, False), role="none"
        )
        assert comp.closed is not None and not comp.closed.done()
        assert "lease expired: stopped serving as active" in capsys.readouterr().err

        await fake.start()  # it kept trying to reconnect
        hello, _ = await fake.hello()
        assert resume(hello) == {"role": "none", "epoch": 3, "state": {"total": 5}}

    run(scenario)


def test_standby_without_a_manager_drops_to_no_role() -> None:
    async def scenario(fake: FakeManager, comp: Component, fences: Fences) -> None:
        _, peer = await fake.hello()
        await assign(peer, role="standby", lease_ms=100)
        await fake.stop()
        await wait_until(
            lambda: comp.assignment is not None and comp.assignment.role == "none",
            "the standby to drop its role",
        )
        assert fences.seen == []  # it served nothing: nothing to stop

    run(scenario)


def test_lines_from_the_manager_renew_the_lease() -> None:
    async def scenario(fake: FakeManager, comp: Component, fences: Fences) -> None:
        _, peer = await fake.hello()
        await assign(peer, lease_ms=200)
        for _ in range(4 * 5):  # five leases' worth, renewed every quarter
            await asyncio.sleep(0.05)
            peer.send("lease", ms=200)
        assert fences.seen == []
        assert comp.assignment is not None and comp.assignment.role == "active"

        # Quiet now, the connection open: the lease was given, so it expires all the same, and
        # the component drops the connection to say so in its next hello.
        await asyncio.wait_for(fences.called.wait(), WAIT_S)
        assert fences.seen == [("active", True)]
        assert await peer.receive() is None
        hello, _ = await fake.hello()
        assert resume(hello)["role"] == "none"

    run(scenario)


def test_without_a_lease_from_the_manager_an_open_connection_holds_the_role(
    monkeypatch,
) -> None:
    """A manager that sends no lease and no pings (health checks not by the SDK) is not dead:
    only a connection that is down lets the default lease expire."""
    monkeypatch.setattr(nfvha.sdk, "DEFAULT_LEASE_MS", 100.0)

    async def scenario(fake: FakeManager, comp: Component, fences: Fences) -> None:
        _, peer = await fake.hello()
        await assign(peer)  # no lease_ms
        await asyncio.sleep(0.5)  # five default leases of silence
        assert fences.seen == []

        peer.close()  # the connection is lost but it reconnects at once: still held
        hello, peer = await fake.hello()
        assert resume(hello)["role"] == "active"
        await asyncio.sleep(0.5)
        assert fences.seen == []

        await fake.stop()  # no manager: the lease runs out
        await asyncio.wait_for(fences.called.wait(), WAIT_S)
        assert fences.seen == [("active", False)]

    run(scenario)


# --- what it does not understand --------------------------------------------------------------


def test_unknown_and_malformed_messages_are_ignored() -> None:
    async def scenario(fake: FakeManager, comp: Component, fences: Fences) -> None:
        _, peer = await fake.hello()
        peer.send("warp", speed=9)
        peer.send_raw(b"not json\n")
        peer.send_raw(b"[1, 2]\n")
        peer.send("ping")  # no id
        peer.send("assign", role="active")  # most of it missing
        peer.send("lease", ms="soon")
        peer.send("ping", id=7)
        assert await peer.receive() == {"t": "pong", "id": 7, "ok": True}
        assert comp.connected and comp.assignment is None
        assert fake.hellos.empty()  # the same connection throughout

    run(scenario)
