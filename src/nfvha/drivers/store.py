"""Checkpoint store on disk: an append-only log of whole-state records, fdatasync'd.

Contract: ``write`` returns once the record is on disk. Writes that arrive while a sync is in
flight are grouped into the next sync (group commit), so the disk sees one fdatasync per batch,
not per write. ``load`` returns the last complete record; a torn last line is ignored. The
epoch (fencing token) of the writer is stored with every record so that a restarted manager
continues above it.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path


class DiskStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._latest: tuple[int, int, dict] | None = None
        self._flushed = 0
        self._flushing: asyncio.Task | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._fd: int | None = None

    def load(self) -> tuple[int, int, dict]:
        """(version, epoch, state) of the last complete record; compacts the log to it."""
        best = (0, 0, {})
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    best = (int(rec["v"]), int(rec["epoch"]), dict(rec["state"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn write at a crash: the record before it stands
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(_line(*best) if best[0] else "")
        os.replace(tmp, self.path)
        self._flushed = best[0]
        return best

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
                await asyncio.to_thread(self._append_sync, _line(version, epoch, state))
                self._flushed = version
                ready = [w for w in self._waiters if w[0] <= version]
                self._waiters = [w for w in self._waiters if w[0] > version]
                for _, fut in ready:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flushing = None

    def _append_sync(self, line: str) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, line.encode())
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _line(version: int, epoch: int, state: dict) -> str:
    return json.dumps({"v": version, "epoch": epoch, "state": state}, separators=(",", ":")) + "\n"
