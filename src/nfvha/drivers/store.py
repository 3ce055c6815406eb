"""Checkpoint store on disk: an append-only log of whole-state records, fdatasync'd.

Contract:
- ``write`` returns once the whole record is on disk (every byte written, then fdatasync), or
  raises ``StoreError``. Writes that arrive while a sync is in flight are grouped into the next
  sync (group commit), so the disk sees one fdatasync per batch, not per write.
- A failed append (a short write, ENOSPC, EIO) fails every write not yet durable, and the log is
  cut back to its last whole record, so a later append never follows a cut one. The next write
  tries again: the store recovers by itself once there is space.
- ``load`` needs no free space: it reads the log and returns the last whole record. A cut final
  record (a crash or a full disk while appending) is cut off the file (truncation frees space,
  it never needs any) and reported in ``discarded``. Compaction to the last record is attempted
  and skipped when there is no room for it.
- The epoch (fencing token) of the writer is stored with every record so that a restarted
  manager continues above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

COMPACT_ABOVE = 1 << 20  # bytes: a log longer than this is rewritten to its last record at load


class StoreError(OSError):
    """The record could not be made durable; it was not kept."""


class GroupCommit(Generic[T]):
    """Whole-state writes, grouped: while one is being made durable, the writes that arrive wait
    for the next one, which carries only the latest of them (a whole state supersedes the earlier
    ones); all of them are released when it is durable. A failure fails every write not yet
    durable, those that arrived meanwhile included: none of them was kept."""

    def __init__(self, flush: Callable[[T], Awaitable[None]]) -> None:
        self._flush = flush
        self._pending: tuple[T] | None = None  # a 1-tuple: T itself may be None
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, item: T) -> None:
        self._pending = (item,)
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await done

    async def _run(self) -> None:
        try:
            while self._pending is not None:
                (item,), self._pending = self._pending, None
                batch, self._waiters = self._waiters, []
                try:
                    await self._flush(item)
                except Exception as exc:
                    self._fail(batch, exc)
                    return
                except BaseException:  # cancelled: no writer may wait forever
                    self._fail(batch, StoreError("write cancelled"))
                    raise
                _settle(batch, None)
        finally:
            self._task = None

    def _fail(self, batch: list[asyncio.Future[None]], error: Exception) -> None:
        self._pending = None
        batch, self._waiters = batch + self._waiters, []
        _settle(batch, error)


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for fut in waiters:
        if fut.done():  # its writer was cancelled
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class DiskStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.discarded = 0  # bytes of a cut final record removed by ``load``
        self._commits: GroupCommit[tuple[int, int, dict]] = GroupCommit(self._flush)
        self._fd: int | None = None
        self._size = 0  # bytes of whole records in the log: where the next append starts

    def load(self) -> tuple[int, int, dict]:
        """(version, epoch, state) of the last whole record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        best, good_end = (0, 0, {}), 0
        offset = 0
        for line in data.splitlines(keepends=True):
            offset += len(line)
            record = _parse(line)
            if record is not None:
                best, good_end = record, offset
            elif not line.endswith(b"\n"):
                break  # the cut tail: everything after the last whole record goes
            else:
                good_end = offset  # a damaged record in the middle is skipped, not cut
        if good_end < len(data):
            self.discarded = len(data) - good_end
            os.truncate(self.path, good_end)
        self._size = good_end
        if good_end > COMPACT_ABOVE:
            self._compact(best)
        return best

    def _compact(self, best: tuple[int, int, dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = _line(*best).encode()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fdatasync(f.fileno())
            os.replace(tmp, self.path)
            self._size = len(data)
        except OSError:  # no room for the copy: the long log stands as it is
            with contextlib.suppress(OSError):
                tmp.unlink()

    async def write(self, version: int, epoch: int, state: dict) -> None:
        await self._commits.write((version, epoch, state))

    async def _flush(self, record: tuple[int, int, dict]) -> None:
        try:
            await asyncio.to_thread(self._append_sync, record[1], _line(*record).encode())
        except OSError as exc:
            raise StoreError(exc.errno, exc.strerror or str(exc)) from exc

    @contextlib.contextmanager
    def _appending(self, epoch: int) -> Iterator[None]:
        """Held around every append, in the writing thread: a log that other processes write
        too takes its lock and checks the writer's epoch here (see nfvha.sdk.stores)."""
        yield

    def _append_sync(self, epoch: int, data: bytes) -> None:
        """Append all of ``data`` and sync it; on any failure cut the log back to its last
        whole record first, so a cut record is never followed by another one."""
        with self._appending(epoch):
            self._append(data)

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.truncate(self._fd, self._size)  # a tail cut by an earlier failure goes
        try:
            written = 0
            while written < len(data):  # os.write may write less than asked (a full disk)
                written += os.pwrite(self._fd, data[written:], self._size + written)
            os.fdatasync(self._fd)
        except OSError:
            self._cut_back()
            raise
        self._size += len(data)

    def _cut_back(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):  # if this fails too, the next open cuts it
            os.truncate(fd, self._size)
            os.fdatasync(fd)
        os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse(line: bytes) -> tuple[int, int, dict] | None:
    if not line.endswith(b"\n"):
        return None
    try:
        rec = json.loads(line)
        return int(rec["v"]), int(rec["epoch"]), dict(rec["state"])
    except (ValueError, KeyError, TypeError):
        return None


def _line(version: int, epoch: int, state: dict) -> str:
    return json.dumps({"v": version, "epoch": epoch, "state": state}, separators=(",", ":")) + "\n"
