"""What a VNFC links to be managed by nfvha.

    comp = Component.from_env(on_role=take_role, on_fence=stop_serving)
    await comp.connect()          # registers with the manager
    await comp.checkpoint({...})  # returns once durable (standby ack, or fsync); else raises
                                  # CheckpointRefused, and comp.state is what is durable
    await comp.closed             # resolved by comp.close() only: run until stopped

``on_role(assignment)`` is awaited when the manager assigns a role; when it returns the SDK
confirms the role to the manager, so an active must have claimed the service address (bound
its port) before returning. ``comp.state`` holds the service state: given with every
assignment, and kept up to date on a standby by replication.

The manager is not a single point of failure: the data path outlives it.

* Connection loss is not the end. When the manager's connection closes or breaks, the
  checkpoint writes in flight fail with ``CheckpointRefused("no manager")`` (``comp.state``
  goes back to what was last acknowledged) and the SDK reconnects by itself, to the same
  socket, every 20 ms backing off to 50 ms, for as long as the process runs. Its hello then
  carries ``resume``: the role it holds (``"none"`` once fenced), the epoch it last held and
  ``comp.state``, from which the manager rebuilds its replica. While disconnected
  ``checkpoint()`` raises ``CheckpointRefused("no manager")`` at once and ``report_error()``
  is dropped. ``comp.closed`` is no longer resolved by a connection loss: only ``close()``
  resolves it (``connected`` says whether the manager is there now).
* A role is held on a lease. Every line from the manager renews it, for ``lease_ms`` as last
  given in an ``assign`` or a ``lease`` message (1000 ms before any). A watchdog checks it every
  lease/10: once it has expired an active fences itself (``await on_fence()``: stop serving,
  release the address) and its role becomes ``"none"`` (the epoch kept for the record), as a
  standby's or a spare's does; if the connection was still open it is dropped, so that the
  manager hears of it from the next hello. Until the manager has given a lease, an open
  connection counts as a renewal (a manager that sends no lease and no pings is not thereby
  dead) and the lease runs from the moment the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nfvha.sdk.protocol import MAX_LINE, encode

ENV_SOCKET = "NFVHA_SOCKET"
ENV_VNFC = "NFVHA_VNFC"
ENV_ADDRESS = "NFVHA_SERVICE_ADDRESS"

DEFAULT_LEASE_MS = 1000.0  # until the manager gives one
RETRY_FIRST_S = 0.020  # reconnecting: the first delay, doubled after each failure ...
RETRY_MAX_S = 0.050  # ... up to this: a new manager finds every session back within it


class CheckpointRefused(Exception):
    """The manager refused a checkpoint write: this VNFC is not the current writer, or the
    store failed, or there is no manager to write to. ``state`` is then the durable state (the
    SDK's ``state`` is set to it too)."""

    def __init__(self, reason: str, state: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.state = state


@dataclass(frozen=True, slots=True)
class Assignment:
    role: str  # active | standby | spare; none once fenced
    epoch: int
    host: str
    port: int
    reuse_port: bool  # n+m: several actives share the port


_MISSING = object()  # a key a write added: undoing the write removes it


class Component:
    def __init__(
        self,
        socket_path: str,
        vnfc: str,
        on_role: Callable[[Assignment], Awaitable[None]],
        health: Callable[[], bool] | None = None,
        on_fence: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.socket_path, self.vnfc = socket_path, vnfc
        self._on_role, self._health, self._on_fence = on_role, health, on_fence
        self.state: dict[str, Any] = {}
        self.assignment: Assignment | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._undo: dict[int, dict[str, Any]] = {}  # per write in flight: the values it replaced
        self._next_req = 0
        self.closed: asyncio.Future[None] | None = None
        self._lease_ms = DEFAULT_LEASE_MS
        self._lease_given = False  # the manager has said how long a lease is
        self._heard = 0.0  # loop time of the last line from the manager
        self._taking_role = False
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_env(cls, **kwargs: Any) -> Component:
        try:
            return cls(os.environ[ENV_SOCKET], os.environ[ENV_VNFC], **kwargs)
        except KeyError as exc:
            raise RuntimeError(f"not started by nfvha: {exc.args[0]} is not set") from None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Register with the manager (raises if it cannot be reached); from then on the SDK
        keeps a connection to it, reconnecting as long as the process runs."""
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_LINE)
        if self.closed is None:
            self.closed = loop.create_future()
        self._heard = loop.time()
        self._attach(writer, resume=False)
        self._tasks = [
            loop.create_task(self._keep_connected(reader)),
            loop.create_task(self._watch()),
        ]

    def close(self) -> None:
        """Stop: no more reconnecting, the connection closed, ``closed`` resolved. Safe to call
        from a signal handler."""
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._fail_pending()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    async def checkpoint(self, updates: dict[str, Any]) -> None:
        """Write state; returns when durable as the VNF's policy says."""
        if not self.connected:
            raise CheckpointRefused("no manager")
        if self.assignment is None or self.assignment.role != "active":
            raise CheckpointRefused("only the active writes checkpoints")
        self._next_req += 1
        req = self._next_req
        self._undo[req] = {key: self.state.get(key, _MISSING) for key in updates}
        self.state.update(updates)
        done = asyncio.get_running_loop().create_future()
        self._pending[req] = done
        self._send("ckpt_write", req=req, epoch=self.assignment.epoch, updates=updates)
        await done

    def report_error(self, reason: str) -> None:
        self._send("error", reason=reason)

    def _send(self, kind: str, /, **fields: Any) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(kind, **fields))

    # --- the connection -----------------------------------------------------------------------

    def _attach(self, writer: asyncio.StreamWriter, resume: bool) -> None:
        self._writer = writer
        if not resume:
            self._send("hello", vnfc=self.vnfc, pid=os.getpid())
            return
        # The epoch it last held, also once fenced: a new manager rebuilds its replica from
        # the newest state it is offered, and a fenced standby holds every acknowledged write.
        role = self.assignment.role if self.assignment is not None else "none"
        epoch = self.assignment.epoch if self.assignment is not None else 0
        self._send(
            "hello",
            vnfc=self.vnfc,
            pid=os.getpid(),
            resume={"role": role, "epoch": epoch, "state": self.state},
        )

    async def _keep_connected(self, reader: asyncio.StreamReader) -> None:
        delay = RETRY_FIRST_S
        while True:
            if await self._read_loop(reader):
                delay = RETRY_FIRST_S  # a connection that worked: start over quickly
            self._lost()
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                try:
                    reader, writer = await asyncio.open_unix_connection(
                        self.socket_path, limit=MAX_LINE
                    )
                except OSError:
                    continue
                break
            self._attach(writer, resume=True)

    async def _read_loop(self, reader: asyncio.StreamReader) -> bool:
        """Read and dispatch until the connection ends; True if anything was heard on it."""
        heard = False
        loop = asyncio.get_running_loop()
        try:
            while line := await reader.readline():
                heard = True
                self._heard = loop.time()  # any line renews the lease
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    await self._dispatch(msg)
        except (ConnectionError, ValueError):  # reset, or a line over MAX_LINE
            pass
        return heard

    def _lost(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._fail_pending()
        if not self._lease_given:  # the open connection held the lease: it runs from now
            self._heard = asyncio.get_running_loop().time()

    def _fail_pending(self) -> None:
        """Writes in flight fail; the state goes back to what was last acknowledged."""
        for req in sorted(self._undo, reverse=True):
            for key, value in self._undo[req].items():
                if value is _MISSING:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value
        self._undo.clear()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(CheckpointRefused("no manager", dict(self.state)))

    # --- the lease ----------------------------------------------------------------------------

    def _renew(self, ms: Any) -> None:
        if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0:
            self._lease_ms, self._lease_given = float(ms), True

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._lease_ms / 10_000)
            held = self.assignment is not None and self.assignment.role != "none"
            if not held or self._taking_role:
                continue
            if self.connected and not self._lease_given:
                self._heard = loop.time()  # held by the open connection (see the docstring)
            elif (loop.time() - self._heard) * 1000 > self._lease_ms:
                await self._fence()

    async def _fence(self) -> None:
        fenced = self.assignment
        assert fenced is not None
        if fenced.role == "active":
            print(
                f"nfvha sdk ({self.vnfc}): lease expired: stopped serving as active",
                file=sys.stderr,
                flush=True,
            )
            if self._on_fence is not None:
                try:
                    await self._on_fence()
                except Exception as exc:  # fenced all the same: it is no longer active
                    print(f"nfvha sdk ({self.vnfc}): on_fence failed: {exc!r}", file=sys.stderr)
        else:
            print(
                f"nfvha sdk ({self.vnfc}): lease expired: no longer {fenced.role}",
                file=sys.stderr,
                flush=True,
            )
        if self.assignment is fenced:  # not replaced by a new assignment meanwhile
            self.assignment = dataclasses.replace(fenced, role="none")
            if self._writer is not None:  # a silent manager: tell it in the next hello
                self._writer.close()

    # --- messages -----------------------------------------------------------------------------

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        """One message from the manager. Unknown types, and known ones missing what they need,
        are ignored: a newer manager is not a reason to stop."""
        with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
            await self._handle(msg)

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "ping":
            self._send("pong", id=msg["id"], ok=self._health() if self._health else True)
        elif kind == "lease":
            self._renew(msg.get("ms"))
        elif kind == "replicate":
            self.state.update(msg["updates"])
            self._send("ckpt_ack", version=msg["version"])
        elif kind == "ckpt_done":
            self._resolve(msg["req"], None)
        elif kind == "refused" and "req" in msg:
            durable = msg.get("state") if isinstance(msg.get("state"), dict) else None
            if durable is not None:
                self.state = dict(durable)  # the store failed: this is what is durable
                self._undo.clear()
            self._resolve(msg["req"], CheckpointRefused(msg.get("reason", "refused"), durable))
        elif kind == "assign":
            await self._assign(msg)

    async def _assign(self, msg: dict[str, Any]) -> None:
        host, _, port = msg["address"].rpartition(":")
        assignment = Assignment(
            msg["role"], msg["epoch"], host, int(port), bool(msg.get("reuse_port"))
        )
        self.state = dict(msg["state"])
        self._undo.clear()  # the state given is the reference now
        self._renew(msg.get("lease_ms"))
        self.assignment = assignment
        self._taking_role = True
        try:
            await self._on_role(assignment)
        except Exception as exc:  # e.g. the address is taken: the manager must know
            self.report_error(f"could not take role {msg['role']}: {exc}")
            return
        finally:
            self._taking_role = False
            self._heard = asyncio.get_running_loop().time()  # lines waited while it ran
        self._send("role_ok", role=msg["role"], epoch=msg["epoch"])

    def _resolve(self, req: int, error: Exception | None) -> None:
        self._undo.pop(req, None)
        fut = self._pending.pop(req, None)
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
