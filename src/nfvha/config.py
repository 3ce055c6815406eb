"""Deployment configuration: YAML validated by pydantic, with errors that name file and path."""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


StateMode = Literal["replicated", "checkpoint", "none"]
# Where acknowledged state is kept (section 3.2 of the seed): peer to peer between the
# components, the manager's replica or log, a log on storage the VNF shares, or etcd.
StateSync = Literal["direct", "manager", "shared_storage", "store"]
# What the manager's checkpoint service does for a VNF; "external": the components write a
# shared log or etcd themselves, and the manager is not in the path.
ServiceMode = Literal["replicated", "checkpoint", "none", "external"]
NetworkMode = Literal["loopback", "netns"]  # the mode in use ("auto" resolved)


class ConfigError(Exception):
    """A configuration that cannot be used; the message names file, path and problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def repeated(names: list[str]) -> list[str]:
    """Names that occur more than once (in linear time: deployments can be very large)."""
    return sorted(n for n, k in Counter(names).items() if k > 1)


def _split_command(value: object) -> object:
    return shlex.split(value) if isinstance(value, str) else value


Command = Annotated[list[str], BeforeValidator(_split_command), Field(min_length=1)]


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 1..65535, got {value!r}")
    return host, int(port)


def _hex(value: str) -> str:
    try:
        bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"expected hex digits (pairs, spaces allowed), got {value!r}") from None
    return value


Hex = Annotated[str, AfterValidator(_hex)]


class HealthCheck(Strict):
    """How a hung VNFC is found: the SDK's heartbeat, or a probe for a component without it.

    ``tcp`` only connects: the kernel completes a connection to the listening socket of a
    stopped (hung) process, so it sees a crash but never a hang. ``http``, ``dns`` and ``udp``
    speak the protocol and do see one; ``exec`` sees what its command checks."""

    kind: Literal["sdk", "udp", "tcp", "http", "dns", "exec"] = "sdk"
    interval_ms: PositiveInt = 50
    failure_threshold: PositiveInt = 3
    # One probe's time to answer; defaults to the interval and may not exceed it: probes go
    # out twice per interval, so a longer one would only pile up probes (and exec processes).
    timeout_ms: PositiveInt | None = None
    address: str | None = None  # udp/tcp/http/dns target; defaults to the service address
    send: str = "GET 0"  # udp payload (text)
    expect: str = "OK"  # udp answer prefix (text)
    send_hex: Hex | None = None  # udp payload (binary), instead of send
    expect_hex: Hex | None = None  # udp answer prefix (binary), instead of expect
    command: Command | None = None  # exec: exit status 0 means healthy
    method: str = Field("GET", pattern=r"^[A-Z]+$")  # http
    path: str = Field("/", pattern=r"^/\S*$")  # http
    expect_status: int = Field(200, ge=100, le=599)  # http
    expect_body: str | None = None  # http: a substring of the body
    query: str | None = None  # dns: the name asked for
    query_type: str = "A"  # dns
    expect_answer: str | None = None  # dns: a substring of the answer section
    expect_rcode: str = "NOERROR"  # dns

    @model_validator(mode="after")
    def _kind_fields(self) -> HealthCheck:
        fields = type(self).model_fields
        # Compared with the defaults, not model_fields_set: a dumped model sets every field.
        given = {f for f in fields if getattr(self, f) != fields[f].default}
        foreign = sorted(given - _HEALTH_COMMON - _HEALTH_FIELDS[self.kind])
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not used by a {self.kind} health check")
        if self.kind == "exec" and not self.command:
            raise ValueError("an exec health check needs 'command'")
        if self.kind == "dns" and not self.query:
            raise ValueError("a dns health check needs 'query' (the name to ask for)")
        for text, binary in (("send", "send_hex"), ("expect", "expect_hex")):
            if {text, binary} <= given:
                raise ValueError(f"give '{text}' or '{binary}', not both")
        if self.timeout_ms is not None and self.timeout_ms > self.interval_ms:
            raise ValueError(
                f"timeout_ms {self.timeout_ms} exceeds interval_ms {self.interval_ms}: "
                "a probe must answer within its interval"
            )
        if self.address is not None:
            parse_address(self.address)
        if self.kind == "dns":
            _dns_names(self.query_type, self.expect_rcode)
        return self

    @property
    def timeout_s(self) -> float:
        return (self.timeout_ms or self.interval_ms) / 1000

    @property
    def payload(self) -> bytes:
        """What a udp check sends."""
        return bytes.fromhex(self.send_hex) if self.send_hex is not None else self.send.encode()

    @property
    def answer_prefix(self) -> bytes:
        """How a udp check's good answer begins."""
        if self.expect_hex is not None:
            return bytes.fromhex(self.expect_hex)
        return self.expect.encode()


