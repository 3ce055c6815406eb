"""HAProxy as a load balancer, driven through its runtime API (the admin stats socket).

The building block of active/active behind a load balancer (section 3.1, both cases; the
pools nfvha keeps are runtime/pool.py's). One HAProxy child serves one frontend address and
one backend pool of named server slots; every change afterwards goes over the runtime API,
never a reload or a restart.

Contracts:
- ``HaproxyConfig.render()`` is the whole configuration: the admin socket
  (``RUNTIME_DIR/admin.sock``, mode 600, level admin), one frontend, one backend with one
  ``server`` line per slot and HAProxy's own health checks (``check inter X fall Y rise Z``;
  ``tcp``: a connect; ``http``: a request answered with the expected status). A slot without an
  address starts in maintenance (``disabled``) on a placeholder address, for ``set_addr`` later.
  A failed connection is retried on another server (``retries``, ``option redispatch 1``), so a
  server that died but is not yet seen down by the checks costs the consumer a retry, not an
  error; HAProxy waits min(``timeout connect``, 1 s) before retrying, so ``connect_timeout_ms``
  bounds that delay. In ``mode http`` a request whose connection the server closed without an
  answer (it died holding it) is retried too (``retry-on conn-failure empty-response``).
  Options: ``Server.disabled`` starts a slot with an address in maintenance; ``checks=False``
  leaves out HAProxy's checks (the pool is only what the runtime API sets); ``monitor`` adds a
  frontend on that address whose ``GET /healthz`` HAProxy answers itself (a check of this
  instance alone); ``bind_options`` go on the frontend's bind line.
- ``LoadBalancer.start()`` writes the configuration, has HAProxy check it (``-c``), starts
  ``haproxy -db -f CFG`` in a session and process group of its own (output to
  ``RUNTIME_DIR/haproxy.log``) and returns once the admin socket answers; it raises
  ``HaproxyError`` with HAProxy's own output when it does not. ``stop()`` SIGTERMs the group,
  SIGKILLs it after the grace, reaps the leader and removes the files it wrote.
- The runtime API client sends one command per connection (HAProxy's non-interactive mode:
  the answer ends when HAProxy closes the socket), with a timeout for the whole exchange.
  Arguments are validated before anything is sent (no ``;`` or line break can smuggle a
  second command). ``HaproxyUnreachable`` when the socket cannot be reached;
  ``HaproxyError`` when HAProxy refuses or does not understand the command, or the exchange
  times out, with HAProxy's answer in the message.
- ``servers()`` parses ``show servers state BACKEND`` (format 1) by the names in its header.
  ``watch(interval, on_change)`` polls it and calls ``on_change(state, previous)`` whenever a
  server's operational state (what HAProxy's checks see) changes, and once per server at the
  start (``previous`` None); errors of the runtime API end the watch with the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

AdminState = Literal["ready", "drain", "maint"]
OperState = Literal["down", "starting", "up", "stopping"]

SOCKET_NAME = "admin.sock"
CONFIG_NAME = "haproxy.cfg"
LOG_NAME = "haproxy.log"
PLACEHOLDER = "127.0.0.1:1"  # the address of a slot configured without one (in maintenance)
_UNIX_PATH_MAX = 97  # HAProxy's own limit for a stats socket path (the kernel's: 107)
_PASSED = frozenset({"L4OK", "L6OK", "L7OK", "L7OKC", "PROCOK"})
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# srv_op_state (enum srv_state)
_OPER: dict[int, OperState] = {0: "down", 1: "starting", 2: "up", 3: "stopping"}
# srv_admin_state bits (enum srv_admin): FMAINT 0x01, IMAINT 0x02, CMAINT 0x04 (configured
# disabled: a marker that stays after "ready"), FDRAIN 0x08, IDRAIN 0x10, RMAINT 0x20 (address
# resolution), HMAINT 0x40 (maintenance from the configuration file's state)
_MAINT_BITS = 0x01 | 0x02 | 0x20 | 0x40
_DRAIN_BITS = 0x08 | 0x10
# srv_check_status (enum healthcheck_status), by HAProxy's own short names
_CHECK_STATUS = [
    "UNK", "INI", "START", "CHECKED", "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON",
    "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP", "L57DATA", "L7OK", "L7OKC", "L7STS",
    "PROCERR", "PROCTOUT", "PROCOK",
]  # fmt: skip


class HaproxyError(Exception):
    """HAProxy refused, misunderstood or did not answer a command, or would not start."""


class HaproxyUnreachable(HaproxyError):
    """The admin socket cannot be reached (HAProxy not running, or another path)."""


def _name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r}: only letters, digits, '_', '.', '-'")
    return value


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r}: expected IP:PORT")
    host = host.strip("[]")
    ipaddress.ip_address(host)  # ValueError when not an IP address
    return host, int(port)


@dataclass(frozen=True)
class Server:
    """A slot of the pool: its name, and its address (None: a slot in maintenance)."""

    name: str
    address: str | None = None
    disabled: bool = False  # starts in maintenance (out of the pool) until set ready

    def __post_init__(self) -> None:
        _name(self.name, "server name")
        if self.address is not None:
            _split(self.address)


@dataclass(frozen=True)
class HaproxyConfig:
    runtime_dir: Path
    frontend: str  # IP:PORT the consumers reach
    servers: tuple[Server, ...]
    mode: Literal["tcp", "http"] = "http"
    check_path: str = "/"  # http: the request of the health check
    check_status: int = 200  # http: the status a healthy server answers
    inter_ms: int = 100
    fall: int = 2
    rise: int = 2
    connect_timeout_ms: int = 500
    timeout_ms: int = 10_000  # client and server inactivity
    retries: int = 3
    backend: str = "pool"
    checks: bool = True  # False: no health checks; the pool is what the runtime API sets
    # A second frontend on this address whose GET /healthz HAProxy answers itself (200), so
    # that a check of this very instance does not depend on the pool or on another instance.
    monitor: str | None = None
    # Appended to the frontend's bind line, e.g. "transparent" for a VIP not held yet: HAProxy
    # has no "freebind" keyword; "transparent" sets IP_TRANSPARENT, else IP_FREEBIND.
    bind_options: str = ""

    def __post_init__(self) -> None:
        _split(self.frontend)
        if self.monitor is not None:
            _split(self.monitor)
        if not re.match(r"^[a-z0-9 -]*$", self.bind_options):
            raise ValueError(f"bind_options {self.bind_options!r}: bind keywords only")
        _name(self.backend, "backend name")
        if not self.servers:
            raise ValueError("a backend needs at least one server slot")
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique: {names}")
        if not re.match(r"^/[!-~]*$", self.check_path):
            raise ValueError(f"check_path {self.check_path!r}: an absolute path, no spaces")
        if len(str(self.socket)) > _UNIX_PATH_MAX:
            raise ValueError(f"admin socket path too long for a Unix socket: {self.socket}")
        for what in ("inter_ms", "fall", "rise", "connect_timeout_ms", "timeout_ms"):
            if getattr(self, what) < 1:
                raise ValueError(f"{what} must be at least 1")

    @property
    def socket(self) -> Path:
        return self.runtime_dir / SOCKET_NAME

    def render(self) -> str:
        check = f"check inter {self.inter_ms}ms fall {self.fall} rise {self.rise}"
        lines = [
            "global",
            f"    stats socket {self.socket} mode 600 level admin",
            "    stats timeout 10s",
            "",
            "defaults",
            f"    mode {self.mode}",
            f"    timeout connect {self.connect_timeout_ms}ms",
            f"    timeout client {self.timeout_ms}ms",
            f"    timeout server {self.timeout_ms}ms",
            f"    retries {self.retries}",
            "    option redispatch 1",
            # http: a request whose server died before answering is sent to another (L7 retry)
            *(["    retry-on conn-failure empty-response"] if self.mode == "http" else []),
            "",
            "frontend service",
            f"    bind {self.frontend} {self.bind_options}".rstrip(),
            f"    default_backend {self.backend}",
            "",
        ]
        if self.monitor is not None:
            lines += [
                "frontend monitor",
                "    mode http",
                f"    bind {self.monitor}",
                "    monitor-uri /healthz",
                "",
            ]
        lines += [f"backend {self.backend}", "    balance roundrobin"]
        if self.mode == "http" and self.checks:
            lines += [
                f"    option httpchk GET {self.check_path}",
                f"    http-check expect status {self.check_status}",
            ]
        if self.checks:
            lines.append(f"    default-server {check}")
        for s in self.servers:
            if s.address is None:
                lines.append(f"    server {s.name} {PLACEHOLDER} disabled")
            else:
                lines.append(
                    f"    server {s.name} {s.address}" + (" disabled" if s.disabled else "")
                )
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ServerState:
    """One server of the pool as ``show servers state`` reports it."""

    name: str
    address: str  # IP:PORT
    admin: AdminState  # what the operator (or the manager) set
    oper: OperState  # what HAProxy's health checks see
    check_status: str  # HAProxy's last check result: L7OK, L4CON, L7STS, INI, ...
    raw: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def up(self) -> bool:
        return self.oper == "up"

    @property
    def check_passed(self) -> bool:
        """The last health check passed. HAProxy counts a server up before its first check
        (INI) and on leaving maintenance (the previous result stays until the next check)."""
        return self.check_status in _PASSED


def parse_servers_state(text: str) -> list[ServerState]:
    """``show servers state`` (format 1): a version line, a header of field names, a line per
    server."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise HaproxyError(f"unexpected answer to 'show servers state': {text.strip()!r}")
    header = lines[1][2:].split()
    states = []
    for line in lines[2:]:
        values = line.split()
        if len(values) != len(header):
            raise HaproxyError(f"'show servers state': {len(values)} fields, not {len(header)}")
        row = dict(zip(header, values, strict=True))
        bits = int(row["srv_admin_state"])
        admin: AdminState = (
            "maint" if bits & _MAINT_BITS else "drain" if bits & _DRAIN_BITS else "ready"
        )
        status = int(row["srv_check_status"])
        states.append(
            ServerState(
                name=row["srv_name"],
                address=f"{row['srv_addr']}:{row['srv_port']}",
                admin=admin,
                oper=_OPER.get(int(row["srv_op_state"]), "down"),
                check_status=_CHECK_STATUS[status] if status < len(_CHECK_STATUS) else "?",
                raw=row,
            )
        )
    return states


