"""What will fail, found before anything starts: ``nfvha check`` reports it, ``nfvha run``
refuses to start on an error (a command that does not exist would otherwise fail a few times in
milliseconds and escalate, with the reason only in the trace).

Each finding names the path inside the deployment file and what is wrong. Errors: a VNFC command
not found or not executable (resolved as the engine starts it: on the VNFC's PATH with the
interpreter's bin dir first, relative to the file's directory), a service or health-check port
that cannot be bound now, a state directory or shared log that cannot be written, a user or
group that does not exist (or nfvha not root), limits without cgroup containment or its
controllers. Warnings: a health check whose protocol or port does not fit the service, and
VNFCs held only by process groups (a daemon that detaches escapes them).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nfvha.config import Deployment, Vnf, parse_address
from nfvha.drivers import containment
from nfvha.drivers.process import resolve_command, resolve_ids

# The protocols each health-check kind speaks (a kind not listed is not compared).
KIND_PROTOCOLS = {"udp": {"udp"}, "tcp": {"tcp"}, "http": {"tcp"}, "dns": {"udp", "tcp"}}


@dataclass(frozen=True, slots=True)
class Finding:
    level: Literal["error", "warning"]
    where: str  # the path inside the deployment file
    what: str

    def line(self, file: Path | str) -> str:
        return f"{file}: {self.where}: {self.what}"


def preflight(
    dep: Deployment, base_dir: Path, state_dir: Path, *, ports_held_ok: bool = False
) -> list[Finding]:
    """Every finding, errors first. ``ports_held_ok``: a port in use is only a warning (the
    deployment runs, or a dead run left VNFCs that will be adopted or removed first)."""
    found = _containment(dep)
    found += _writable(state_dir, "state_dir", "the state directory")
    for i, vnf in enumerate(dep.vnfs):
        found += _vnf(vnf, f"vnfs[{i}]", base_dir, ports_held_ok)
    return sorted(found, key=lambda f: f.level != "error")


def _vnf(vnf: Vnf, at: str, base_dir: Path, ports_held_ok: bool) -> list[Finding]:
    found: list[Finding] = []
    for j, vnfc in enumerate(vnf.vnfcs):
        here = f"{at}.vnfcs[{j}]"
        env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.update(vnfc.env)
        try:
            resolve_command(vnfc.command, env, base_dir)
        except OSError as exc:
            found.append(Finding("error", f"{here}.command", str(exc)))
        try:
            resolve_ids(vnfc.user, vnfc.group)
        except OSError as exc:
            found.append(Finding("error", f"{here}.{'user' if vnfc.user else 'group'}", str(exc)))
        found += _limits(vnfc.limits.files(), f"{here}.limits")
    service = vnf.service
    found += _bindable(service.address, service.protocol, f"{at}.service.address", ports_held_ok)
    found += _health_target(vnf, f"{at}.policies.health_check", ports_held_ok)
    if vnf.sync == "shared_storage" and vnf.state_store.path:
        log = base_dir / vnf.state_store.path
        found += _writable(log.parent, f"{at}.state_store.path", f"the directory of {log}")
    return found


def _health_target(vnf: Vnf, at: str, ports_held_ok: bool) -> list[Finding]:
    check, service = vnf.policies.health_check, vnf.service
    speaks = KIND_PROTOCOLS.get(check.kind)
    if speaks is None:
        return []
    found = []
    if service.protocol not in speaks:
        found.append(
            Finding(
                "warning",
                f"{at}.kind",
                f"a {check.kind} check against a {service.protocol} service: it probes "
                "something the service does not serve",
            )
        )
    if check.address is None or check.address == service.address:
        return found
    if parse_address(check.address)[1] != parse_address(service.address)[1]:
        found.append(
            Finding(
                "warning",
                f"{at}.address",
                f"checks port {parse_address(check.address)[1]}, not the service's "
                f"({service.address}): a service that stops answering may go unseen",
            )
        )
    protocol = service.protocol if service.protocol in speaks else sorted(speaks)[0]
    return found + _bindable(check.address, protocol, f"{at}.address", ports_held_ok)


def _bindable(address: str, protocol: str, at: str, held_ok: bool) -> list[Finding]:
    """Can the VNFC bind ``address`` now? A non-local address is not ours to test."""
    host, port = parse_address(address)
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    try:
        family = socket.getaddrinfo(host, port, type=kind)[0][0]
        with socket.socket(family, kind) as sock:
            sock.bind((host, port))
    except socket.gaierror as exc:
        return [Finding("error", at, f"cannot resolve {host}: {exc.strerror}")]
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return []  # not an address of this machine: another host's
        what = f"{protocol} {address} cannot be bound now: {exc.strerror}"
        if exc.errno == errno.EADDRINUSE:
            what = f"{protocol} {address} is in use: another process holds it"
            if held_ok:
                return [Finding("warning", at, f"{what} (the deployment's own VNFCs?)")]
        return [Finding("error", at, what)]
    return []


def _writable(path: Path, at: str, what: str) -> list[Finding]:
    """The directory, or the nearest ancestor it would be created in, is writable."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [Finding("error", at, f"{what} {path}: {existing} is not a directory")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Finding("error", at, f"{what} {path}: {existing} is not writable")]
    return []


def _containment(dep: Deployment) -> list[Finding]:
    """VNFCs without hosts run in cgroups when nfvha can make them, else a warning."""
    if dep.hosts:
        return []  # in their VMs' cgroups (the NFVI needs them anyway)
    base, why = containment.locate(dep.name)
    if base is None:
        return [Finding("warning", "vnfs", containment.ESCAPE_WARNING.format(why=why))]
    return []


def _limits(files: dict[str, str], at: str) -> list[Finding]:
    if not files:
        return []
    # The deployment name does not change where the hierarchy is or what it offers.
    base, why = containment.locate("_")
    if base is None:
        return [Finding("error", at, f"limits need cgroup containment, and there is none: {why}")]
    offered = containment.controllers(base)
    missing = sorted({f.split(".")[0] for f in files} - offered)
    if missing:
        return [
            Finding(
                "error",
                at,
                f"the cgroup v2 hierarchy offers no {' or '.join(missing)} controller here "
                f"(it offers: {', '.join(sorted(offered)) or 'none'})",
            )
        ]
    return []
