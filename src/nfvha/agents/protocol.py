"""The NFVI protocol: JSON objects, one per line, between the NFVI driver and its agents.

agent -> driver                               driver -> agent
  hello        {kind, name, pid}                start_vm    {token, vm, cgroup, nice,
  hb           {n?}                                          netns?, dial?}             (host)
                                                start_vnfc  {token, req, vnfc, argv, env, cwd,
                                                             cgroup?}                   (guest)
                                                lease       {token, n, ms}              (guest)
  vm_started   {name, req, pid}     (host)
  vm_failed    {name, req, reason}  (host)
  vm_exited    {name, pid, status}  (host)
  vnfc_started {name, req, pid}     (guest)
  vnfc_failed  {name, req, reason}  (guest)
  vnfc_exited  {name, pid, status}  (guest)

Each side checks every line it receives (types strictly, no field missing or extra) and refuses
one that is not a message of this table, or not one its sender may send: hello first and once,
then only its own kind's messages. A refused line is reported and never acted on.

Every command carries the fencing token of the leader that sent it (``token``: with etcd, the
create revision of the leader key; embedded, the term number). The agent checks it
(core/fencing.py): a command of an older leader than one it has obeyed is refused, answered
``*_failed`` with the reason, and never executed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    TypeAdapter,
    ValidationError,
)

from nfvha.core.heartbeat import AgentKind
from nfvha.sdk.protocol import ProtocolError

# A pid is reaped by the driver (waitpid): 0 or -1 there would mean "any child".
Pid = PositiveInt


class NfviMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AgentHello(NfviMessage):
    t: Literal["hello"]
    kind: AgentKind
    name: str = Field(min_length=1)
    pid: Pid


class AgentBeat(NfviMessage):
    t: Literal["hb"]
    n: NonNegativeInt | None = None  # numbered by a guest that holds a lease (watchdog)


class AgentStarted(NfviMessage):
    t: Literal["vm_started", "vnfc_started"]
    name: str
    req: PositiveInt | None  # vnfc_*: the driver's request; vm_*: none
    pid: Pid


class AgentFailed(NfviMessage):
    t: Literal["vm_failed", "vnfc_failed"]
    name: str
    req: PositiveInt | None
    reason: str


class AgentExited(NfviMessage):
    t: Literal["vm_exited", "vnfc_exited"]
    name: str
    pid: Pid
    status: int  # the exit code, or minus the signal


class DriverDial(NfviMessage):
    """How a guest reaches the driver over the network: ``host``:``port`` with mutual TLS, the
    cluster's files in ``dir``, as member ``member`` (its host's certificate), the driver being
    member ``server``."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    dir: str = Field(min_length=1)
    member: str = Field(min_length=1)
    server: str = Field(min_length=1)


class DriverStartVm(NfviMessage):
    t: Literal["start_vm"]
    token: PositiveInt
    vm: str = Field(min_length=1)
    cgroup: str = Field(min_length=1)
    nice: int = Field(0, ge=0, le=19)
    netns: str | None = None  # the VM's node namespace (netns mode): the guest runs in it
    dial: DriverDial | None = None  # None: the guest uses its host agent's NFVI socket


class DriverLease(NfviMessage):
    t: Literal["lease"]
    token: PositiveInt
    n: NonNegativeInt  # the heartbeat it answers
    ms: PositiveInt


class DriverStartVnfc(NfviMessage):
    t: Literal["start_vnfc"]
    token: PositiveInt
    req: PositiveInt
    vnfc: str = Field(min_length=1)
    argv: list[str] = Field(min_length=1)
    env: dict[str, str]
    cwd: str
    cgroup: str | None = None  # the VNFC's own cgroup inside its VM's: it holds what detaches


FromAgent = AgentHello | AgentBeat | AgentStarted | AgentFailed | AgentExited
FromDriver = DriverStartVm | DriverStartVnfc | DriverLease
FROM_AGENT: TypeAdapter[FromAgent] = TypeAdapter(Annotated[FromAgent, Field(discriminator="t")])
FROM_DRIVER: TypeAdapter[FromDriver] = TypeAdapter(Annotated[FromDriver, Field(discriminator="t")])
# What each kind of agent may send once it has said hello, and receive.
SENT_BY: dict[str, frozenset[str]] = {
    "host": frozenset({"hb", "vm_started", "vm_failed", "vm_exited"}),
    "guest": frozenset({"hb", "vnfc_started", "vnfc_failed", "vnfc_exited"}),
}
SENT_TO: dict[str, frozenset[str]] = {
    "host": frozenset({"start_vm"}),
    "guest": frozenset({"start_vnfc", "lease"}),
}


def _parse(adapter: TypeAdapter[Any], line: bytes) -> dict[str, Any]:
    try:
        msg: BaseModel = adapter.validate_json(line)
    except ValidationError as exc:
        raise ProtocolError(_reason(exc)) from None
    return msg.model_dump()


def _reason(exc: ValidationError) -> str:
    """The first problem, with where it is: ``hello.pid: Input should be greater than 0``."""
    e = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in e["loc"])
    return f"{where}: {e['msg']}" if where else e["msg"]


def decode_from_agent(line: bytes, sender: AgentKind | None) -> dict[str, Any]:
    """One line from an agent; ``sender``: its kind once it has said hello, else None.
    Raises ProtocolError saying what is wrong."""
    msg = _parse(FROM_AGENT, line)
    if sender is None and msg["t"] != "hello":
        raise ProtocolError(f"{msg['t']} before hello")
    if sender is not None and msg["t"] not in SENT_BY[sender]:
        raise ProtocolError(f"{msg['t']} is not for a {sender} agent to send")
    return msg


def decode_from_driver(line: bytes, receiver: str) -> dict[str, Any]:
    """One line from the driver to a ``receiver`` (host or guest) agent."""
    msg = _parse(FROM_DRIVER, line)
    if msg["t"] not in SENT_TO[receiver]:
        raise ProtocolError(f"{msg['t']} is not for a {receiver} agent")
    return msg


class NfviEndpoint(NfviMessage):
    """Where the leading manager's NFVI listens, as its term publishes it in etcd
    (``PREFIX/NAME/nfvi``, under the leader's lease): what an external host agent dials."""

    address: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    netns: str | None = None  # the management node's namespace in netns mode
    server: str = Field(min_length=1)  # the member name the manager's certificate carries
    member: str = Field(min_length=1)  # the leader (HOST:PID)
    token: PositiveInt  # the leader's fencing token


def decode_endpoint(raw: bytes) -> NfviEndpoint:
    """An endpoint record; ProtocolError (with the reason) for anything else."""
    try:
        return NfviEndpoint.model_validate_json(raw)
    except ValidationError as exc:
        raise ProtocolError(f"NFVI endpoint record: {_reason(exc)}") from None
