"""What a VNFC links to be managed by nfvha.

    comp = Component.from_env(on_role=take_role)
    await comp.connect()          # registers with the manager
    await comp.checkpoint({...})  # returns once durable (standby ack, or fsync); else raises
                                  # CheckpointRefused, and comp.state is what is durable
    await comp.closed             # the manager went away: stop

``on_role(assignment)`` is awaited when the manager assigns a role; when it returns the SDK
confirms the role to the manager, so an active must have claimed the service address (bound
its port) before returning. ``comp.state`` holds the service state: given with every
assignment, and kept up to date on a standby by replication.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nfvha.sdk.protocol import MAX_LINE, encode

ENV_SOCKET = "NFVHA_SOCKET"
ENV_VNFC = "NFVHA_VNFC"
ENV_ADDRESS = "NFVHA_SERVICE_ADDRESS"


class CheckpointRefused(Exception):
    """The manager refused a checkpoint write: this VNFC is not the current writer, or the
    store failed. ``state`` is then the durable state (the SDK's ``state`` is set to it too)."""

    def __init__(self, reason: str, state: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.state = state


@dataclass(frozen=True, slots=True)
class Assignment:
    role: str  # active | standby | spare
    epoch: int
    host: str
    port: int
    reuse_port: bool  # n+m: several actives share the port


class Component:
    def __init__(
        self,
        socket_path: str,
        vnfc: str,
        on_role: Callable[[Assignment], Awaitable[None]],
        health: Callable[[], bool] | None = None,
    ) -> None:
        self.socket_path, self.vnfc = socket_path, vnfc
        self._on_role, self._health = on_role, health
        self.state: dict[str, Any] = {}
        self.assignment: Assignment | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._next_req = 0
        self.closed: asyncio.Future[None] | None = None

    @classmethod
    def from_env(cls, **kwargs: Any) -> Component:
        try:
            return cls(os.environ[ENV_SOCKET], os.environ[ENV_VNFC], **kwargs)
        except KeyError as exc:
            raise RuntimeError(f"not started by nfvha: {exc.args[0]} is not set") from None

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_LINE)
        self.closed = asyncio.get_running_loop().create_future()
        self._send("hello", vnfc=self.vnfc, pid=os.getpid())
        asyncio.get_running_loop().create_task(self._read_loop(reader))

    async def checkpoint(self, updates: dict[str, Any]) -> None:
        """Write state; returns when durable as the VNF's policy says."""
        if self.assignment is None or self.assignment.role != "active":
            raise CheckpointRefused("only the active writes checkpoints")
        self.state.update(updates)
        self._next_req += 1
        req = self._next_req
        done = asyncio.get_running_loop().create_future()
        self._pending[req] = done
        self._send("ckpt_write", req=req, epoch=self.assignment.epoch, updates=updates)
        await done

    def report_error(self, reason: str) -> None:
        self._send("error", reason=reason)

    def _send(self, kind: str, /, **fields: Any) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(kind, **fields))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                await self._dispatch(json.loads(line))
        except (ConnectionError, ValueError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CheckpointRefused("manager connection lost"))
            if self.closed and not self.closed.done():
                self.closed.set_result(None)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "ping":
            self._send("pong", id=msg["id"], ok=self._health() if self._health else True)
        elif kind == "replicate":
            self.state.update(msg["updates"])
            self._send("ckpt_ack", version=msg["version"])
        elif kind == "ckpt_done":
            self._resolve(msg["req"], None)
        elif kind == "refused" and "req" in msg:
            durable = msg.get("state") if isinstance(msg.get("state"), dict) else None
            if durable is not None:
                self.state = dict(durable)  # the store failed: this is what is durable
            self._resolve(msg["req"], CheckpointRefused(msg.get("reason", "refused"), durable))
        elif kind == "assign":
            self.state = dict(msg["state"])
            host, _, port = msg["address"].rpartition(":")
            self.assignment = Assignment(
                msg["role"], msg["epoch"], host, int(port), bool(msg.get("reuse_port"))
            )
            try:
                await self._on_role(self.assignment)
            except Exception as exc:  # e.g. the address is taken: the manager must know
                self.report_error(f"could not take role {msg['role']}: {exc}")
                return
            self._send("role_ok", role=msg["role"], epoch=msg["epoch"])

    def _resolve(self, req: int, error: Exception | None) -> None:
        fut = self._pending.pop(req, None)
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
