"""The trace: every event, command and message with a monotonic timestamp (ns).

It is the one source for timelines, outage figures and invariant checks. Records are plain
dicts, written as JSON lines: ``{"t": ns, "wall": s, "kind": ..., "src": ..., "dst": ...,
"name": ..., "data": {...}, "why": ...}``. ``kind`` is one of event, command, message, fault,
note. ``t`` (CLOCK_MONOTONIC) orders and measures; ``wall`` (epoch seconds, when it was
recorded) is for people and for matching other logs (journald, Prometheus): it can jump, so
nothing is computed from it.

Observers (``observe``) see every record as it is made: metrics, the stderr lines and the
notify hooks all read the trace, so they can never disagree with it.

Memory keeps the latest ``maxlen`` records (a ring), so a deployment that runs for months does
not grow; the file sink (``nfvha run --trace FILE``) gets every record and is the whole history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

Record = dict[str, Any]

MAXLEN = 100_000  # records kept in memory: some 700 failovers' worth


class Ring(deque[Record]):
    """A deque of bounded length that also slices (``records[i:]``), as the list it replaced."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return list(self)[key]
        return super().__getitem__(key)


class Trace:
    def __init__(self, sink: Path | None = None, maxlen: int | None = MAXLEN) -> None:
        self.records: Ring = Ring(maxlen=maxlen)
        self._sink: IO[str] | None = open(sink, "a", buffering=1) if sink else None  # noqa: SIM115
        self._observers: list[Callable[[Record], None]] = []

    def observe(self, observer: Callable[[Record], None]) -> None:
        """Call ``observer`` with every record from now on; it must not raise or block."""
        self._observers.append(observer)

    def record(
        self,
        kind: str,
        name: str,
        *,
        src: str = "",
        dst: str = "",
        data: dict[str, Any] | None = None,
        why: str = "",
        t: int | None = None,
    ) -> Record:
        rec: Record = {
            "t": t if t is not None else time.monotonic_ns(),
            "wall": time.time(),
            "kind": kind,
            "name": name,
        }
        if src:
            rec["src"] = src
        if dst:
            rec["dst"] = dst
        if data:
            rec["data"] = data
        if why:
            rec["why"] = why
        self.records.append(rec)
        if self._sink:
            self._sink.write(json.dumps(rec) + "\n")
        for observer in self._observers:
            observer(rec)
        return rec

    def since(self, t_ns: int) -> list[Record]:
        return [r for r in self.records if r["t"] >= t_ns]

    def close(self) -> None:
        if self._sink:
            self._sink.close()
            self._sink = None


class Throttle:
    """Traces at most ``burst`` records of one noisy kind (refusals in a flood) per ``window_s``;
    the rest are counted and summed up in one record of the same name when the window ends, so
    a flood costs the trace a few records a second, not one per garbage line or connection."""

    def __init__(self, trace: Trace, burst: int = 1, window_s: float = 1.0) -> None:
        self.trace, self.burst, self.window_s = trace, burst, window_s
        self._window_end = 0.0
        self._count = 0
        self._left_out: dict[tuple[str, str, str], int] = {}

    def record(self, kind: str, name: str, *, src: str = "", why: str = "", **data: Any) -> None:
        now = time.monotonic()
        if now >= self._window_end:
            self.flush()
            self._window_end, self._count = now + self.window_s, 0
        self._count += 1
        if self._count <= self.burst:
            self.trace.record(kind, name, src=src, why=why, data=data)
            return
        key = (kind, name, src)
        if not self._left_out:
            self._flush_later(self._window_end - now)
        self._left_out[key] = self._left_out.get(key, 0) + 1

    def flush(self) -> None:
        left_out, self._left_out = self._left_out, {}
        for (kind, name, src), n in left_out.items():
            why = f"{n} more within {self.window_s:g} s, not traced one by one"
            self.trace.record(kind, name, src=src, why=why, data={"suppressed": n})

    def _flush_later(self, delay_s: float) -> None:
        with contextlib.suppress(RuntimeError):  # no loop running: the next record flushes
            asyncio.get_running_loop().call_later(delay_s, self.flush)


def dump(records: Iterable[Record], path: Path) -> None:
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


def load(path: Path) -> Iterator[Record]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
