"""A VNFC for the tests: on every role it is given it tries checkpoint writes it must not be
allowed (a stale epoch, a future epoch, a write as standby) and one it must, and appends what
the manager answered to the JSON-lines file named by $STALE_OUT. Runs under nfvha only."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os

from nfvha.sdk import Assignment, CheckpointRefused, Component


async def main() -> None:
    name = os.environ["NFVHA_VNFC"]
    out = open(os.environ["STALE_OUT"], "a", buffering=1)  # noqa: SIM115
    tasks: set[asyncio.Task] = set()
    raw_requests = itertools.count(1 << 30)  # never a version the SDK uses

    def note(assignment: Assignment, case: str, result: str, reason: str = "") -> None:
        out.write(
            json.dumps(
                {
                    "vnfc": name,
                    "pid": os.getpid(),
                    "role": assignment.role,
                    "epoch": assignment.epoch,
                    "case": case,
                    "result": result,
                    "reason": reason,
                }
            )
            + "\n"
        )

    async def attempt(assignment: Assignment, case: str, epoch: int, raw: bool) -> None:
        try:
            if raw:  # what a standby's SDK would never send: a write as if it were active
                req = next(raw_requests)
                done = asyncio.get_running_loop().create_future()
                comp._pending[req] = done
                comp._send("ckpt_write", req=req, epoch=epoch, updates={"who": f"{name}:{case}"})
                await done
            else:
                comp.assignment = dataclasses.replace(assignment, epoch=epoch)
                try:
                    await comp.checkpoint({"who": f"{name}:{case}"})
                finally:
                    comp.assignment = assignment
        except CheckpointRefused as exc:
            note(assignment, case, "refused", str(exc))
        else:
            note(assignment, case, "ok")

    async def exercise(a: Assignment) -> None:
        if a.role == "active":
            await attempt(a, "stale-epoch", a.epoch - 1, raw=False)
            await attempt(a, "future-epoch", a.epoch + 1, raw=False)
            await attempt(a, "current-epoch", a.epoch, raw=False)
        else:
            await attempt(a, "as-" + a.role, a.epoch, raw=True)

    async def on_role(assignment: Assignment) -> None:
        # Not inside the role handler: the SDK reads the answers only once it has returned.
        task = asyncio.get_running_loop().create_task(exercise(assignment))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    comp = Component.from_env(on_role=on_role)
    await comp.connect()
    await comp.closed


if __name__ == "__main__":
    asyncio.run(main())