_HEALTH_COMMON = {"kind", "interval_ms", "failure_threshold", "timeout_ms"}
_HEALTH_FIELDS: dict[str, set[str]] = {
    "sdk": set(),
    "udp": {"address", "send", "expect", "send_hex", "expect_hex"},
    "tcp": {"address"},
    "http": {"address", "method", "path", "expect_status", "expect_body"},
    "dns": {"address", "query", "query_type", "expect_answer", "expect_rcode"},
    "exec": {"command"},
}


def _dns_names(query_type: str, rcode: str) -> None:
    import dns.exception
    import dns.rcode
    import dns.rdatatype

    try:
        dns.rdatatype.from_text(query_type)
    except dns.exception.DNSException:
        raise ValueError(f"query_type {query_type!r} is not a DNS record type") from None
    try:
        dns.rcode.from_text(rcode)
    except dns.exception.DNSException:
        raise ValueError(f"expect_rcode {rcode!r} is not a DNS rcode (e.g. NOERROR)") from None


class Policies(Strict):
    health_check: HealthCheck = HealthCheck()
    cleanup_grace_ms: NonNegativeInt = 500
    start_timeout_s: PositiveFloat = 10.0  # started but not up (registered) by then: failed
    # The start limit (systemd's StartLimitBurst in StartLimitIntervalSec, OTP's intensity):
    # the (restart_max + 1)-th failure within restart_probation_s is escalated, not restarted.
    restart_probation_s: PositiveFloat = 60.0
    restart_max: NonNegativeInt = 3
    # Restart delay (systemd's RestartSec, RestartSteps, RestartMaxDelaySec): the first restart
    # waits restart_delay_ms; each further failure within the probation waits restart_backoff_ms
    # doubled per failure, at most restart_delay_max_ms. 0: at once (a restart is the recovery
    # of a VNF without redundancy).
    restart_delay_ms: NonNegativeInt = 0
    restart_backoff_ms: NonNegativeInt = 0
    restart_delay_max_ms: NonNegativeInt = 10_000
    # Pacemaker's failure-timeout: this long after its last failure an escalated VNFC's
    # failures expire and it is started again. None: an escalation stays until `nfvha clear`.
    failure_timeout_s: PositiveFloat | None = None
    # An active that hears from no manager for this long stops serving on its own (the SDK
    # fences itself); a new manager waits this long for running VNFCs to resume their sessions.
    role_lease_ms: PositiveInt = 1000


class Redundancy(Strict):
    model: Literal["2n", "n+m", "none"]
    active: PositiveInt = 1  # n+m: N
    spare: NonNegativeInt = 1  # n+m: M
    spare_start: Literal["prestarted", "on_demand"] = "prestarted"


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"expected an IPv4 address such as 10.77.0.100, got {value!r}") from None


def _ipv4_network(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value))
    except ValueError:
        raise ValueError(f"expected an IPv4 network such as 10.77.0.0/24, got {value!r}") from None


class Service(Strict):
    name: Name
    protocol: Literal["udp", "tcp"] = "udp"
    address: str
    # A virtual IP on the provider network (network mode netns): the active claims it as part
    # of becoming active, and consumers reach the service at vip:<port of address>. Loopback
    # mode serves ``address`` itself.
    vip: Annotated[str, AfterValidator(_ipv4)] | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value

    def address_in(self, mode: NetworkMode) -> str:
        """Where consumers reach the service in this network mode."""
        if mode == "netns" and self.vip is not None:
            return f"{self.vip}:{parse_address(self.address)[1]}"
        return self.address


def _signal_name(value: str) -> str:
    name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
    if name not in signal.Signals.__members__ or name in ("SIGKILL", "SIGSTOP"):
        raise ValueError(f"expected a signal name such as SIGTERM or SIGINT, got {value!r}")
    return name


class Limits(Strict):
    """Resource limits, written to the VNFC's cgroup (memory.max, cpu.max, pids.max) before it
    starts; they need cgroup containment and those controllers (``nfvha check`` says)."""

    memory_max: str | None = Field(None, pattern=r"^(max|[0-9]+[KMGT]?)$")  # bytes, or 256M
    cpu_max: str | None = Field(None, pattern=r"^(max|[0-9]+)( [0-9]+)?$")  # "QUOTA PERIOD" µs
    pids_max: PositiveInt | None = None

    def files(self) -> dict[str, str]:
        """The cgroup files to write, and what."""
        values = {"memory.max": self.memory_max, "cpu.max": self.cpu_max}
        values["pids.max"] = str(self.pids_max) if self.pids_max else None
        return {file: value for file, value in values.items() if value is not None}


