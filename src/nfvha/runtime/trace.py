"""The trace: every event, command and message with a monotonic timestamp (ns).

It is the one source for timelines, outage figures and invariant checks. Records are plain
dicts, written as JSON lines: ``{"t": ns, "kind": ..., "src": ..., "dst": ..., "name": ...,
"data": {...}, "why": ...}``. ``kind`` is one of event, command, message, fault, note.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

Record = dict[str, Any]


class Trace:
    def __init__(self, sink: Path | None = None) -> None:
        self.records: list[Record] = []
        self._sink: IO[str] | None = open(sink, "a", buffering=1) if sink else None  # noqa: SIM115

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
        rec: Record = {"t": t if t is not None else time.monotonic_ns(), "kind": kind, "name": name}
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
        return rec

    def since(self, t_ns: int) -> list[Record]:
        return [r for r in self.records if r["t"] >= t_ns]

    def close(self) -> None:
        if self._sink:
            self._sink.close()
            self._sink = None


def dump(records: Iterable[Record], path: Path) -> None:
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


def load(path: Path) -> Iterator[Record]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
