"""The deployment's state as its leader decided it, recorded for the next leader and for anyone
who asks etcd (``nfvha status --from-etcd``), wherever they run.

With ``coordination: etcd`` the leading manager keeps, under ``PREFIX/NAME/state/``:

- ``vnfs/<vnf>``: the role assignments of a VNF: its epoch (fencing token of its actives), who
  serves, and each VNFC's role, life-cycle state and failures (``failed`` then ``starting``
  again: the progress of its repair);
- ``vms/<vm>`` and ``hosts/<host>``: the VIM's view, with the repairs under way (a VM
  ``failed`` then ``starting``, a host ``fencing`` then ``down`` until it is back).

Every write is one etcd transaction that runs only while this term holds the leader key (its
lease alive, its create revision the term's token) and only if each record still has the mod
revision this term last saw: a deposed leader writes nothing, and a record someone else changed
is read again before it is overwritten. Records outlive the leader's lease on purpose: they are
what the next term reads. A deliberate stop deletes them with the ``deployed`` record.

Writing is off the managers' path: a change only wakes one writer task, which writes the latest
records and nothing in between (coalesced); etcd unreachable for a while delays the records, never
a decision. The next leader continues every VNF's epoch above the recorded one (rule 12), even for
VNFCs it cannot adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nfvha.sdk.stores import StoreRefused, StoreUnavailable

if TYPE_CHECKING:
    from nfvha.runtime.leadership import Coordinator
    from nfvha.runtime.trace import Trace

Records = dict[str, dict[str, Any]]
RETRY_S = 0.2  # etcd unreachable: the next attempt, with whatever changed meanwhile


def records_of(ha: list[dict[str, Any]], vim: dict[str, Any] | None) -> Records:
    """The records of the HA managers' and the VIM's snapshots (``HAManager.snapshot``,
    ``VimCore.snapshot``): the decisions only, no pids or timings that change at every step."""
    out: Records = {}
    for snap in ha:
        out[f"vnfs/{snap['vnf']}"] = {
            "epoch": snap["epoch"],
            "active": list(snap["service"]["active"]),
            "switching": snap["switching"],
            "maintenance": snap["maintenance"],
            "vnfcs": {
                c["name"]: {
                    "role": c["role"],
                    "state": c["state"],
                    "failures": c["failures"],
                    "last_failure": c["last_failure"],
                }
                for c in snap["vnfcs"]
            },
        }
    if vim is not None:
        for host, state in vim["hosts"].items():
            out[f"hosts/{host}"] = {"state": state}
        for vm, view in vim["vms"].items():
            out[f"vms/{vm}"] = {
                "host": view["host"],
                "state": view["state"],
                "reason": view["reason"],
            }
    return out


def changes(written: Records, now: Records) -> dict[str, dict[str, Any] | None]:
    """What to write to go from ``written`` to ``now`` (None: delete the record)."""
    out: dict[str, dict[str, Any] | None] = {k: v for k, v in now.items() if written.get(k) != v}
    out.update({k: None for k in written.keys() - now.keys()})
    return out


def epochs(records: Records) -> dict[str, int]:
    """VNF -> the epoch its record holds (rule 12: the next actives go above it)."""
    out = {}
    for key, value in records.items():
        kind, _, vnf = key.partition("/")
        if kind == "vnfs" and isinstance(value.get("epoch"), int):
            out[vnf] = value["epoch"]
    return out


class StateWriter:
    """Keeps the coordinator's records equal to ``current()``, one write at a time."""

    def __init__(
        self, coordinator: Coordinator, current: Callable[[], Records], trace: Trace
    ) -> None:
        self.coordinator, self.current, self.trace = coordinator, current, trace
        self.written: Records = {}
        self.writes = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, recorded: Records) -> None:
        """``recorded``: what etcd holds now (the last term's); the first write brings it up."""
        self.written = dict(recorded)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.changed()

    def changed(self) -> None:
        self._changed.set()

    async def flush(self) -> None:
        """Until what is current now is written (or the writer gave up): for tests and stops."""
        while (
            self._task is not None
            and not self._task.done()
            and changes(self.written, self.current())
        ):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            now = self.current()
            todo = changes(self.written, now)
            if not todo:
                continue
            try:
                await self.coordinator.write_state(todo)
            except StoreUnavailable:
                self._changed.set()  # written later, with what has changed by then
                await asyncio.sleep(RETRY_S)
                continue
            except StateConflict as exc:
                self.trace.record("note", "StateConflict", src="nfvha", why=str(exc))
                self.written = exc.records  # what etcd holds now: written over at once
                self._changed.set()
                continue
            except StoreRefused as exc:  # deposed: this term writes nothing more
                self.trace.record("note", "StateRefused", src="nfvha", why=str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - a client fault must not end the records
                self.trace.record("note", "StateUnwritten", src="nfvha", why=repr(exc))
                self._changed.set()
                await asyncio.sleep(RETRY_S)
                continue
            self.written.update({k: v for k, v in todo.items() if v is not None})
            for key in [k for k, v in todo.items() if v is None]:
                self.written.pop(key, None)
            self.writes += 1


class StateConflict(Exception):
    """A record changed in etcd since this term last read or wrote it; nothing was written.
    ``records``: what etcd holds now."""

    def __init__(self, records: Records, why: str) -> None:
        super().__init__(why)
        self.records = records
