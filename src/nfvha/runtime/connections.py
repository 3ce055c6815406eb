"""The connection handlers of a Unix socket server, tracked so that stopping waits for them:
asyncio's ``Server.close()`` does not, and a handler still pending when the loop ends is
cancelled with a traceback printed for it.

Each server holds at most ``limit`` connections at once: one more is closed as soon as it is
accepted, so a peer that opens a thousand idle connections holds ``limit`` descriptors, not two
thousand. Refusals are traced once per burst (``Throttle``), not once per connection.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from nfvha.runtime.trace import Throttle, Trace

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

MAX_CONNECTIONS = 64  # per server: a deployment's VNFCs, agents or operators, with room to spare


class Connections:
    def __init__(self, trace: Trace | None = None) -> None:
        self._tasks: set[asyncio.Task] = set()
        self.trace = trace

    def serve(self, handler: Handler, limit: int = MAX_CONNECTIONS) -> Handler:
        open_now = 0
        refusals = Throttle(self.trace) if self.trace else None

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal open_now
            if open_now >= limit:
                writer.transport.abort()  # at once: its descriptor must not wait for a flush
                if refusals:
                    refusals.record(
                        "note",
                        "ConnectionRefused",
                        src=_socket_name(writer),
                        why=f"{limit} connections open already; new ones are closed at once",
                    )
                return
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            open_now += 1
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                writer.close()  # we are stopping: drop the connection quietly
            except Exception as exc:  # a bug in one handler must not reach asyncio's stderr
                writer.transport.abort()
                self._internal_error(writer, exc)
            finally:
                open_now -= 1
                self._tasks.discard(task)

        return tracked

    def _internal_error(self, writer: asyncio.StreamWriter, exc: Exception) -> None:
        if self.trace is None:
            traceback.print_exception(exc)
            return
        self.trace.record(
            "note",
            "InternalError",
            src=_socket_name(writer),
            why=repr(exc),
            data={"traceback": "".join(traceback.format_exception(exc))[-4000:]},
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _socket_name(writer: asyncio.StreamWriter) -> str:
    """The server's socket file (components.sock, control.sock): a Unix peer has no name."""
    name = writer.get_extra_info("sockname")
    return Path(name).name if isinstance(name, str) and name else "socket"
