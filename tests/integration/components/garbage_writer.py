"""A VNFC for the tests: a registered component that sends malformed lines. Once active it
sends 19 of them, one good message, 19 more and a checkpoint write (which must still succeed),
then 20 in a row (after which the manager must drop it). Appends "alive" and then "dropped" to
the file named by $GARBAGE_OUT. Only the first VNFC to be active does so (it claims the file);
the others behave. Runs under nfvha only."""

from __future__ import annotations

import asyncio
import contextlib
import os

from nfvha.sdk import Assignment, Component

GARBAGE = b"this is not json\n"


async def main() -> None:
    path = os.environ["GARBAGE_OUT"]
    out = open(path, "a", buffering=1)  # noqa: SIM115
    tasks: set[asyncio.Task] = set()

    def claim() -> bool:
        try:
            os.close(os.open(path + ".claimed", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    def send_garbage(n: int) -> None:
        comp._writer.write(GARBAGE * n)  # one write: nothing can come in between

    async def exercise() -> None:
        send_garbage(19)
        comp._send("pong", id=0, ok=True)  # a good line: the count starts again
        send_garbage(19)
        await comp.checkpoint({"n": 1})
        out.write("alive\n")
        link = comp._writer  # the SDK reconnects after a drop: watch this connection end
        send_garbage(20)
        with contextlib.suppress(ConnectionError):  # closed, or reset
            await link.wait_closed()
        out.write("dropped\n")

    async def on_role(assignment: Assignment) -> None:
        if assignment.role == "active" and not tasks and claim():
            task = asyncio.get_running_loop().create_task(exercise())
            tasks.add(task)

    comp = Component.from_env(on_role=on_role)
    await comp.connect()
    await asyncio.Event().wait()  # stay until stopped, also once dropped


if __name__ == "__main__":
    asyncio.run(main())