async def runtime_command(path: Path | str, command: str, timeout: float = 2.0) -> str:
    """One command on one connection to HAProxy's admin socket; its whole answer."""
    if not command or "\n" in command or "\r" in command or ";" in command:
        raise ValueError(f"one runtime API command, without ';' or line breaks: {command!r}")

    async def exchange() -> str:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError as e:
            raise HaproxyUnreachable(f"HAProxy admin socket {path}: {e.strerror or e}") from e
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        except OSError as e:
            raise HaproxyError(f"{command!r} on {path}: {e.strerror or e}") from e
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        answer = await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        raise HaproxyError(f"{command!r} on {path}: no answer within {timeout}s") from None
    if answer.startswith("Unknown command"):
        raise HaproxyError(f"{command!r}: HAProxy: Unknown command")
    return answer


class LoadBalancer:
    """One HAProxy child and the runtime API client for its pool."""

    def __init__(
        self,
        runtime_dir: Path | str,
        frontend: str,
        servers: Sequence[Server | tuple[str, str | None]],
        *,
        binary: str | None = None,
        timeout: float = 2.0,
        **options: Any,
    ) -> None:
        slots = tuple(s if isinstance(s, Server) else Server(*s) for s in servers)
        self.config = HaproxyConfig(Path(runtime_dir), frontend, slots, **options)
        self.binary = binary
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._made_dir = False

    @property
    def socket(self) -> Path:
        return self.config.socket

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log(self) -> Path:
        return self.config.runtime_dir / LOG_NAME

    # -- the process --------------------------------------------------------------------

    def start(self, ready_timeout: float = 5.0) -> int:
        """Start HAProxy and wait (blocking, polling every 10 ms) until its admin socket
        answers; the pid."""
        if self.process is not None:
            raise HaproxyError(f"HAProxy already started (pid {self.process.pid})")
        binary = self.binary or shutil.which(
            "haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
        )
        if binary is None:
            raise HaproxyError("haproxy is not installed (Debian package haproxy)")
        rdir = self.config.runtime_dir
        if not rdir.exists():
            rdir.mkdir(parents=True, mode=0o700)
            self._made_dir = True
        cfg = rdir / CONFIG_NAME
        cfg.write_text(self.config.render())
        checked = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True)
        if checked.returncode != 0:
            out = (checked.stdout + checked.stderr).decode(errors="replace").strip()
            raise HaproxyError(f"HAProxy refused {cfg}: {out}")
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                out = self.log.read_text(errors="replace").strip()
                self.stop()
                raise HaproxyError(f"HAProxy exited at start ({out or 'no output'})")
            if self._answers():
                return self.process.pid
            if time.monotonic() > deadline:
                self.stop()
                raise HaproxyError(f"HAProxy's admin socket {self.socket} silent {ready_timeout}s")
            time.sleep(0.01)

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(str(self.socket))
                s.sendall(b"show info\n")
                return bool(s.recv(64))
            except OSError:
                return False

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace``; reap; remove the files."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        rdir = self.config.runtime_dir
        for name in (SOCKET_NAME, CONFIG_NAME, LOG_NAME):
            with contextlib.suppress(FileNotFoundError):
                (rdir / name).unlink()
        if self._made_dir:
            with contextlib.suppress(OSError):
                rdir.rmdir()
            self._made_dir = False

    # -- the runtime API ------------------------------------------------------------------

    async def command(self, command: str) -> str:
        """One raw runtime API command; HAProxy's answer (``HaproxyError`` when unknown)."""
        return await runtime_command(self.socket, command, self.timeout)

    def _target(self, server: str) -> str:
        return f"{self.config.backend}/{_name(server, 'server name')}"

    async def _silent(self, command: str) -> None:
        """A command whose success is an empty answer; anything else is HAProxy's refusal."""
        answer = (await self.command(command)).strip()
        if answer:
            raise HaproxyError(f"{command!r}: HAProxy: {answer}")

    async def set_state(self, server: str, state: AdminState) -> None:
        """ready: in the pool; drain: no new connections; maint: out of the pool."""
        if state not in ("ready", "drain", "maint"):
            raise ValueError(f"state {state!r}: expected 'ready', 'drain' or 'maint'")
        await self._silent(f"set server {self._target(server)} state {state}")

    async def set_health(self, server: str, enabled: bool) -> None:
        """Enable or disable HAProxy's health checks of a server."""
        verb = "enable" if enabled else "disable"
        await self._silent(f"{verb} health {self._target(server)}")

    async def set_addr(self, server: str, ip: str, port: int) -> None:
        """Point a slot at another server (its health checks follow)."""
        ipaddress.ip_address(ip)
        if not 0 < port < 65536:
            raise ValueError(f"port {port}: out of range")
        command = f"set server {self._target(server)} addr {ip} port {port}"
        answer = (await self.command(command)).strip()
        if "changed from" not in answer and "no need to change" not in answer:
            raise HaproxyError(f"{command!r}: HAProxy: {answer}")

    async def servers(self) -> list[ServerState]:
        command = f"show servers state {self.config.backend}"
        answer = await self.command(command)
        if not answer.startswith("1\n"):
            raise HaproxyError(f"{command!r}: HAProxy: {answer.strip()}")
        return parse_servers_state(answer)

    async def server(self, name: str) -> ServerState:
        for state in await self.servers():
            if state.name == name:
                return state
        raise HaproxyError(f"no server {name!r} in backend {self.config.backend}")

    async def watch(
        self,
        interval: float,
        on_change: Callable[[ServerState, ServerState | None], Awaitable[None] | None],
    ) -> None:
        """Until cancelled: every ``interval`` seconds, ``show servers state``; each server's
        operational state change (and each server's first state) goes to ``on_change``."""
        last: dict[str, ServerState] = {}
        while True:
            for state in await self.servers():
                previous = last.get(state.name)
                if previous is None or previous.oper != state.oper:
                    result = on_change(state, previous)
                    if result is not None:
                        await result
                last[state.name] = state
            await asyncio.sleep(interval)
