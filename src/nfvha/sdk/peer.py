"""Direct state sync: the active's checkpoints go straight to the standby, not via a manager.

Peer protocol, JSON lines over the standby's abstract Unix socket (``NFVHA_PEER_SOCKET``):
  active -> standby                        standby -> active
    sync  {epoch, ver, state}  (first)       ok      {ver}
    write {epoch, ver, updates}              refused {ver, reason, epoch}
The standby is the fence: it refuses anything from an epoch older than the newest it has seen
(its own assignments' and its peers'), and anything at all once it is active itself, so a
deposed active can never overwrite the state of the one that replaced it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from nfvha.sdk.protocol import MAX_LINE, encode

CONNECT_TRIES = 20  # the standby binds its socket at start-up: it is there, or soon will be
CONNECT_PAUSE_S = 0.010


def unix_address(address: str) -> str:
    """A leading '@' names an abstract socket (as ss(8) shows them): NUL in the kernel."""
    return "\0" + address[1:] if address.startswith("@") else address


class PeerFence:
    """The standby's side: what it accepts from an active, and the newest epoch seen."""

    def __init__(self) -> None:
        self.epoch = 0

    def check(self, epoch: Any, own_role: str | None) -> str | None:
        """None if a line with ``epoch`` may be applied, else why not."""
        if type(epoch) is not int:
            return "no epoch"
        if own_role == "active":
            return "this component is the active now"
        if epoch < self.epoch:
            return f"stale epoch {epoch}: a newer active holds epoch {self.epoch}"
        self.epoch = epoch
        return None


def same_user(writer: asyncio.StreamWriter) -> bool:
    """The kernel's word (SO_PEERCRED): only a process of this user may sync this state."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


class PeerLink:
    """The active's side: one connection to the standby, ready once the sync is confirmed."""

    def __init__(self, address: str, on_reply: Callable[[PeerLink, dict[str, Any]], None]) -> None:
        self.address = address
        self.ready = False
        self.synced_version = -1  # the version the sync sent; its ok makes the link ready
        self._on_reply = on_reply
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, epoch: int, version: int, state: dict[str, Any]) -> None:
        """Connect and send the whole state; replies are read until the link ends."""
        for _ in range(CONNECT_TRIES):
            try:
                reader, writer = await asyncio.open_unix_connection(
                    unix_address(self.address), limit=MAX_LINE
                )
                break
            except OSError:
                await asyncio.sleep(CONNECT_PAUSE_S)
        else:
            return
        self._writer = writer
        self.synced_version = version
        self.send("sync", epoch=epoch, ver=version, state=state)
        try:
            while line := await reader.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and type(msg.get("ver")) is int:
                    self._on_reply(self, msg)
        except (ConnectionError, ValueError):
            pass
        finally:
            self.close()

    def send(self, kind: str, /, **fields: Any) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(kind, **fields))

    def close(self) -> None:
        self.ready = False
        if self._writer is not None:
            self._writer.close()
            self._writer = None
