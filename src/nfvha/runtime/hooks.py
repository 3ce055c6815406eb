"""Notify hooks (keepalived's notify scripts): a VNF's ``hooks: {active, standby, failed}``
commands, run when one of its VNFCs confirms a role or its failure is decided.

A hook never holds up a failover: it is queued when the trace records what happened (the
command that mattered is already carried out by then) and run later, by a task of its own
VNF, one at a time in the order of the trace, so a script sees ``failed a`` before ``active
b``. Each runs in a session of its own with a timeout; one that overruns is killed with its
group. Its outcome is traced (``HookDone``, ``HookFailed``) and never fatal.

Environment: NFVHA_DEPLOYMENT, NFVHA_VNF, NFVHA_VNFC, NFVHA_EVENT (active | standby | failed)
and NFVHA_ROLE (the role taken, or for ``failed`` the role it held).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from nfvha.config import Deployment, Hooks
from nfvha.runtime import outcomes as o
from nfvha.runtime.trace import Trace

Job = tuple[str, str, str, str]  # vnf, vnfc, event, role


class HookRunner:
    def __init__(self, deployment: Deployment, base_dir: Path, trace: Trace) -> None:
        self.name, self.base_dir, self.trace = deployment.name, base_dir, trace
        self.hooks = {v.name: v.hooks for v in deployment.vnfs if v.hooks is not None}
        self._queues: dict[str, asyncio.Queue[Job]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._running: set[asyncio.subprocess.Process] = set()

    def notify(self, outcome: o.Outcome) -> None:
        """Queue the hook for an outcome, if its VNF has one; returns at once."""
        if isinstance(outcome, o.RoleTaken):
            job = (outcome.vnf, outcome.vnfc, outcome.role, outcome.role)
        elif isinstance(outcome, o.Failed):
            job = (outcome.vnf, outcome.vnfc, "failed", outcome.role)
        else:
            return
        hooks = self.hooks.get(job[0])
        if hooks is None or getattr(hooks, job[2], None) is None:
            return
        if job[0] not in self._queues:
            self._queues[job[0]] = asyncio.Queue()
            self._workers.append(asyncio.ensure_future(self._work(self._queues[job[0]], hooks)))
        self._queues[job[0]].put_nowait(job)

    async def _work(self, queue: asyncio.Queue[Job], hooks: Hooks) -> None:
        while True:
            job = await queue.get()
            command = getattr(hooks, job[2])
            try:
                await self._run(job, command, hooks.timeout_s)
            except OSError as exc:  # cannot be started: traced, the VNF goes on
                self._traced("HookFailed", job, f"{command[0]}: {exc.strerror or exc}")

    async def _run(self, job: Job, command: list[str], timeout_s: float) -> None:
        vnf, vnfc, event, role = job
        env = {
            **os.environ,
            "NFVHA_DEPLOYMENT": self.name,
            "NFVHA_VNF": vnf,
            "NFVHA_VNFC": vnfc,
            "NFVHA_EVENT": event,
            "NFVHA_ROLE": role,
        }
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=self.base_dir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own group: a timeout kills what it started too
        )
        self._running.add(proc)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            await _kill(proc)
            self._traced("HookFailed", job, f"still running after {timeout_s:g} s; killed")
            return
        finally:
            self._running.discard(proc)
        if proc.returncode:
            self._traced("HookFailed", job, f"{command[0]} exited with {proc.returncode}")
        else:
            self._traced("HookDone", job, "")

    def _traced(self, name: str, job: Job, why: str) -> None:
        data = {"vnfc": job[1], "event": job[2], "role": job[3]}
        self.trace.record("note", name, src=f"hooks:{job[0]}", data=data, why=why)

    async def close(self) -> None:
        """Stop the workers and kill any hook still running (nothing outlives the manager)."""
        for worker in self._workers:
            worker.cancel()
        for proc in list(self._running):
            await _kill(proc)
        self._workers.clear()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
