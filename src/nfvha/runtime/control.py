"""The operator's control socket of a running deployment: status, faults, trace.

One JSON request per connection, one JSON answer: ``{"op": "status"}``,
``{"op": "fault", "kind": KIND, "target": NAME}`` (nfvha.faults.RUNTIME: vnfc-crash, vnfc-hang,
vnfc-resume, vm-crash, vm-hang, host-crash; the 0.1 names are still taken),
``{"op": "trace", "since": NS}``, an operator's verb for a VNFC
``{"op": "vnfc", "verb": "clear"|"restart"|"stop"|"start", "vnfc": NAME}`` or a VNF
``{"op": "vnf", "verb": "switchover"|"maintenance", "vnf": NAME, "on": BOOL}``, and
``{"op": "reload"}``.
Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": TEXT}``. Requests are validated
(pydantic) before anything acts on them; a bad one is answered with what is wrong, never with a
traceback. A client that sends no full line within ``READ_TIMEOUT_S``, or a line over
``MAX_REQUEST``, is answered and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from nfvha import faults
from nfvha.config import ConfigError
from nfvha.core.ha import OperatorRefused

if TYPE_CHECKING:
    from nfvha.runtime.engine import Engine

MAX_REQUEST = 64 << 10  # bytes in a request line; the largest real one is a few dozen
READ_TIMEOUT_S = 2.0  # to send the request line, once connected
WRITE_TIMEOUT_S = 10.0  # to take the answer: a client that does not read is dropped

# engine.FAULTS (a VNFC's process) and the NFVI driver's inject (a VM, a host); old names are
# translated before they are checked.
FaultKind = Annotated[
    faults.RuntimeKind,
    BeforeValidator(lambda kind: faults.canonical(kind) if isinstance(kind, str) else kind),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StatusRequest(_Request):
    op: Literal["status"]


class TraceRequest(_Request):
    op: Literal["trace"]
    since: int = Field(0, ge=0)


class FaultRequest(_Request):
    op: Literal["fault"]
    kind: FaultKind
    target: str


class VnfcRequest(_Request):
    """An operator's verb for one VNFC."""

    op: Literal["vnfc"]
    verb: Literal["clear", "restart", "stop", "start"]
    vnfc: str


class VnfRequest(_Request):
    """An operator's verb for one VNF: a planned switchover, or maintenance on or off."""

    op: Literal["vnf"]
    verb: Literal["switchover", "maintenance"]
    vnf: str
    on: bool = True


class ReloadRequest(_Request):
    """Read the deployment file again and apply what changed (runtime/reload.py)."""

    op: Literal["reload"]


Request = Annotated[
    StatusRequest | TraceRequest | FaultRequest | VnfcRequest | VnfRequest | ReloadRequest,
    Field(discriminator="op"),
]
REQUEST = TypeAdapter(Request)
OPS = ("status", "trace", "fault", "vnfc", "vnf", "reload")


def problem(exc: ValidationError) -> str:
    """One line saying what is wrong with a request, naming the field."""
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in err["loc"][1:])  # [0] is the op's model
    if err["type"] in ("dict_type", "union_tag_not_found"):
        return "expected a JSON object with 'op'"
    if err["type"] == "union_tag_invalid":
        return f"unknown op {err['input'].get('op')!r}; known: {', '.join(OPS)}"
    if field == "kind" and err["type"] == "literal_error":
        return f"unknown fault kind {err['input']!r}; known: {', '.join(faults.RUNTIME)}"
    if err["type"] == "json_invalid":
        return f"not a JSON request: {err['msg']}"
    return f"{field}: {err['msg']}" if field else err["msg"]


class ControlServer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.path = engine.runtime_dir / "control.sock"

    async def start(self) -> asyncio.AbstractServer:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        handler = self.engine.connections.serve(self._serve)
        return await asyncio.start_unix_server(handler, self.path, limit=MAX_REQUEST)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            answer = self._answer(line)
        except TimeoutError:
            answer = _error(f"no request line within {READ_TIMEOUT_S:g} s")
        except ValueError:  # the line limit: what is left of it is not read at all
            answer = _error(f"request line over {MAX_REQUEST} bytes")
        except ConnectionError:
            answer = None
        try:
            if answer is not None:
                writer.write(json.dumps(answer).encode() + b"\n")
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            writer.transport.abort()
        writer.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = REQUEST.validate_json(line)
        except ValidationError as exc:
            return _error(problem(exc))
        try:
            return {"ok": True, **self._do(request)}
        except (LookupError, ProcessLookupError, OperatorRefused, ConfigError) as exc:
            return _error(str(exc.args[0]) if exc.args else repr(exc))
        except Exception as exc:  # a bug: answered and traced, the server keeps serving
            self.engine.trace.record(
                "note",
                "InternalError",
                src="control",
                why=repr(exc),
                data={"op": request.op, "traceback": traceback.format_exc()[-4000:]},
            )
            return _error(f"internal error: {exc!r}")

    def _do(self, request: Request) -> dict[str, Any]:
        if isinstance(request, StatusRequest):
            return self.engine.status()
        if isinstance(request, TraceRequest):
            return {"records": self.engine.trace.since(request.since)}
        if isinstance(request, VnfcRequest):
            return self.engine.operate(request.verb, request.vnfc)
        if isinstance(request, VnfRequest):
            return self.engine.operate(request.verb, request.vnf, request.on)
        if isinstance(request, ReloadRequest):
            return self.engine.reload()
        if request.kind in faults.NFVI and self.engine.nfvi is None:
            raise LookupError(f"fault {request.kind!r} needs hosts and VMs in the deployment")
        return self.engine.inject(request.kind, request.target)


def _error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}


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
