"""keepalived (VRRP) in a node's network namespace: the peer that users pick for a virtual IP,
run beside nfvha for side-by-side measurements (bench/vip.py, tests). Not used by the managers.

Contracts:
- ``binary()`` is the keepalived executable (Debian's package puts it in /usr/sbin) or None.
- ``vrrp_config`` writes one VRRPv3 instance the way its users typically do: one node
  ``state MASTER`` with the higher priority, the other ``BACKUP``; preemption on (keepalived's
  default: the higher priority takes the VIP back when it returns) unless ``preempt=False``;
  multicast adverts on the interface unless unicast peers are given; ``advert_int`` in seconds
  (VRRPv3 allows centiseconds: 0.01 is its minimum). Its state changes are written to a FIFO
  (``notify_fifo``), read here with their CLOCK_MONOTONIC receive time.
- ``Keepalived.start`` runs ``keepalived -n -l -D -P`` (foreground, log to stdout, VRRP only)
  inside the node's namespace through ``ip netns exec``, with its configuration, pid files, FIFO
  and log in the caller's directory, so any number run side by side and nothing is written
  elsewhere. ``kill()`` SIGKILLs its processes together (``kill_together``): no goodbye
  advert, and the VIP stays on the interface, as when a node's keepalived crashes. ``stop()``
  ends it (SIGTERM, then SIGKILL) and its FIFO reader; both are idempotent.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

STOP_WAIT_S = 5.0
STATES = ("INIT", "BACKUP", "MASTER", "FAULT", "STOP", "DELETED")


def binary() -> str | None:
    return shutil.which("keepalived", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def vrrp_config(
    name: str,
    *,
    interface: str,
    vip: str,
    prefixlen: int,
    priority: int,
    advert_s: float,
    fifo: Path,
    master: bool,
    vrid: int = 51,
    preempt: bool = True,
    unicast_src: str | None = None,
    unicast_peers: tuple[str, ...] = (),
) -> str:
    """One VRRPv3 instance ``VI`` holding ``vip``; see the module's contracts."""
    lines = [
        "global_defs {",
        f"  router_id {name}",
        f"  notify_fifo {fifo}",
        "}",
        "vrrp_instance VI {",
        f"  state {'MASTER' if master else 'BACKUP'}",
        f"  interface {interface}",
        f"  virtual_router_id {vrid}",
        f"  priority {priority}",
        f"  advert_int {advert_s:g}",
        "  version 3",
    ]
    if not preempt:
        lines.append("  nopreempt")
    if unicast_peers:
        if unicast_src:
            lines.append(f"  unicast_src_ip {unicast_src}")
        lines += ["  unicast_peer {", *(f"    {p}" for p in unicast_peers), "  }"]
    lines += ["  virtual_ipaddress {", f"    {vip}/{prefixlen} dev {interface}", "  }", "}"]
    return "\n".join(lines) + "\n"


def kill_together(pids: list[int]) -> None:
    """SIGSTOP them all, then SIGKILL them all: none can react to another's death (a parent
    restarting its child, a child told of its parent's death leaving cleanly with a goodbye
    advert)."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


@dataclass
class Transition:
    t: int  # CLOCK_MONOTONIC ns when read from the FIFO
    state: str  # one of STATES
    priority: int


@dataclass
class Keepalived:
    """One keepalived in namespace ``netns``; files in ``work`` named after ``name``."""

    name: str
    netns: str
    work: Path
    transitions: list[Transition] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def path(self, suffix: str) -> Path:
        return self.work / f"{self.name}.{suffix}"

    def start(self, config: str, exe: str | None = None) -> None:
        exe = exe or binary()
        if exe is None:
            raise FileNotFoundError("keepalived is not installed (Debian package keepalived)")
        self.path("conf").write_text(config)
        fifo = self.path("fifo")
        if not fifo.exists():
            os.mkfifo(fifo)
        # Opened read-write: it never reports EOF whether or not keepalived has it open.
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self._reader = threading.Thread(
            target=self._read, args=(fd,), name=f"keepalived-{self.name}", daemon=True
        )
        self._reader.start()
        files = ["-p", "pid", "-r", "vrrp.pid", "-c", "checkers.pid"]
        args = [a if a.startswith("-") else str(self.path(a)) for a in files]
        with open(self.path("log"), "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, exe, "-n", "-l", "-D", "-P"]
                + ["-f", str(self.path("conf")), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's signals are not its
            )

    def _read(self, fd: int) -> None:
        buffer = b""
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.05)
                if not ready:
                    continue
                with contextlib.suppress(BlockingIOError):
                    buffer += os.read(fd, 4096)
                t = time.monotonic_ns()
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._parse(t, line.decode(errors="replace"))
        finally:
            os.close(fd)

    def _parse(self, t: int, line: str) -> None:
        # INSTANCE "VI" MASTER 150
        parts = line.split()
        if len(parts) == 4 and parts[0] == "INSTANCE" and parts[2] in STATES:
            priority = int(parts[3]) if parts[3].isdigit() else 0
            self.transitions.append(Transition(t, parts[2], priority))

    @property
    def state(self) -> str | None:
        return self.transitions[-1].state if self.transitions else None

    def pids(self) -> list[int]:
        """keepalived's parent and its VRRP child (``ip netns exec`` became the parent)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in children.split()]
        return pids

    def kill(self) -> list[int]:
        """SIGKILL the parent and its VRRP child as one; the pids killed."""
        pids = self.pids()
        kill_together(pids)
        if self.proc is not None:
            self.proc.wait(timeout=STOP_WAIT_S)
        return pids

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # keepalived removes its VIPs and exits
            try:
                self.proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stop.set()
        if self._reader is not None:
            self._reader.join()
            self._reader = None

    def log(self) -> str:
        try:
            return self.path("log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
