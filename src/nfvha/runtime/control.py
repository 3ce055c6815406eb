"""The operator's control socket of a running deployment: status, faults, trace.

One JSON request per connection, one JSON answer: ``{"op": "status"}``,
``{"op": "fault", "kind": KIND, "target": NAME}`` (kill, hang, resume a VNFC; crash-vm,
hang-vm a VM; crash-host a host), ``{"op": "trace", "since": NS}``.
Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": TEXT}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nfvha.sdk.protocol import MAX_LINE

if TYPE_CHECKING:
    from nfvha.runtime.engine import Engine


class ControlServer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.path = engine.runtime_dir / "control.sock"

    async def start(self) -> asyncio.AbstractServer:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        handler = self.engine.connections.serve(self._serve)
        return await asyncio.start_unix_server(handler, self.path, limit=MAX_LINE)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            answer = self._answer(line)
        except ValueError as exc:
            answer = {"ok": False, "error": str(exc)}
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "expected a JSON object with 'op'"}
        if op == "status":
            return {"ok": True, **self.engine.status()}
        if op == "trace":
            return {"ok": True, "records": self.engine.trace.since(int(request.get("since", 0)))}
        if op == "fault":
            try:
                target = request.get("target", request.get("vnfc"))
                return {"ok": True, **self.engine.inject(request["kind"], target)}
            except (KeyError, ProcessLookupError) as exc:
                return {"ok": False, "error": str(exc.args[0]) if exc.args else repr(exc)}
        return {"ok": False, "error": f"unknown op {op!r}"}


class ControlError(Exception):
    pass


def request(path: Path, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Blocking client, for the CLI."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while chunk := sock.recv(1 << 16):
                data += chunk
    except OSError as exc:
        raise ControlError(
            f"cannot reach the deployment at {path}: {exc.strerror or exc}"
        ) from None
    answer = json.loads(data)
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "request failed"))
    return answer
