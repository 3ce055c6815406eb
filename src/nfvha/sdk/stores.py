"""Fenced state stores that a component writes itself, with no manager process in the path.

Every writer holds an epoch (fencing token). ``claim(epoch)`` raises the store's own epoch to it,
atomically in the store, so that from then on every writer with an older epoch is refused by the
store itself at write time: a stale active that still believes it is active cannot overwrite the
state of the one that replaced it, whatever the network or the scheduler did.

* ``SharedLog`` (mode ``shared_storage``): the append-only log of ``DiskStore`` on a filesystem
  that several hosts or processes may share. Every claim and every append holds ``<path>.lock``
  (``flock``) and checks the fence file ``<path>.epoch``.
* ``EtcdStore`` (mode ``store``): etcd v3; the epoch check and the write are one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from nfvha.drivers.store import DiskStore, GroupCommit, StoreError

R = TypeVar("R")

ETCD_TIMEOUT_S = 2.0  # one call to one endpoint; then the next endpoint is tried
_EPOCH_DIGITS = 20  # etcd compares values as bytes: zero-padded, "<" is numeric


class StoreRefused(Exception):
    """A stale writer: the store holds a newer epoch (fencing token) than the writer's. str() says
    which."""


class StoreUnavailable(Exception):
    """The store could not make the write durable (unreachable, no quorum, disk full). Nothing
    was kept."""


class StateStore(Protocol):
    async def claim(self, epoch: int) -> tuple[int, dict[str, Any]]:
        """Become the writer with ``epoch`` (an equal epoch may claim again); every writer with an
        older one is refused from then on. Returns (version, state) of the last durable record,
        (0, {}) when empty. StoreRefused if the store holds a higher epoch, StoreUnavailable on I/O
        failure."""
        ...

    async def write(self, epoch: int, version: int, state: dict[str, Any]) -> None:
        """Make the whole ``state`` durable as ``version``; returns once it is. StoreRefused if the
        store's epoch is not ``epoch`` (checked by the store, atomically with the write),
        StoreUnavailable otherwise. Concurrent writes are grouped: the latest supersedes the
        others."""
        ...

    async def epoch(self) -> int:
        """The epoch the store holds (0 when none): a manager starts its epochs above it.
        StoreUnavailable on I/O failure."""
        ...

    async def close(self) -> None: ...


def open_store(spec: dict[str, Any]) -> StateStore:
    """``{"mode": "shared_storage", "path": "/abs/file.log"}`` or ``{"mode": "store",
    "endpoints": ["127.0.0.1:2379", ...], "key": "/nfvha/<deployment>/<vnf>"}``."""
    if not isinstance(spec, dict):
        raise ValueError(f"a store spec is a mapping, not {type(spec).__name__}")
    mode = spec.get("mode")
    if mode == "shared_storage":
        _only_keys(spec, {"mode", "path"})
        path = spec.get("path")
        if not isinstance(path, str) or not os.path.isabs(path) or path.endswith("/"):
            raise ValueError(f"shared_storage needs an absolute file path, not {path!r}")
        return SharedLog(Path(path))
    if mode == "store":
        _only_keys(spec, {"mode", "endpoints", "key"})
        key = spec.get("key")
        if not isinstance(key, str) or not key.startswith("/") or key.endswith("/"):
            raise ValueError(f"store needs a key like /nfvha/<deployment>/<vnf>, not {key!r}")
        return EtcdStore(parse_endpoints(spec.get("endpoints")), key)
    raise ValueError(f"store mode must be shared_storage or store, not {mode!r}")


def _only_keys(spec: dict[str, Any], allowed: set[str]) -> None:
    if unknown := set(spec) - allowed:
        raise ValueError(f"unknown store spec keys: {sorted(unknown)}")


def parse_endpoints(raw: object) -> list[tuple[str, int]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"store needs a non-empty list of endpoints, not {raw!r}")
    parsed = []
    for item in raw:
        host, sep, port = item.rpartition(":") if isinstance(item, str) else ("", "", "")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"an endpoint is host:port, not {item!r}")
        parsed.append((host, int(port)))
    return parsed


def _stale(epoch: int, held: int) -> StoreRefused:
    """A writer whose epoch is not the store's: an older one, or one that never claimed it."""
    if held > epoch:
        return StoreRefused(f"stale epoch {epoch}: the store holds epoch {held}")
    return StoreRefused(f"epoch {epoch} never claimed the store (it holds epoch {held})")


# --- shared storage --------------------------------------------------------------------------


