"""systemd's notify protocol (sd_notify(3)), spoken directly: a datagram of ``KEY=VALUE``
lines to the AF_UNIX socket named by $NOTIFY_SOCKET. A few lines, so no dependency.

For ``Type=notify`` with ``WatchdogSec=``, the leading manager sends
- ``READY=1`` once the deployment is started and every service is up (``systemctl start``
  returns then, so what is started after the unit finds the services serving),
- ``WATCHDOG=1`` every half of $WATCHDOG_USEC from a task of the event loop itself: a loop
  that is stuck stops the pings, and systemd restarts the manager (which adopts the VNFCs),
- ``STOPPING=1`` when it is stopped on purpose.
Only the leader notifies: a hot standby manager is started without these variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

from nfvha.sdk.peer import unix_address

VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
READY_POLL_S = 0.01  # how often the services are looked at until all are up


class SdNotify:
    def __init__(self, address: str, watchdog_usec: int | None) -> None:
        self.address = unix_address(address)  # "@": the abstract namespace
        self.watchdog_usec = watchdog_usec
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SdNotify | None:
        """None when systemd (or a test) is not listening."""
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())  # the watchdog may be meant for a parent
        return cls(address, int(usec) if usec.isdigit() and int(usec) and mine else None)

    def send(self, *fields: str) -> None:
        """Best effort: a systemd that went away must not stop the manager."""
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(fields).encode(), self.address)

    async def run(self, started: asyncio.Event, all_up: Callable[[], bool]) -> None:
        """Watchdog pings all along; READY=1 once ``started`` is set and ``all_up()``."""
        if self.watchdog_usec is not None:
            pings = asyncio.ensure_future(self._watchdog(self.watchdog_usec / 2e6))
        try:
            await started.wait()
            while not all_up():
                await asyncio.sleep(READY_POLL_S)
            self.send("READY=1", "STATUS=every service is up")
            await asyncio.Event().wait()  # the pings go on until cancelled
        finally:
            if self.watchdog_usec is not None:
                pings.cancel()

    async def _watchdog(self, period_s: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(period_s)

    def close(self) -> None:
        self._sock.close()


def without_notify(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process that must not notify (a standby manager)."""
    return {k: v for k, v in env.items() if k not in VARIABLES}
