"""Direct state sync between two components, against a fake manager and over real sockets:
the active's writes reach the standby peer to peer and need no manager; the standby is the
fence (an older epoch, or anyone once it is active itself, is refused); a refused active
fences itself."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from nfvha.sdk import ENV_PEER, CheckpointRefused, Component
from nfvha.sdk.peer import unix_address
from nfvha.sdk.protocol import encode
from tests.test_sdk import ASSIGN, WAIT_S, FakeManager, Fences, Peer, no_role_work, wait_until

DIRECT = {"mode": "direct"}


async def assign(peer: Peer, role: str, epoch: int, **changes: Any) -> None:
    peer.send("assign", **{**ASSIGN, "role": role, "epoch": epoch, "sync": DIRECT, **changes})
    assert await peer.receive() == {"t": "role_ok", "role": role, "epoch": epoch}


class Pair:
    """Component A (no peer socket) and component B (listening on ``address``), both
    connected to one fake manager."""

    def __init__(self, fake: FakeManager, address: str) -> None:
        self.fake, self.address = fake, address
        self.fences_a = Fences()
        self.a = Component(fake.path, "vnfc-a", on_role=no_role_work, on_fence=self.fences_a)
        self.fences_a.component = self.a
        self.b = Component(fake.path, "vnfc-b", on_role=no_role_work)
        self.manager_a: Peer | None = None
        self.manager_b: Peer | None = None

    async def connect(self) -> None:
        await self.a.connect()
        _, self.manager_a = await self.fake.hello()
        os.environ[ENV_PEER] = self.address
        try:
            await self.b.connect()
        finally:
            del os.environ[ENV_PEER]
        _, self.manager_b = await self.fake.hello()

    def close(self) -> None:
        self.a.close()
        self.b.close()


def run(scenario: Callable[[Pair], Awaitable[None]]) -> None:
    async def main(path: str) -> None:
        fake = FakeManager(path)
        await fake.start()
        pair = Pair(fake, f"@nfvha-test/{uuid.uuid4().hex}")
        try:
            await pair.connect()
            await scenario(pair)
        finally:
            pair.close()
            await fake.stop()

    with tempfile.TemporaryDirectory(prefix="nfvha-sdk-") as tmp:
        asyncio.run(main(os.path.join(tmp, "manager.sock")))


async def peer_exchange(address: str, *lines: dict[str, Any]) -> list[dict[str, Any] | None]:
    """Connect to a component's peer socket as an active would, send each line and read the
    answer to it (None once the component has closed the connection)."""
    reader, writer = await asyncio.open_unix_connection(unix_address(address))
    answers: list[dict[str, Any] | None] = []
    try:
        for line in lines:
            kind = line.pop("t")
            writer.write(encode(kind, **line))
            raw = await asyncio.wait_for(reader.readline(), WAIT_S)
            answers.append(json.loads(raw) if raw else None)
    finally:
        writer.close()
    return answers


def test_the_standby_refuses_an_older_epoch_and_anything_once_it_is_active() -> None:
    async def scenario(pair: Pair) -> None:
        assert pair.manager_b is not None
        await assign(pair.manager_b, "standby", 3, state={"total": 1}, version=1)
        stale = await peer_exchange(pair.address, {"t": "sync", "epoch": 2, "ver": 9, "state": {}})
        assert stale[0] is not None and stale[0]["t"] == "refused"
        assert "stale epoch 2" in stale[0]["reason"]
        assert pair.b.state == {"total": 1}

        good = await peer_exchange(
            pair.address,
            {"t": "sync", "epoch": 3, "ver": 7, "state": {"total": 9}},
            {"t": "write", "epoch": 3, "ver": 8, "updates": {"total": 10}},
            {"t": "write", "epoch": "3", "ver": 9, "updates": {}},  # malformed: refused
        )
        assert [a and a["t"] for a in good] == ["ok", "ok", "refused"]
        assert pair.b.state == {"total": 10} and pair.b.version == 8

        await assign(pair.manager_b, "active", 4, state={"total": 10}, version=8)
        late = await peer_exchange(
            pair.address, {"t": "write", "epoch": 3, "ver": 9, "updates": {"total": 0}}
        )
        assert late[0] is not None and late[0]["t"] == "refused"
        assert pair.b.state == {"total": 10}

    run(scenario)


def test_the_active_writes_to_its_standby_and_needs_no_manager() -> None:
    async def scenario(pair: Pair) -> None:
        assert pair.manager_a is not None and pair.manager_b is not None
        await assign(pair.manager_b, "standby", 3, state={"total": 5}, version=5)
        await assign(pair.manager_a, "active", 3, state={"total": 5}, version=5)
        pair.manager_a.send("peer", address=pair.address)
        await wait_until(lambda: pair.a._peer is not None and pair.a._peer.ready, "the link")

        await pair.a.checkpoint({"total": 6})
        assert pair.b.state == {"total": 6} and pair.b.version == 6

        await pair.fake.stop()  # no manager from here on
        await wait_until(lambda: not pair.a.connected, "the manager gone")
        for total in (7, 8, 9):
            await pair.a.checkpoint({"total": total})
        assert pair.b.state == {"total": 9} and pair.b.version == 9

    run(scenario)


def test_an_active_its_standby_refuses_fences_itself() -> None:
    async def scenario(pair: Pair) -> None:
        assert pair.manager_a is not None and pair.manager_b is not None
        await assign(pair.manager_b, "standby", 5)  # a newer active exists (epoch 5)
        await assign(pair.manager_a, "active", 3, lease_ms=60_000)
        pair.manager_a.send("peer", address=pair.address)
        await asyncio.wait_for(pair.fences_a.called.wait(), WAIT_S)
        assert pair.a.assignment is not None and pair.a.assignment.role == "none"
        with pytest.raises(CheckpointRefused, match="only the active"):
            await pair.a.checkpoint({"total": 99})
        assert pair.b.state == {"total": 5}

    run(scenario)


def test_writes_the_standby_did_not_confirm_go_through_the_manager_when_it_dies() -> None:
    async def scenario(pair: Pair) -> None:
        manager_a = pair.manager_a
        assert manager_a is not None
        standby = f"@nfvha-test/{uuid.uuid4().hex}"
        got_write = asyncio.Event()

        async def dying_standby(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            sync = json.loads(await reader.readline())
            writer.write(encode("ok", ver=sync["ver"]))
            await reader.readline()  # a write: never confirmed, the standby dies
            got_write.set()
            writer.close()

        server = await asyncio.start_unix_server(dying_standby, unix_address(standby))
        try:
            await assign(manager_a, "active", 3, state={"total": 5}, version=5)
            manager_a.send("peer", address=standby)
            await wait_until(lambda: pair.a._peer is not None and pair.a._peer.ready, "link")
            write = asyncio.ensure_future(pair.a.checkpoint({"total": 6}))
            await asyncio.wait_for(got_write.wait(), WAIT_S)
            msg = await manager_a.receive()
            # The manager's copy lags (the standby had it all): the whole state goes.
            assert msg is not None and msg["t"] == "ckpt_write"
            assert msg["updates"] == {"total": 6} and msg["ver"] == 6
            assert not write.done()
            manager_a.send("ckpt_done", req=msg["req"])
            await asyncio.wait_for(write, WAIT_S)
        finally:
            server.close()

    run(scenario)


def test_a_standby_that_cannot_take_the_role_hands_back_the_state_it_holds() -> None:
    """It may hold the only copy of the latest writes (the manager's lags in direct sync)."""

    async def scenario(pair: Pair) -> None:
        manager_b = pair.manager_b
        assert manager_b is not None
        await assign(manager_b, "standby", 3, state={"total": 5}, version=5)
        await peer_exchange(
            pair.address, {"t": "sync", "epoch": 3, "ver": 9, "state": {"total": 9}}
        )

        async def address_taken(assignment: Any) -> None:
            raise OSError("address in use")

        pair.b._on_role = address_taken
        manager_b.send("assign", **{**ASSIGN, "epoch": 4, "sync": DIRECT, "version": 5})
        error = await manager_b.receive()
        assert error is not None and error["t"] == "error", error
        assert error["state"] == {"total": 9} and error["version"] == 9

    run(scenario)