class SharedLog:
    """The log of whole-state records on a filesystem that other writers may share."""

    def __init__(self, path: Path) -> None:
        self._log = _FencedLog(path)

    async def claim(self, epoch: int) -> tuple[int, dict[str, Any]]:
        try:
            return await asyncio.to_thread(self._log.claim, epoch)
        except OSError as exc:
            raise StoreUnavailable(f"{self._log.path}: {exc.strerror or exc}") from exc

    async def write(self, epoch: int, version: int, state: dict[str, Any]) -> None:
        try:
            await self._log.write(version, epoch, state)
        except StoreError as exc:  # what DiskStore makes of every OSError
            raise StoreUnavailable(f"{self._log.path}: {exc.strerror or exc}") from exc

    async def epoch(self) -> int:
        try:
            return await asyncio.to_thread(self._log.held_epoch)
        except OSError as exc:
            raise StoreUnavailable(f"{self._log.path}: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        self._log.close()


class _FencedLog(DiskStore):
    """DiskStore whose appends hold the lock file and are refused to a stale epoch. Blocking:
    called in a thread."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lock_path = path.with_name(path.name + ".lock")
        self.fence_path = path.with_name(path.name + ".epoch")

    def claim(self, epoch: int) -> tuple[int, dict[str, Any]]:
        with self._locked():
            # Under the lock, as no append of ours runs: the load may compact the log into a new
            # file, so the next append reopens it.
            self.close()
            version, last_epoch, state = self.load()
            fence = self._read_fence()
            held = max(fence, last_epoch)  # a lost fence file lets no stale writer back in
            if held > epoch:
                raise _stale(epoch, held)
            if fence != epoch:
                self._write_fence(epoch)
            return version, state

    def held_epoch(self) -> int:
        with self._locked():
            self.close()
            _, last_epoch, _ = self.load()
            return max(self._read_fence(), last_epoch)

    @contextlib.contextmanager
    def _appending(self, epoch: int) -> Iterator[None]:
        with self._locked():
            if (held := self._read_fence()) != epoch:
                raise _stale(epoch, held)
            self._follow_others()
            yield

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A fresh open per use: flock excludes other open files, even in this process, but not
        # two threads sharing one.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _follow_others(self) -> None:
        """Another process may have appended, compacted the log into a new file or died halfway
        through an append since: the next record goes after the last whole one in the file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.close()
            self._size = 0
            return
        if self._fd is not None and os.fstat(self._fd).st_ino != st.st_ino:
            self.close()
        self._size = _whole_end(self.path, st.st_size)
        if self._size < st.st_size:  # a cut record, never acknowledged: under the lock, nobody
            os.truncate(self.path, self._size)  # is appending to it

    def _read_fence(self) -> int:
        try:
            text = self.fence_path.read_text()
        except FileNotFoundError:
            return 0
        try:
            return int(text)
        except ValueError:
            raise OSError(f"damaged fence file {self.fence_path}: {text[:40]!r}") from None

    def _write_fence(self, epoch: int) -> None:
        tmp = self.fence_path.with_name(self.fence_path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{epoch}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.fence_path)
        _fsync_dir(self.fence_path.parent)  # the rename itself must survive a crash


def _whole_end(path: Path, size: int, chunk: int = 65536) -> int:
    """The offset just past the last newline among the first ``size`` bytes of ``path``."""
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            at = f.read(end - start).rfind(b"\n")
            if at >= 0:
                return start + at + 1
            end = start
    return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- etcd ------------------------------------------------------------------------------------


class EtcdStore:
    """``<key>/epoch`` holds the epoch, ``<key>/state`` the last record; every claim and every
    write is one transaction that compares the epoch first.

    A write whose call timed out raises StoreUnavailable, yet etcd may still apply it later (a
    consensus store cannot tell a lost proposal from a slow one). It is applied, if ever, before
    any later claim, whose compare and read come after it in the log: a new writer reads it back
    or never sees it, and a stale epoch can never overwrite a newer writer's state."""

    def __init__(
        self, endpoints: list[tuple[str, int]], key: str, timeout: float = ETCD_TIMEOUT_S
    ) -> None:
        self._etcd = EtcdEndpoints(endpoints, timeout)
        self._epoch_key = f"{key}/epoch".encode()
        self._state_key = f"{key}/state".encode()
        self._commits: GroupCommit[tuple[int, int, dict[str, Any]]] = GroupCommit(self._put)

    async def claim(self, epoch: int) -> tuple[int, dict[str, Any]]:
        t = aetcd_module().transactions
        put = [t.Put(self._epoch_key, _pad(epoch)), t.Get(self._state_key)]
        # etcd's value compare is false for a missing key: the first claim is a case of its own.
        ok, got = await self._txn([t.Create(self._epoch_key) == 0], put, [])
        if not ok:
            below = t.Value(self._epoch_key) < _pad(epoch + 1)  # "<=": etcd has no such compare
            ok, got = await self._txn([below], put, [t.Get(self._epoch_key)])
        if not ok:
            raise _stale(epoch, _unpad(got[0]))
        return _record(got[0])

    async def write(self, epoch: int, version: int, state: dict[str, Any]) -> None:
        await self._commits.write((epoch, version, state))

    async def epoch(self) -> int:
        got = await self._etcd.call(lambda client: client.get(self._epoch_key))
        return _unpad(None if got is None else got.value)

    async def _put(self, record: tuple[int, int, dict[str, Any]]) -> None:
        epoch, version, state = record
        value = json.dumps({"v": version, "epoch": epoch, "state": state}, separators=(",", ":"))
        t = aetcd_module().transactions
        ok, got = await self._txn(
            [t.Value(self._epoch_key) == _pad(epoch)],
            [t.Put(self._state_key, value.encode())],
            [t.Get(self._epoch_key)],
        )
        if not ok:
            raise _stale(epoch, _unpad(got[0]))

    async def close(self) -> None:
        await self._etcd.close()

    async def _txn(
        self, compare: list[Any], success: list[Any], failure: list[Any]
    ) -> tuple[bool, list[bytes | None]]:
        """One transaction: whether it succeeded, and the value read by each of its gets."""
        get_op = aetcd_module().transactions.Get

        async def run(client: Any) -> tuple[bool, list[bytes | None]]:
            ok, responses = await client.transaction(compare, success, failure)
            ops = success if ok else failure
            ranges = [r for o, r in zip(ops, responses, strict=True) if isinstance(o, get_op)]
            return ok, [r[0][0] if r else None for r in ranges]

        return await self._etcd.call(run)


class EtcdEndpoints:
    """aetcd clients to the members of one etcd cluster, made on first use; every call goes to the
    member that answered last, else to the next ones in turn (the state store and the etcd
    coordinator share it)."""

    def __init__(self, endpoints: list[tuple[str, int]], timeout: float = ETCD_TIMEOUT_S) -> None:
        self._endpoints = endpoints
        self._clients: dict[int, Any] = {}  # endpoint index -> aetcd.Client, made on first use
        self._current = 0  # the endpoint that answered last: tried first
        self._timeout = timeout

    async def close(self) -> None:
        for index in list(self._clients):
            await self._drop(index)

    async def call(self, op: Callable[[Any], Awaitable[R]]) -> R:
        """``op`` on the endpoint that answered last, else on the next ones in turn. A call that
        timed out may have been applied: ``op`` must be safe to repeat."""
        errors = []
        for step in range(len(self._endpoints)):
            index = (self._current + step) % len(self._endpoints)
            try:
                async with asyncio.timeout(self._timeout):
                    result = await op(self._client(index))
            except (aetcd_module().ClientError, TimeoutError) as exc:
                errors.append(f"{self._address(index)}: {str(exc) or type(exc).__name__}")
                await self._drop(index)  # a new channel next time, not grpc's reconnect backoff
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this call was cancelled (a timeout around it, a stop)
                # gRPC cancels the calls in flight on a channel that another call dropped:
                # a failed endpoint, like any other.
                errors.append(f"{self._address(index)}: the channel was closed under the call")
                continue
            self._current = index
            return result
        raise StoreUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    async def deleted(self, key: bytes, from_revision: int) -> None:
        """Return once ``key`` is deleted at ``from_revision`` or later (a watch on the member
        that answered last; the caller bounds the wait)."""
        kind = aetcd_module().rtypes.EventKind.DELETE
        client = self._client(self._current)
        await client.watch_once(key, start_revision=from_revision, kind=kind)

    async def put(self, key: bytes) -> None:
        """Return at the next put of ``key`` (a watch, as ``deleted``)."""
        kind = aetcd_module().rtypes.EventKind.PUT
        await self._client(self._current).watch_once(key, kind=kind)

    def _client(self, index: int) -> Any:
        if index not in self._clients:
            host, port = self._endpoints[index]
            # No HTTP proxy from the environment: the endpoints are reached directly.
            options = {"grpc.enable_http_proxy": 0}
            self._clients[index] = aetcd_module().Client(
                host, port, timeout=self._timeout, options=options
            )
        return self._clients[index]

    async def _drop(self, index: int) -> None:
        client = self._clients.pop(index, None)
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await client.close()

    def _address(self, index: int) -> str:
        host, port = self._endpoints[index]
        return f"{host}:{port}"


def aetcd_module() -> Any:
    """aetcd, imported on first use: grpc is loaded only by those who use etcd. Without gRPC's
    fork handlers: a manager forks its VNFCs and agents while its etcd calls run on gRPC's
    threads, and the handlers would only log that they skip each fork (children never use the
    parent's channels)."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    import aetcd  # type: ignore[import-untyped]

    return aetcd


def _pad(epoch: int) -> bytes:
    if not 0 <= epoch < 10**_EPOCH_DIGITS:  # beyond, the bytes would not order as the numbers
        raise ValueError(f"an epoch is 0 to 10**{_EPOCH_DIGITS} - 1, not {epoch}")
    return str(epoch).zfill(_EPOCH_DIGITS).encode()


def _unpad(value: bytes | None) -> int:
    return int(value) if value else 0


def _record(value: bytes | None) -> tuple[int, dict[str, Any]]:
    if value is None:
        return 0, {}
    try:
        rec = json.loads(value)
        return int(rec["v"]), dict(rec["state"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreUnavailable(f"damaged state record in etcd: {exc}") from exc
