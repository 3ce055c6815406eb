"""The component protocol: JSON objects, one per line, over the manager's Unix socket.

component -> manager                         manager -> component
  hello      {vnfc, pid}                       assign     {role, epoch, state, address, reuse_port}
  role_ok    {role, epoch}                     ping       {id}
  pong       {id, ok}                          replicate  {version, updates}   (to the standby)
  error      {reason}                          ckpt_done  {req}
  ckpt_write {req, epoch, updates}             refused    {req?, reason, state?}
  ckpt_ack   {version}
Anything malformed is answered with refused. A write refused because the checkpoint store
failed carries ``state``: what is durable, which the component goes back to.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 1 << 20  # a line longer than this is refused, not buffered forever

FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hello": {"vnfc": str, "pid": int},
    "role_ok": {"role": str, "epoch": int},
    "pong": {"id": int, "ok": bool},
    "error": {"reason": str},
    "ckpt_write": {"req": int, "epoch": int, "updates": dict},
    "ckpt_ack": {"version": int},
}


class ProtocolError(ValueError):
    pass


def encode(kind: str, /, **fields: Any) -> bytes:
    return (json.dumps({"t": kind, **fields}, separators=(",", ":")) + "\n").encode()


def decode_from_component(line: bytes) -> dict[str, Any]:
    """Parse and check one line from a component; raises ProtocolError saying what is wrong."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("expected an object with a string 't'")
    spec = FIELDS.get(msg["t"])
    if spec is None:
        raise ProtocolError(f"unknown message type {msg['t']!r}")
    for key, typ in spec.items():
        value = msg.get(key)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ProtocolError(f"{msg['t']}: field {key!r} must be {typ.__name__}")
    return msg
