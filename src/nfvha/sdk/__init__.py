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

How a write becomes durable is the VNF's ``state_sync``, given with every assignment:

* ``manager``: through the manager, which replicates it to the standby or logs it.
* ``direct`` (2n): straight to the standby over its peer socket (``nfvha.sdk.peer``), the
  manager told only where the standby is; durable once the standby holds it. While no
  standby is synced the write goes through the manager as in ``manager``. Writes keep
  flowing while no manager runs. Every write has a version; a promoted standby keeps the
  state it holds if it is newer than the manager's copy.
* ``shared_storage`` / ``store``: the active writes the whole state to a log on shared
  storage or to etcd itself (``nfvha.sdk.stores``). Becoming active it first claims the
  store with its epoch, which fences every older writer in the store itself, and takes the
  state from it. A write the store refuses as stale fences the component (``on_fence``).
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

from nfvha.sdk.peer import PeerFence, PeerLink, same_user, unix_address
from nfvha.sdk.protocol import MAX_LINE, encode

ENV_SOCKET = "NFVHA_SOCKET"
ENV_PEER = "NFVHA_PEER_SOCKET"  # direct sync: where this component listens for its active
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


class _Fenced(Exception):
    """A peer's line from an epoch this component no longer accepts."""


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
        self.version = 0  # of ``state``: counts every write, whichever way it went
        self._pending: dict[int, asyncio.Future[None]] = {}  # version -> its write in flight
        self._undo: dict[int, dict[str, Any]] = {}  # per write in flight: the values it replaced
        self._via_manager: set[int] = set()  # writes in flight that went through the manager
        self._covers: dict[int, list[int]] = {}  # a manager write standing for several
        self._sync: dict[str, Any] = {"mode": "manager"}
        self._peer: PeerLink | None = None  # direct sync, the active's link to its standby
        self._peer_address: str | None = None
        self._peer_fence = PeerFence()  # direct sync, the standby's side
        self._peer_server: asyncio.Server | None = None
        self._peer_conns: set[asyncio.StreamWriter] = set()  # actives connected to this one
        self._manager_stale = False  # writes went peer to peer: the manager's copy lags
        self._store: Any = None  # shared_storage/store: the StateStore, opened on first claim
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
    def _external_store(self) -> bool:
        return self._sync.get("mode") in ("shared_storage", "store")

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
        if (path := os.environ.get(ENV_PEER)) and self._peer_server is None:
            if not path.startswith("@"):  # a socket file: one this component's last run left
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            self._peer_server = await asyncio.start_unix_server(
                self._serve_peer, unix_address(path), limit=MAX_LINE
            )
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
        if self._peer is not None:
            self._peer.close()
        if self._peer_server is not None:
            self._peer_server.close()
            self._peer_server = None
        for conn in self._peer_conns:  # as if the process had gone: the active hears of it
            conn.close()
        if self._store is not None:
            store, self._store = self._store, None
            with contextlib.suppress(RuntimeError):  # no loop running: nothing to close
                asyncio.get_running_loop().create_task(store.close())
        self._fail_pending()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    async def checkpoint(self, updates: dict[str, Any]) -> None:
        """Write state; returns when durable as the VNF's ``state_sync`` says."""
        if self.assignment is None or self.assignment.role != "active":
            raise CheckpointRefused("only the active writes checkpoints")
        epoch = self.assignment.epoch
        if self._external_store:
            return await self._write_store(epoch, updates)
        direct = self._peer is not None and self._peer.ready
        if not direct and not self.connected:
            raise CheckpointRefused("no manager")
        ver = self._apply(updates)
        done = asyncio.get_running_loop().create_future()
        self._pending[ver] = done
        if direct:
            assert self._peer is not None
            self._manager_stale = True
            self._peer.send("write", epoch=epoch, ver=ver, updates=updates)
        else:
            self._write_via_manager(ver, updates)
        await done

    def _apply(self, updates: dict[str, Any]) -> int:
        """Apply a write locally (undone if it fails); returns its version."""
        self.version += 1
        self._undo[self.version] = {key: self.state.get(key, _MISSING) for key in updates}
        self.state.update(updates)
        return self.version

    def _write_via_manager(self, ver: int, updates: dict[str, Any]) -> None:
        assert self.assignment is not None
        if self._manager_stale:  # its copy lags behind the peer-to-peer writes: send it all
            updates, self._manager_stale = dict(self.state), False
        self._via_manager.add(ver)
        self._send("ckpt_write", req=ver, epoch=self.assignment.epoch, updates=updates, ver=ver)

    async def _write_store(self, epoch: int, updates: dict[str, Any]) -> None:
        from nfvha.sdk.stores import StoreRefused, StoreUnavailable

        if self._store is None:
            raise CheckpointRefused("the store was not claimed")
        ver = self._apply(updates)
        try:
            await self._store.write(epoch, ver, dict(self.state))
        except StoreRefused as exc:
            self._fail_pending_store(ver)
            await self._fence()
            raise CheckpointRefused(f"refused by the store: {exc}") from None
        except StoreUnavailable as exc:
            self._fail_pending_store(ver)
            raise CheckpointRefused(f"checkpoint store failed: {exc}", dict(self.state)) from None
        self._undo.pop(ver, None)

    def _fail_pending_store(self, ver: int) -> None:
        """A store write failed: it and every later one in flight are undone (they fail too:
        each carried the whole state, this one's included)."""
        for later in sorted((v for v in self._undo if v >= ver), reverse=True):
            self._undo_one(later)
        self.version = min(self.version, ver - 1)

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
        if self._via_manager:  # writes peer to peer do not need the manager
            self._fail_pending()
        if not self._lease_given:  # the open connection held the lease: it runs from now
            self._heard = asyncio.get_running_loop().time()

    def _fail_pending(self, reason: str = "no manager") -> None:
        """Writes in flight fail; the state goes back to what was last acknowledged. Those in
        flight are always the newest writes, so undoing them all, newest first, gets there."""
        if self._undo:
            self.version = min(self._undo) - 1
        for ver in sorted(self._undo, reverse=True):
            self._undo_one(ver)
        self._via_manager.clear()
        self._covers.clear()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(CheckpointRefused(reason, dict(self.state)))

    def _undo_one(self, ver: int) -> None:
        for key, value in self._undo.pop(ver, {}).items():
            if value is _MISSING:
                self.state.pop(key, None)
            else:
                self.state[key] = value

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
            self._link_peer()  # an active no longer: no more direct writes
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
            version = msg["version"]
            if version > self.version:  # else it holds newer, synced peer to peer
                self.state.update(msg["updates"])
                self.version = version
            self._send("ckpt_ack", version=version)
        elif kind == "peer":
            self._peer_address = msg["address"] if isinstance(msg["address"], str) else None
            self._link_peer()
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
        if isinstance(msg.get("sync"), dict):
            self._sync = msg["sync"]
        self._take_state(msg["state"], msg.get("version"))
        self._peer_fence.epoch = max(self._peer_fence.epoch, assignment.epoch)
        self._renew(msg.get("lease_ms"))
        self.assignment = assignment
        self._taking_role = True
        try:
            if assignment.role == "active" and self._external_store:
                await self._claim(assignment.epoch)
            await self._on_role(assignment)
        except Exception as exc:  # e.g. the address is taken: the manager must know
            # With the state it holds: it may be the only copy of the latest writes (direct).
            reason = f"could not take role {msg['role']}: {exc}"
            self._send("error", reason=reason, state=self.state, version=self.version)
            return
        finally:
            self._taking_role = False
            self._heard = asyncio.get_running_loop().time()  # lines waited while it ran
        self._send("role_ok", role=msg["role"], epoch=msg["epoch"])
        self._link_peer()

    def _take_state(self, state: dict[str, Any], version: Any) -> None:
        """The state an assignment gives, unless (direct sync) this component holds a newer
        one: the manager's copy lags behind what went peer to peer."""
        version = version if type(version) is int else 0
        if self._sync.get("mode") == "direct" and self.version > version:
            self._manager_stale = True
        else:
            self.state, self.version = dict(state), version
        self._undo.clear()  # the state taken is the reference now

    async def _claim(self, epoch: int) -> None:
        """Shared storage or etcd: fence every older writer in the store, take its state."""
        from nfvha.sdk.stores import open_store

        if self._store is None:
            self._store = open_store(self._sync)
        self.version, state = await self._store.claim(epoch)
        self.state = dict(state)

    def _resolve(self, req: int, error: Exception | None) -> None:
        for ver in [req, *self._covers.pop(req, [])]:
            self._via_manager.discard(ver)
            self._undo.pop(ver, None)
            fut = self._pending.pop(ver, None)
            if fut is None or fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    # --- direct sync --------------------------------------------------------------------------

    def _link_peer(self) -> None:
        """The active connects to the standby the manager named, if not connected already."""
        address = self._peer_address
        active = self.assignment is not None and self.assignment.role == "active"
        if self._sync.get("mode") != "direct" or not active or self._taking_role:
            address = None
        if self._peer is not None and self._peer.address == address:
            return
        if self._peer is not None:
            old, self._peer = self._peer, None
            old.close()
            self._peer_lost(old)
        if address is not None:
            assert self.assignment is not None
            self._peer = link = PeerLink(address, self._peer_reply)
            opened = link.open(self.assignment.epoch, self.version, dict(self.state))
            task = asyncio.get_running_loop().create_task(self._run_peer(link, opened))
            self._tasks.append(task)

    async def _run_peer(self, link: PeerLink, opened: Awaitable[None]) -> None:
        await opened
        if self._peer is link:  # ended by itself (the standby died), not replaced
            self._peer = None
            self._peer_lost(link)

    def _peer_reply(self, link: PeerLink, msg: dict[str, Any]) -> None:
        if link is not self._peer:
            return
        if msg.get("t") == "ok":
            if msg["ver"] >= link.synced_version:
                link.ready = True  # the standby holds everything up to the sync
            for ver in [v for v in self._pending if v <= msg["ver"]]:
                self._resolve(ver, None)
        elif msg.get("t") == "refused":
            self._peer = None
            link.close()
            self._fail_pending(f"refused by the standby: {msg.get('reason')}")
            asyncio.get_running_loop().create_task(self._fence())

    def _peer_lost(self, link: PeerLink) -> None:
        """The standby is gone: the writes it had not confirmed go through the manager, as one
        write of the whole state (the manager's copy lags), or fail if there is none."""
        self._manager_stale = True
        waiting = [v for v in self._pending if v not in self._via_manager]
        active = self.assignment is not None and self.assignment.role == "active"
        if not waiting:  # the manager's copy becomes the second one: bring it up to date now
            if self.connected and active:
                self._write_via_manager(self._apply({}), {})
            return
        if not active:  # stepped down: it may write no more (its successor may hold them)
            self._fail_pending("no longer active")
            return
        if not self.connected:
            self._fail_pending()
            return
        last = max(waiting)
        self._covers[last] = [v for v in waiting if v != last]
        self._write_via_manager(last, {})

    async def _serve_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The standby's side of direct sync: apply what the active sends, unless fenced."""
        if not same_user(writer):
            writer.close()
            return
        self._peer_conns.add(writer)
        try:
            while line := await reader.readline():
                try:
                    msg = json.loads(line)
                    ver = msg["ver"]
                    self._peer_apply(msg)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    writer.write(encode("refused", ver=-1, reason=f"malformed: {exc}", epoch=0))
                    continue
                except _Fenced as exc:
                    reply = {"reason": str(exc), "epoch": self._peer_fence.epoch}
                    writer.write(encode("refused", ver=ver, **reply))
                    break
                writer.write(encode("ok", ver=ver))
        except (ConnectionError, ValueError):
            pass
        finally:
            self._peer_conns.discard(writer)
            writer.close()

    def _peer_apply(self, msg: dict[str, Any]) -> None:
        role = self.assignment.role if self.assignment is not None else None
        refusal = self._peer_fence.check(msg["epoch"], role)
        if refusal is not None:
            raise _Fenced(refusal)
        ver = int(msg["ver"])
        if msg["t"] == "sync" and ver >= self.version:  # else it holds newer, from the manager
            self.state, self.version = dict(msg["state"]), ver
        elif msg["t"] == "write" and ver > self.version:
            self.state.update(dict(msg["updates"]))
            self.version = ver