class Vnfc(Strict):
    name: Name
    command: Command
    env: dict[str, str] = {}
    vm: Name | None = None  # with hosts declared: its VM (default: a VM of its own)
    # The graceful stop (cleanup_grace_ms, a deliberate shutdown) sends this, SIGKILL after.
    stop_signal: Annotated[str, AfterValidator(_signal_name)] = "SIGTERM"
    user: str | None = None  # run as this user (name or uid) and group: needs root
    group: str | None = None
    limits: Limits = Limits()


class Repair(Strict):
    """How the VIM repairs a failed VM of this VNF (design brief 4)."""

    mode: Literal["negotiation", "auto"] = "negotiation"  # ask the VNFM first, or just act
    # restart (initial state), restart_from_snapshot, or failover_standby_vm: a standby VM is
    # kept booted on another host and takes the failed VM's place at once.
    action: Literal["restart", "restart_from_snapshot", "failover_standby_vm"] = (
        "restart_from_snapshot"
    )


class Hooks(Strict):
    """Notify hooks (keepalived's notify scripts): commands run, in the file's directory, when
    a VNFC of the VNF confirms the active or standby role or its failure is decided. They
    never delay a failover; one still running after ``timeout_s`` is killed."""

    active: Command | None = None
    standby: Command | None = None
    failed: Command | None = None
    timeout_s: PositiveFloat = 10.0


class MetricsEndpoint(Strict):
    """Prometheus metrics over HTTP (``/metrics``). Loopback only: the endpoint has no
    authentication, so whatever scrapes it from elsewhere goes through a proxy that has."""

    port: int = Field(9464, ge=1, le=65535)
    address: str = "127.0.0.1"

    @field_validator("address")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if not ipaddress.ip_address(value).is_loopback:
            raise ValueError(f"expected a loopback address such as 127.0.0.1, got {value!r}")
        return value


class Host(Strict):
    name: Name


class VmDecl(Strict):
    name: Name
    host: Name | None = None  # default: placed by the VIM with anti-affinity


class Nfvi(Strict):
    """How the VIM reaches its agents and isolates a VM it cannot reach.

    ``transport``: ``unix`` (the default: every agent on this machine's NFVI socket) or ``tls``:
    each VM's guest agent dials the manager over TCP with mutual TLS (``cluster_dir``, made by
    ``nfvha cluster init``: the manager presents ``manager_member``'s certificate, a guest its
    host's), at ``port`` on the management node in netns mode (the guest in its VM's
    namespace, so a cut link cuts it off), else on loopback. ``fencing``: ``kernel`` (a VM is
    cleaned up by ``cgroup.kill`` through this machine's kernel, out of band like a BMC) or
    ``watchdog``: each guest agent holds a lease of ``agent_lease_ms``, renewed by every answer
    to its heartbeats; one that hears no answer for a lease kills its VNFCs and exits (it fences
    itself), and the VIM takes a VM it cannot reach for isolated only once that lease has
    passed since the last answer it sent (sbd's watchdog fencing). ``host_agents``: ``spawned``
    (the VIM starts each host's agent on this machine) or ``external``: each host runs its own,
    ``nfvha agent CONFIG --host NAME`` (a unit per host), which finds the leading manager
    through etcd (``coordination: etcd``) and dials it with mutual TLS (``transport: tls``) as
    that host."""

    heartbeat_interval_ms: PositiveInt = 50
    heartbeat_misses: PositiveInt = 3
    correlation_window_s: PositiveFloat = 10.0
    transport: Literal["unix", "tls"] = "unix"
    cluster_dir: str | None = None
    manager_member: Name = "manager"
    port: int = Field(7400, ge=1, le=65535)
    fencing: Literal["kernel", "watchdog"] = "kernel"
    agent_lease_ms: PositiveInt = 2000
    host_agents: Literal["spawned", "external"] = "spawned"

    @model_validator(mode="after")
    def _complete(self) -> Nfvi:
        if self.transport == "tls" and not self.cluster_dir:
            raise ValueError("transport tls needs cluster_dir (made by nfvha cluster init)")
        if self.host_agents == "external" and self.transport != "tls":
            raise ValueError(
                "host_agents external needs transport tls: a host's agent dials the manager over "
                "the network, authenticated by its certificate"
            )
        detection = self.heartbeat_interval_ms * self.heartbeat_misses
        if self.fencing == "watchdog" and self.agent_lease_ms <= detection:
            raise ValueError(
                f"agent_lease_ms {self.agent_lease_ms} must exceed the heartbeat detection time "
                f"({self.heartbeat_misses} x {self.heartbeat_interval_ms} = {detection} ms): a "
                "guest would fence itself at every missed heartbeat"
            )
        return self


def _endpoints(value: object) -> object:
    return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value


