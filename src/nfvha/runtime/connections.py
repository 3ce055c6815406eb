"""The connection handlers of a Unix socket server, tracked so that stopping waits for them:
asyncio's ``Server.close()`` does not, and a handler still pending when the loop ends is
cancelled with a traceback printed for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Connections:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def serve(self, handler: Handler) -> Handler:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                writer.close()  # we are stopping: drop the connection quietly
            finally:
                self._tasks.discard(task)

        return tracked

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
