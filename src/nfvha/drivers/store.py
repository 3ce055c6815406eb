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
from collections.abc import Callable
from pathlib import Path

COMPACT_ABOVE = 1 << 20  # bytes: a log longer than this is rewritten to its last record at load


class StoreError(OSError):
    """The record could not be made durable; it was not kept."""


class DiskStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.discarded = 0  # bytes of a cut final record removed by ``load``
        self._latest: tuple[int, int, dict] | None = None
        self._flushed = 0
        self._flushing: asyncio.Task | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
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
        self._flushed = best[0]
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
        self._latest = (version, epoch, state)
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((version, done))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_loop())
        await done

    async def _flush_loop(self) -> None:
        try:
            while self._latest and self._latest[0] > self._flushed:
                version, epoch, state = self._latest
                try:
                    await asyncio.to_thread(self._append_sync, _line(version, epoch, state))
                except OSError as exc:
                    self._fail_all(StoreError(exc.errno, exc.strerror or str(exc)))
                    return
                self._flushed = version
                self._release(lambda v, upto=version: v <= upto, None)
        finally:
            self._flushing = None

    def _fail_all(self, error: StoreError) -> None:
        self._latest = None
        self._release(lambda v: True, error)

    def _release(self, which: Callable[[int], bool], error: StoreError | None) -> None:
        ready = [w for w in self._waiters if which(w[0])]
        self._waiters = [w for w in self._waiters if not which(w[0])]
        for _, fut in ready:
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    def _append_sync(self, line: str) -> None:
        """Append all of ``line`` and sync it; on any failure cut the log back to its last
        whole record first, so a cut record is never followed by another one."""
        data = line.encode()
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