class StateLocation(Strict):
    """Where ``shared_storage`` and ``store`` keep the state. ``path``: the log file on storage
    shared by the VNF's components (default: in the state dir). ``etcd``: the endpoints of an
    etcd cluster, ``HOST:PORT,...``; ``prefix``: the keys' prefix there."""

    path: str | None = None
    etcd: Annotated[list[str], BeforeValidator(_endpoints), Field(min_length=1)] = [
        "127.0.0.1:2379"
    ]
    prefix: str = Field("/nfvha", pattern=r"^/[A-Za-z0-9._/-]*$")

    @field_validator("etcd")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            parse_address(endpoint)
        return value


class LoadBalancing(Strict):
    """Active/active service access (section 3.1 of the seed): HAProxy, itself HA (an implicit
    2n VNF ``<vnf>-lb``), in front of the actives of an n+m VNF. ``pool``: ``vnfc`` (case 1),
    one server per VNFC; ``vm`` (case 2, needs hosts), one server per VM a VNFC runs in.
    ``checks``: HAProxy checks the servers too, and a server it marks DOWN is a failed health
    check of its VNFC (the LB as cluster manager). See nfvha.core.pool."""

    kind: Literal["haproxy"] = "haproxy"
    pool: Literal["vnfc", "vm"] = "vnfc"
    checks: bool = False
    check_interval_ms: PositiveInt = 100


class Vnf(Strict):
    name: Name
    redundancy: Redundancy
    service: Service
    vnfcs: list[Vnfc] = Field(min_length=1)
    policies: Policies = Policies()
    # Where the service state lives: replicated to the standby (2n), checkpointed to disk
    # (no redundancy, use case 3), or nowhere (stateless).
    state: StateMode | None = None
    # How that state is kept (see StateSync); default: direct for 2n, manager otherwise.
    state_sync: StateSync | None = None
    state_store: StateLocation = StateLocation()
    sdk: bool = True  # False: plain processes, supervised and health-checked only
    repair: Repair = Repair()
    hooks: Hooks | None = None
    load_balancer: LoadBalancing | None = None  # n+m only; see LoadBalancing
    _balances: str | None = PrivateAttr(None)  # the implicit LB VNF: the VNF it balances

    @property
    def balances(self) -> str | None:
        """The VNF whose pool this one balances (the implicit ``<vnf>-lb``), else None."""
        return self._balances

    @model_validator(mode="after")
    def _consistent(self) -> Vnf:
        names = [c.name for c in self.vnfcs]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"VNFC names must be unique, repeated: {', '.join(dupes)}")
        r, count = self.redundancy, len(self.vnfcs)
        if r.model == "2n" and count != 2:
            raise ValueError(f"model 2n needs exactly 2 VNFCs, got {count}")
        if r.model == "none" and count != 1:
            raise ValueError(f"model none needs exactly 1 VNFC, got {count}")
        if r.model == "n+m" and count != r.active + r.spare:
            raise ValueError(
                f"model n+m with active={r.active} spare={r.spare} needs "
                f"{r.active + r.spare} VNFCs, got {count}"
            )
        allowed = {"2n": {"replicated", "none"}, "n+m": {"none"}, "none": {"checkpoint", "none"}}
        if self.state is not None and self.state not in allowed[r.model]:
            raise ValueError(
                f"state {self.state!r} does not fit model {r.model} "
                f"(allowed: {', '.join(sorted(allowed[r.model]))})"
            )
        self._check_sync()
        if not self.sdk:
            if self.state_mode != "none":
                raise ValueError(
                    "a stateful VNF needs the SDK (sdk: true) to sync its state"
                    + (": without it, a 2n hot standby is 'state: none'" if r.model == "2n" else "")
                )
            if r.model == "2n" and self.service.vip is None:
                raise ValueError(
                    "a 2n hot standby without the SDK needs service.vip: both daemons run bound "
                    "to the virtual IP, and only its holder (the active) receives traffic"
                )
            if r.model == "n+m" and r.spare_start == "prestarted" and r.spare:
                raise ValueError(
                    "without the SDK a spare cannot wait idle: use spare_start: on_demand"
                )
            if self.policies.health_check.kind == "sdk":
                raise ValueError(
                    "without the SDK choose a udp, tcp, http, dns or exec health check"
                )
        return self

    def _check_sync(self) -> None:
        if self.state_sync is None:
            return
        if self.state_mode == "none":
            raise ValueError(
                f"state_sync {self.state_sync!r} needs a stateful VNF; this one keeps no state "
                f"(model {self.redundancy.model}, state: none)"
            )
        if self.state_sync == "direct" and self.redundancy.model != "2n":
            raise ValueError("state_sync 'direct' needs a standby to sync with: model 2n")

    @property
    def state_mode(self) -> StateMode:
        default: dict[str, StateMode] = {"2n": "replicated", "n+m": "none", "none": "checkpoint"}
        return self.state or default[self.redundancy.model]

    @property
    def sync(self) -> StateSync | None:
        """How the state is kept; None for a stateless VNF."""
        if self.state_mode == "none":
            return None
        return self.state_sync or ("direct" if self.redundancy.model == "2n" else "manager")

    @property
    def service_mode(self) -> ServiceMode:
        """What the manager's checkpoint service does for this VNF."""
        return "external" if self.sync in ("shared_storage", "store") else self.state_mode


