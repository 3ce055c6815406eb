"""The component protocol: JSON objects, one per line, over the manager's Unix socket.

component -> manager                         manager -> component
  hello      {vnfc, pid, resume?}              assign     {role, epoch, state, version?, sync?,
  role_ok    {role, epoch}                                  address, reuse_port, lease_ms?}
  pong       {id, ok}                          ping       {id}
  error      {reason, state?, version?}        lease      {ms}
  ckpt_write {req, epoch, updates, ver?}       replicate  {version, updates}   (to the standby)
  ckpt_ack   {version}                         ckpt_done  {req}
                                               refused    {req?, reason, state?}
                                               peer       {address}   (direct sync, the active)
``sync`` says how the VNF keeps its state (nfvha.runtime.sync); ``version``/``ver`` number the
writes across both paths of direct sync (nfvha.sdk.peer); an ``error`` may hand back the state
the component holds, which the manager keeps if it is newer than its copy.
Anything malformed is answered with refused. A write refused because the checkpoint store
failed carries ``state``: what is durable, which the component goes back to.

The manager is not a single point of failure: a component outlives its manager's connection.
  resume     {role, epoch, state}: in a hello sent on reconnecting (never in the first one).
             role and epoch are what the component holds ("none" and 0 if it holds no role,
             also once it has fenced itself); state is the service state it holds (an
             active's is the latest), from which the manager rebuilds its replica.
  lease      {ms}: the role lease, sent to every connected component every ms/4; lease_ms in
             assign says the same. Every line from the manager renews the lease for that
             long; an active that has heard nothing for longer stops serving (fences itself)
             and holds role "none" from then on. 1000 ms until the manager gives one; until
             it does, an open connection also holds the lease.
A component ignores message types it does not know, and known ones missing a field.
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