class HostReliability(Strict):
    """How often an entity fails and how long its repair takes (``nfvha predict``)."""

    mtbf_h: PositiveFloat  # mean time between failures of one entity, hours
    # Its repair: replaces the simulator's start-up time for it (VNFC start-up, VM boot, host
    # boot). Absent: the measured default.
    mttr_h: PositiveFloat | None = None


class EntityReliability(HostReliability):
    hang_fraction: float = Field(0.0, ge=0.0, le=1.0)  # the failures that are hangs, not crashes


class Reliability(Strict):
    """Per kind of entity; an absent kind does not fail."""

    vnfc: EntityReliability | None = None
    vm: EntityReliability | None = None
    host: HostReliability | None = None  # hosts only crash


class Network(Strict):
    """Where the VNFCs (or VMs) and consumers live on the network.

    loopback: every process on this machine's loopback (no privileges needed). netns: each VNFC
    (or, with hosts, each VM) in a network namespace of its own on a bridge, consumers in one
    of theirs, virtual IPs moved with gratuitous ARP (needs root and ``ip netns``). auto: netns
    where this machine can, loopback elsewhere; the mode in use is printed at start."""

    mode: Literal["loopback", "netns", "auto"] = "loopback"
    subnet: Annotated[str, AfterValidator(_ipv4_network)] = "10.77.0.0/24"


def _coordination(value: object) -> object:
    """``embedded`` or ``etcd://HOST:PORT,HOST:PORT``: the short forms of the mapping."""
    if not isinstance(value, str):
        return value
    if value == "embedded":
        return {"backend": "embedded"}
    if value.startswith("etcd://"):
        return {"backend": "etcd", "endpoints": value.removeprefix("etcd://")}
    raise ValueError(f"expected 'embedded' or 'etcd://HOST:PORT,...', got {value!r}")


class Coordination(Strict):
    """Who leads the deployment's managers. ``embedded``: a lock on this machine (the default,
    one machine). ``etcd``: a lease on an etcd 3 cluster (``endpoints``), so that managers on
    several machines elect one leader; ``ttl_s`` is the lease (a dead leader is followed within
    about ``ttl_s`` + 0.5 s when its successor runs elsewhere, at once on the same machine)."""

    backend: Literal["embedded", "etcd"] = "embedded"
    endpoints: Annotated[list[str], BeforeValidator(_endpoints)] = []
    ttl_s: int = Field(2, ge=1, le=60)
    prefix: str = Field("/nfvha", pattern=r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$")

    @field_validator("endpoints")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            parse_address(endpoint)
        return value

    @model_validator(mode="after")
    def _complete(self) -> Coordination:
        if self.backend == "etcd" and not self.endpoints:
            raise ValueError("etcd coordination needs endpoints (HOST:PORT,...)")
        if self.backend == "embedded" and self.endpoints:
            raise ValueError("endpoints are for backend etcd; embedded coordination has none")
        return self

    @property
    def min_role_lease_ms(self) -> int:
        """A role lease that outlasts a manager takeover: the leader's etcd lease, etcd's expiry
        granularity (0.5 s) and the standby's next campaign (a quarter of the TTL). Shorter, an
        active would fence itself at every takeover."""
        return 0 if self.backend == "embedded" else int(self.ttl_s * 1250 + 500)


class Deployment(Strict):
    name: Name
    vnfs: list[Vnf] = Field(min_length=1)
    state_dir: str | None = None  # checkpoints; default ~/.local/state/nfvha/NAME
    # The NFVI: without hosts the VNFCs run as plain processes of this machine.
    hosts: list[Host] = []
    vms: list[VmDecl] = []
    nfvi: Nfvi = Nfvi()
    reliability: Reliability | None = None  # for 'nfvha predict'
    metrics: MetricsEndpoint | None = None  # absent: no metrics endpoint
    network: Network = Network()
    coordination: Annotated[Coordination, BeforeValidator(_coordination)] = Coordination()

    @model_validator(mode="after")
    def _unique(self) -> Deployment:
        names = [v.name for v in self.vnfs] + [c.name for v in self.vnfs for c in v.vnfcs]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"VNF and VNFC names must be unique, repeated: {', '.join(dupes)}")
        addresses = [v.service.address for v in self.vnfs]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two services share one address")
        self._check_vips()
        self._check_nfvi()
        return self._leases_outlast_takeover()

    def _leases_outlast_takeover(self) -> Deployment:
        """With etcd, a role lease left at its default is raised to outlast a takeover (twice
        the TTL); one set shorter than the takeover is refused."""
        least = self.coordination.min_role_lease_ms
        if not least:
            return self
        vnfs = []
        for i, vnf in enumerate(self.vnfs):
            lease = vnf.policies.role_lease_ms
            # Compared with the default, not model_fields_set: a dumped model sets every field.
            if lease == Policies.model_fields["role_lease_ms"].default:
                lease = max(lease, self.coordination.ttl_s * 2000)
            elif lease < least:
                raise ValueError(
                    f"vnfs[{i}].policies.role_lease_ms: {lease} ms is shorter than a manager "
                    f"takeover on etcd (coordination.ttl_s {self.coordination.ttl_s} s: at least "
                    f"{least} ms), so an active would stop serving at every takeover"
                )
            policies = vnf.policies.model_copy(update={"role_lease_ms": lease})
            vnfs.append(vnf.model_copy(update={"policies": policies}))
        nfvi = self.nfvi
        if nfvi.fencing == "watchdog":
            if nfvi.agent_lease_ms == Nfvi.model_fields["agent_lease_ms"].default:
                lease = max(nfvi.agent_lease_ms, self.coordination.ttl_s * 2000)
                nfvi = nfvi.model_copy(update={"agent_lease_ms": lease})
            elif nfvi.agent_lease_ms < least:
                raise ValueError(
                    f"nfvi.agent_lease_ms: {nfvi.agent_lease_ms} ms is shorter than a manager "
                    f"takeover on etcd (at least {least} ms), so every VM would fence itself at "
                    "every takeover"
                )
        return self.model_copy(update={"vnfs": vnfs, "nfvi": nfvi})

    def _check_vips(self) -> None:
        vips = [v.service.vip for v in self.vnfs if v.service.vip is not None]
        dupes = repeated(vips)
        if dupes:
            raise ValueError(f"a virtual IP belongs to one service, repeated: {', '.join(dupes)}")
        subnet = ipaddress.IPv4Network(self.network.subnet)
        for i, vnf in enumerate(self.vnfs):
            if vnf.service.vip is None:
                continue
            ip = ipaddress.IPv4Address(vnf.service.vip)
            if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
                raise ValueError(
                    f"vnfs[{i}].service.vip: {ip} is not a host address of network.subnet {subnet}"
                )

    def _check_nfvi(self) -> None:
        hosts = [h.name for h in self.hosts]
        vms = [v.name for v in self.vms]
        for label, names in (("host", hosts), ("VM", vms)):
            dupes = repeated(names)
            if dupes:
                raise ValueError(f"{label} names must be unique, repeated: {', '.join(dupes)}")
        if self.vms and not self.hosts:
            raise ValueError("VMs are declared but no hosts: declare 'hosts' too")
        if self.nfvi.host_agents == "external" and self.coordination.backend != "etcd":
            raise ValueError(
                "nfvi.host_agents: external host agents find the leading manager through etcd: "
                "set coordination to etcd://HOST:PORT,..."
            )
        if not self.hosts and (self.nfvi.transport == "tls" or self.nfvi.fencing == "watchdog"):
            raise ValueError("nfvi transport tls and fencing watchdog are for VMs: declare 'hosts'")
        rel = self.reliability
        if rel is not None and (rel.vm or rel.host) and not self.hosts:
            raise ValueError(
                "reliability of VMs or hosts needs 'hosts': without them the VNFCs run as plain "
                "processes, on no VM or host that could fail"
            )
        standby = [v.name for v in self.vnfs if v.repair.action == "failover_standby_vm"]
        if standby and len(hosts) < 2:
            raise ValueError(
                f"repair action failover_standby_vm ({', '.join(standby)}) needs at least two "
                "hosts: the standby VM runs on another host than its VM"
            )
        known_hosts, known_vms = set(hosts), set(vms)
        for vm in self.vms:
            if vm.host is not None and vm.host not in known_hosts:
                raise ValueError(f"VM {vm.name} is placed on unknown host {vm.host!r}")
        for vnf in self.vnfs:
            for c in vnf.vnfcs:
                if c.vm is not None and c.vm not in known_vms:
                    raise ValueError(f"VNFC {c.name} is placed on unknown VM {c.vm!r}")


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def read_yaml(path: Path) -> object:
    """The YAML of a file; a ConfigError names the file (line and column if known) and why."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None


def read_mapping(path: Path) -> dict[str, object]:
    """A YAML file that must hold a mapping (a deployment, a scenario)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def invalid(path: Path | str, exc: ValidationError) -> ConfigError:
    """One line per problem: the file, the path inside it, what is wrong."""
    return ConfigError(
        "\n".join(
            f"{path}: {_location(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    )


def load(path: str | Path) -> tuple[Deployment, Path]:
    """Read and validate CONFIG; returns the deployment and the directory commands run in."""
    path = Path(path)
    raw = read_mapping(path)
    try:
        deployment = Deployment.model_validate(raw)
    except ValidationError as exc:
        raise invalid(path, exc) from None
    return with_load_balancers(deployment, path), path.resolve().parent


def load_balancer_problems(dep: Deployment) -> list[str]:
    """What is wrong with the ``load_balancer`` blocks: one line each, path first."""
    problems: list[str] = []
    names = {v.name for v in dep.vnfs} | {c.name for v in dep.vnfs for c in v.vnfcs}
    ports: dict[int, str] = {}
    for i, vnf in enumerate(dep.vnfs):
        lb, at = vnf.load_balancer, f"vnfs[{i}].load_balancer"
        if lb is None:
            continue
        if vnf.redundancy.model != "n+m":
            problems.append(
                f"{at}: needs model n+m (N actives behind one address), not {vnf.redundancy.model}"
            )
        if vnf.service.protocol != "tcp":
            problems.append(
                f"{at}: HAProxy balances tcp (and http over it), not {vnf.service.protocol}: "
                "set service.protocol: tcp"
            )
        if vnf.policies.health_check.address is not None:
            problems.append(
                f"vnfs[{i}].policies.health_check.address: each pooled VNFC is checked on its "
                "own backend address; leave it out"
            )
        taken = sorted(names & {lb_vnf_name(vnf.name), *lb_vnfc_names(vnf.name)})
        if taken or len(lb_vnfc_names(vnf.name)[0]) > 63:
            problems.append(
                f"{at}: its load balancer is the VNF {lb_vnf_name(vnf.name)} with VNFCs "
                f"{', '.join(lb_vnfc_names(vnf.name))}: "
                + (f"{', '.join(taken)} already taken" if taken else "a name over 63 characters")
            )
        port = parse_address(vnf.service.address)[1]
        if port in ports:
            problems.append(
                f"vnfs[{i}].service.address: port {port} is the port of {ports[port]} too: "
                "the backends of load-balanced VNFs on loopback differ only by port"
            )
        ports.setdefault(port, vnf.name)
        if dep.network.mode == "netns" and vnf.service.vip is None:
            problems.append(
                f"vnfs[{i}].service.vip: in network mode netns consumers reach the load "
                "balancer at a virtual IP (held by the active HAProxy's node): set one"
            )
        if lb.pool == "vm":
            problems += _vm_pool_problems(dep, i)
        elif dep.network.mode != "loopback" and (shared := _shared_vms(vnf)):
            problems.append(
                f"vnfs[{i}].vnfcs: in network mode {dep.network.mode} a VM is one network node "
                f"and its VNFCs share its address and the service port: each pooled VNFC needs "
                f"a VM of its own; shared: {', '.join(shared)}"
            )
    return problems


def _shared_vms(vnf: Vnf) -> list[str]:
    return repeated([c.vm for c in vnf.vnfcs if c.vm is not None])


def _vm_pool_problems(dep: Deployment, i: int) -> list[str]:
    vnf = dep.vnfs[i]
    if not dep.hosts:
        return [
            f"vnfs[{i}].load_balancer.pool: vm needs hosts: the pool's servers are the VMs "
            "the VNFCs run in; declare 'hosts' (or use pool: vnfc)"
        ]
    shared = _shared_vms(vnf)
    if shared:
        return [
            f"vnfs[{i}].vnfcs: with pool: vm each VNFC runs in a VM of its own (a VM is one "
            f"server of the pool); shared: {', '.join(shared)}"
        ]
    return []


def lb_vnf_name(vnf: str) -> str:
    return f"{vnf}-lb"


def lb_vnfc_names(vnf: str) -> tuple[str, str]:
    return f"{vnf}-lb-a", f"{vnf}-lb-b"


LB_CONFIG = "haproxy.cfg"


def lb_config_path(runtime_dir: Path, lb_vnfc: str) -> Path:
    """Where nfvha writes the configuration of one HAProxy instance of a load balancer."""
    return runtime_dir / "lb" / lb_vnfc / LB_CONFIG


def with_load_balancers(dep: Deployment, source: Path | str = "") -> Deployment:
    """The deployment with the implicit load-balancer VNF of every ``load_balancer`` block
    (a ConfigError, naming the file, for each problem). The LB VNF ``<vnf>-lb`` is 2n, without
    the SDK, stateless: two HAProxy instances, both carrying the pool (the passive is hot),
    each checked on its own monitor address. The service's virtual IP moves to it (the LB
    pair holds the address consumers use). It is built unvalidated: it shares its service
    address with the pooled VNF by design, and a 2n hot standby without the SDK is
    otherwise accepted only with a virtual IP."""
    problems = load_balancer_problems(dep)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    if not any(v.load_balancer for v in dep.vnfs):
        return dep
    from nfvha.runtime.paths import runtime_dir  # the sockets' place; paths imports nothing

    binary = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    for vnf in dep.vnfs:
        sock = lb_config_path(runtime_dir(dep.name), lb_vnfc_names(vnf.name)[0]).parent
        if vnf.load_balancer is not None and len(f"{sock}/admin.sock") > 97:
            raise ConfigError(
                f"{source}: the admin socket of {vnf.name}'s load balancer would be "
                f"{sock}/admin.sock, over HAProxy's 97 bytes: set NFVHA_RUNTIME_DIR shorter"
            )
    vnfs: list[Vnf] = []
    for vnf in dep.vnfs:
        if vnf.load_balancer is None:
            vnfs.append(vnf)
            continue
        service = vnf.service.model_copy(update={"vip": None})
        vnfs.append(vnf.model_copy(update={"service": service}))
        vnfs.append(_lb_vnf(vnf, runtime_dir(dep.name), binary or "haproxy"))
    return dep.model_copy(update={"vnfs": vnfs})


def _lb_vnf(vnf: Vnf, rundir: Path, binary: str) -> Vnf:
    name = lb_vnf_name(vnf.name)
    vnfcs = [
        Vnfc(name=c, command=[binary, "-db", "-f", str(lb_config_path(rundir, c))])
        for c in lb_vnfc_names(vnf.name)
    ]
    check = HealthCheck(kind="http", path="/healthz", interval_ms=100, failure_threshold=3)
    lb = Vnf.model_construct(
        name=name,
        redundancy=Redundancy(model="2n"),
        service=Service(
            name=f"{vnf.service.name}-lb",
            protocol="tcp",
            address=vnf.service.address,
            vip=vnf.service.vip,
        ),
        vnfcs=vnfcs,
        # The pooled VNF's restart policy (start limit, delays) is the pair's too.
        policies=vnf.policies.model_copy(update={"health_check": check, "cleanup_grace_ms": 200}),
        state="none",
        sdk=False,
    )
    lb._balances = vnf.name
    return lb


def warnings(deployment: Deployment) -> list[str]:
    """What is valid but probably not meant: one line each, the path inside the file first."""
    return (
        _health_warnings(deployment) + _lb_vip_warnings(deployment) + _unfenced_warnings(deployment)
    )


def _unfenced_warnings(deployment: Deployment) -> list[str]:
    """With etcd a leader may be elected on another machine, which waits one lease for what
    the previous term left to stop serving: a plain process outside a watchdog-fenced VM has no
    lease, so nothing makes it stop."""
    if deployment.coordination.backend != "etcd":
        return []
    fenced_vms = bool(deployment.hosts) and deployment.nfvi.fencing == "watchdog"
    return [
        f"vnfs[{i}].sdk: a plain process holds no role lease, so a manager elected on another "
        "machine cannot know it stopped serving; give it hosts with nfvi.fencing: watchdog, or "
        "run every manager instance on the machine of its VNFCs"
        for i, vnf in enumerate(deployment.vnfs)
        if not vnf.sdk and not fenced_vms
    ]


def _lb_vip_warnings(deployment: Deployment) -> list[str]:
    """The virtual IP of a load balancer is on its implicit VNF (``with_load_balancers``)."""
    if deployment.network.mode != "auto":
        return []
    lbs = {v.balances: v for v in deployment.vnfs if v.balances is not None}
    declared = [v for v in deployment.vnfs if v.balances is None]  # the file's own, in order
    return [
        f"vnfs[{i}].service.vip: where mode auto picks netns, consumers reach the load balancer "
        "only at a virtual IP; without one it is unreachable from other namespaces"
        for i, vnf in enumerate(declared)
        if vnf.name in lbs and lbs[vnf.name].service.vip is None
    ]


def _health_warnings(deployment: Deployment) -> list[str]:
    return [
        f"vnfs[{i}].policies.health_check.kind: tcp only connects, and the kernel completes a "
        "connection to a hung (stopped) process's listening socket: a hang goes unseen; use a "
        "check that speaks the protocol (http, dns, udp, exec)"
        for i, vnf in enumerate(deployment.vnfs)
        if vnf.policies.health_check.kind == "tcp"
    ]
