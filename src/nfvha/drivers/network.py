"""A provider network on real Linux network namespaces: a bridge, nodes on it with their own
addresses, and virtual IPs that move between nodes with gratuitous ARP. A building block of
issue 13; not yet used by the managers (runtime, core).

Contracts:
- ``available()`` says whether this machine can do it (root, network namespaces, ``ip netns``
  conventions), and why not; without it a caller falls back to loopback and says so.
  ``ProviderNetwork`` raises ``NetworkUnavailable`` (with that reason) instead of half-working.
- Every namespace is named ``nfvha-<tag>-<what>`` and created with the ``ip netns`` conventions
  (a bind mount under /run/netns), so ``ip netns list`` shows it and ``ip netns exec`` enters it.
  ``<tag>`` is derived from the deployment name alone (a readable slug and a hash), so a new run
  of the same deployment finds what a dead one left (``remove_leftovers``) and different
  deployments (parallel tests) never collide.
- The bridge lives in its own namespace (``nfvha-<tag>-net``, interface ``br0``, no address):
  nothing is created in the root namespace. Each node is a namespace ``nfvha-<tag>-<name>`` with
  loopback up and ``eth0``, one end of a veth pair whose other end (``v<N>``, N a counter) is a
  port of the bridge; ``eth0`` has the next free address of the subnet (from the first host on).
  Interface names are short and live inside the namespaces, so the 15-character limit and
  clashes between runs never arise.
- ``cut(node)``/``heal(node)`` set the node's bridge port (``Node.port``) down/up: a real link
  cut, seen inside the node as loss of carrier on ``eth0``; ``neighbour_mac(node, ip)`` reads
  the node's ARP entry (whether a consumer followed a VIP).
- ``claim(node, vip)`` adds ``vip/prefix`` to the node's ``eth0`` and sends ``GARP_COUNT``
  gratuitous ARP announcements from it; ``release(node, vip)`` deletes the address;
  ``holders(vip)``/``holder(vip)`` read who has it now from the kernel (``sampler(vip)`` too,
  fast enough to sample every few ms). Each claim and release returns a ``VipChange`` (also
  appended to ``changes``) for the caller's trace.
- ``remove()`` kills the processes still inside its namespaces (a server left in one would keep
  the namespace alive, unlisted), deletes the veths and the bridge, then the namespaces; it is
  idempotent. ``remove_leftovers(deployment)`` does the same for every namespace of that
  deployment's tag.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import ipaddress
import itertools
import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

NETNS_DIR = "/run/netns"
PREFIX = "nfvha-"
BRIDGE = "br0"
NODE_IF = "eth0"
DEFAULT_SUBNET = "10.77.0.0/24"
GARP_COUNT = 3  # keepalived sends 5 by default (garp_master_repeat); 3 is plenty on a bridge
GARP_INTERVAL_S = 0.005
KILL_WAIT_S = 5.0

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPOP_REQUEST = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class NetworkUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no netns support)."""


@dataclass(frozen=True)
class Node:
    name: str
    netns: str
    ifname: str
    address: str  # without prefix
    prefixlen: int
    mac: str
    port: str = ""  # the bridge-side end of its veth, in the network's namespace


@dataclass
class VipChange:
    """What a claim or release did: for the caller's trace."""

    action: str  # "claim" | "release"
    vip: str
    node: str
    netns: str
    ifname: str
    mac: str
    changed: bool  # False: the address was already there (claim) or already gone (release)
    t: int  # CLOCK_MONOTONIC ns when the address was added/removed
    garp: list[int] = field(default_factory=list)  # CLOCK_MONOTONIC ns of each announcement
    others: list[str] = field(default_factory=list)  # other nodes holding it at claim time

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- naming -------------------------------------------------------------------------------


def tag(deployment: str) -> str:
    """Short, stable, distinct per deployment: up to 8 characters of its name and 4 of a hash."""
    slug = re.sub(r"[^a-z0-9]+", "", deployment.lower())[:8] or "d"
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:4]
    return f"{slug}{digest}"


def namespace_prefix(deployment: str) -> str:
    return f"{PREFIX}{tag(deployment)}-"


def namespaces_of(deployment: str) -> list[str]:
    """The namespaces (``ip netns`` names) of this deployment that exist now."""
    prefix = namespace_prefix(deployment)
    return sorted(n for n in _listnetns() if n.startswith(prefix))


def all_namespaces() -> list[str]:
    """Every namespace named as nfvha names them, whatever the deployment."""
    return sorted(n for n in _listnetns() if n.startswith(PREFIX))


def _listnetns() -> list[str]:
    try:
        return os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []


# --- availability -------------------------------------------------------------------------

_available: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, "") when namespaces can be made here; else (False, why). Checked once, by making
    and removing a probe namespace: the only sure test (containers may forbid it even to
    root)."""
    global _available
    if _available is None:
        _available = _probe()
    return _available


def _probe() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, f"not root (uid {os.geteuid()}): network namespaces need CAP_SYS_ADMIN"
    if not os.path.exists("/proc/self/ns/net"):
        return False, "the kernel has no network namespaces (/proc/self/ns/net is missing)"
    try:
        from pyroute2 import netns
    except ImportError as e:  # pragma: no cover - a dependency
        return False, f"pyroute2 is not installed: {e}"
    name = f"{PREFIX}probe-{os.getpid()}"
    try:
        netns.create(name)
    except Exception as e:
        return False, f"cannot create a network namespace ({name}): {e}"
    try:
        netns.remove(name)
    except Exception as e:
        return False, f"cannot remove the probe network namespace {name}: {e}"
    return True, ""


# --- running code inside a namespace --------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter_netns(fd: int) -> None:
    """Move the calling thread (or a forked child before its exec) into the namespace ``fd``."""
    _setns(fd)


def in_namespace(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread that has entered ``netns``; return its result or raise its
    error.

    Why a thread: the network namespace is per thread (setns(2) changes only the caller), and a
    socket stays in the namespace it was created in whoever uses it later. So a short-lived
    thread enters the namespace, makes (and binds) the socket, and dies: no thread ever has to
    come back, so no failure can leave the manager's own threads in the wrong namespace.
    pyroute2's pushns/popns switch the calling thread and keep one process-wide stack, and
    record the namespace to return to from /proc/self (the main thread's, not the caller's):
    not safe beside the manager's other threads. A forked child (pyroute2's create_socket)
    is robust too but costs a fork per socket."""
    path = os.path.join(NETNS_DIR, netns)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            box["result"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket living in ``netns`` (usable from any thread)."""
    return in_namespace(netns, lambda: socket.socket(family, kind, proto))


@contextlib.contextmanager
def _rtnl(netns: str) -> Iterator[Any]:
    """pyroute2's netlink API in an existing namespace (flags=0: never create one)."""
    from pyroute2 import IPRoute

    ipr = IPRoute(netns=netns, flags=0)
    try:
        yield ipr
    finally:
        ipr.close()


# --- gratuitous ARP ------------------------------------------------------------------------


def garp_frame(mac: str, ip: str) -> bytes:
    """An ARP announcement (RFC 5227): a broadcast ARP request whose sender and target protocol
    addresses are both ``ip``, sender hardware address ``mac``. Linux takes it as gratuitous
    (sender == target) and overrides an existing neighbour entry at once, whatever its state."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    eth = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, ARPOP_REQUEST, hw, addr, b"\x00" * 6, addr
    )
    return (eth + arp).ljust(60, b"\x00")  # padded to Ethernet's minimum frame


def send_garp(
    netns: str,
    ifname: str,
    mac: str,
    ip: str,
    count: int = GARP_COUNT,
    interval: float = GARP_INTERVAL_S,
) -> list[int]:
    """Send ``count`` announcements of ``ip`` at ``mac`` out of ``ifname`` in ``netns`` from an
    AF_PACKET raw socket; the CLOCK_MONOTONIC ns of each."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # proto 0: send only
        try:
            s.bind((ifname, 0))  # the name is resolved in this namespace
        except BaseException:
            s.close()
            raise
        return s

    frame = garp_frame(mac, ip)
    sent: list[int] = []
    with in_namespace(netns, make) as s:
        for i in range(count):
            if i:
                time.sleep(interval)
            s.send(frame)
            sent.append(time.monotonic_ns())
    return sent


# --- processes inside namespaces -------------------------------------------------------------


def _pids_in(names: list[str]) -> dict[str, list[int]]:
    """Processes (thread group leaders) whose network namespace is one of ``names``."""
    wanted: dict[tuple[int, int], str] = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(os.path.join(NETNS_DIR, name))
            wanted[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        name = wanted.get((st.st_dev, st.st_ino))
        if name is not None:
            found.setdefault(name, []).append(int(entry))
    return found


def _kill_all(names: list[str]) -> list[int]:
    """SIGKILL every process in these namespaces, wait until none is left; the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        pids = [pid for group in _pids_in(names).values() for pid in group]
        pids = [pid for pid in pids if pid != os.getpid() and not _zombie(pid)]
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, f"processes still in namespaces {names}: {pids}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        # Not reaped here: a zombie no longer holds the namespace, and a child of ours belongs
        # to whoever started it (its Popen would lose the exit status).
        time.sleep(0.01)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def _remove_namespaces(names: list[str]) -> list[str]:
    """Kill what runs in them, then remove them (``ip netns del``); the names removed."""
    from pyroute2 import netns as pnetns

    _kill_all(names)
    removed = []
    for name in names:
        if name not in _listnetns():
            continue
        pnetns.remove(name)
        removed.append(name)
    return removed


def remove_namespaces(names: list[str]) -> list[str]:
    """Kill what runs in them, then delete them (and the veths in them); the ones removed."""
    return _remove_namespaces(names)


def remove_leftovers(deployment: str) -> list[str]:
    """Remove the namespaces (and so their bridge, veths and addresses) that a run of this
    deployment left when it died, killing any process still inside; the names removed."""
    return _remove_namespaces(namespaces_of(deployment))


@contextlib.contextmanager
def holder_sampler(nodes: list[Node], ip: str) -> Iterator[Callable[[], list[str]]]:
    """A fast ``holders`` for sampling every few ms: a function giving the names of the nodes
    whose interface has ``ip`` now, read through one netlink socket per node kept open (opening
    one costs milliseconds). The nodes may be any namespaces' (another manager's); use the
    function from one thread."""
    with contextlib.ExitStack() as stack:
        sockets = [(n.name, stack.enter_context(_rtnl(n.netns))) for n in nodes]

        def sample() -> list[str]:
            return [
                name
                for name, ipr in sockets
                if any(a.get("IFA_ADDRESS") == ip for a in ipr.get_addr(family=socket.AF_INET))
            ]

        yield sample


def neighbour_mac(netns: str, ip: str) -> str | None:
    """The MAC address the neighbour (ARP) table of ``netns`` has for ``ip`` now, None if none:
    whom a consumer sends to after a VIP moved."""
    with _rtnl(netns) as ipr:
        for entry in ipr.get_neighbours(family=socket.AF_INET):
            mac: str | None = entry.get("NDA_LLADDR")
            if entry.get("NDA_DST") == ip and mac:
                return mac
    return None


# --- the provider network --------------------------------------------------------------------


class ProviderNetwork:
    """A bridge in its own namespace and the nodes plugged into it. Use as a context manager,
    or call ``remove()``."""

    def __init__(
        self,
        deployment: str,
        subnet: str = DEFAULT_SUBNET,
        reserved: list[str] | None = None,
        attach: bool = False,
    ) -> None:
        """``reserved``: addresses never given to a node (the virtual IPs). ``attach``: take
        over the network a manager that died built (its nodes come back with ``add_node``),
        instead of building one; a new one is built if there is none."""
        ok, why = available()
        if not ok:
            raise NetworkUnavailable(why)
        self.deployment = deployment
        self.tag = tag(deployment)
        self.subnet = ipaddress.IPv4Network(subnet)
        self.netns = f"{PREFIX}{self.tag}-net"
        self.nodes: dict[str, Node] = {}
        self.changes: list[VipChange] = []
        self.reserved = set(reserved or [])
        self._made: list[str] = []  # namespaces, in creation order
        self._ports = 0
        self._attached = attach and self.netns in _listnetns()
        if self._attached:
            self._made = namespaces_of(deployment)
            return
        if self.netns in _listnetns():
            raise FileExistsError(
                errno.EEXIST,
                f"namespace {self.netns} exists: deployment {deployment!r} runs, or a dead run "
                "left it (remove_leftovers)",
            )
        try:
            self._make_namespace(self.netns)
            with _rtnl(self.netns) as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                ipr.link("add", ifname=BRIDGE, kind="bridge")
                br = ipr.link_lookup(ifname=BRIDGE)[0]
                ipr.link("set", index=br, state="up")
        except BaseException:
            self.remove()
            raise

    def __enter__(self) -> ProviderNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _make_namespace(self, name: str) -> None:
        from pyroute2 import netns as pnetns

        if name in _listnetns():
            raise FileExistsError(errno.EEXIST, f"namespace {name} exists")
        pnetns.create(name)
        self._made.append(name)

    def namespaces(self) -> list[str]:
        return list(self._made)

    def _free_address(self) -> ipaddress.IPv4Address:
        used = {n.address for n in self.nodes.values()}
        used |= {c.vip for c in self.changes}  # a VIP ever claimed here is not handed out
        used |= self.reserved
        for host in self.subnet.hosts():
            if str(host) not in used:
                return host
        raise OSError(errno.EADDRNOTAVAIL, f"no free address left in {self.subnet}")

    def add_node(self, name: str) -> Node:
        """A namespace ``nfvha-<tag>-<name>`` on the bridge, loopback up, ``eth0`` with the next
        free address."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == "net":
            raise ValueError(f"bad node name {name!r}")
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists")
        netns = f"{PREFIX}{self.tag}-{name}"
        if self._attached and netns in _listnetns():
            return self._adopt_node(name, netns)
        address = self._free_address()
        self._ports += 1
        port = f"v{self._ports}"
        self._make_namespace(netns)
        try:
            with _rtnl(self.netns) as ipr:
                ipr.link(
                    "add", ifname=port, kind="veth", peer={"ifname": NODE_IF, "net_ns_fd": netns}
                )
                idx = ipr.link_lookup(ifname=port)[0]
                br = ipr.link_lookup(ifname=BRIDGE)[0]
                ipr.link("set", index=idx, master=br, state="up")
            with _rtnl(netns) as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                eth = ipr.link_lookup(ifname=NODE_IF)[0]
                ipr.addr("add", index=eth, address=str(address), prefixlen=self.subnet.prefixlen)
                ipr.link("set", index=eth, state="up")
                mac = ipr.get_links(eth)[0].get("IFLA_ADDRESS")
        except BaseException:
            with contextlib.suppress(Exception):
                _remove_namespaces([netns])
                self._made.remove(netns)
            raise
        node = Node(name, netns, NODE_IF, str(address), self.subnet.prefixlen, mac, port)
        self.nodes[name] = node
        return node

    def _adopt_node(self, name: str, netns: str) -> Node:
        """A node a manager that died made: read back from its namespace, by rtnetlink dumps
        on sockets made in the namespaces (a takeover's path: no fork per namespace)."""
        from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        links, addrs = _dumps_in(netns, (ifinfmsg, RTM_GETLINK), (ifaddrmsg, RTM_GETADDR))
        eth = next(link for link in links if link.get_attr("IFLA_IFNAME") == NODE_IF)
        mac, peer = eth.get_attr("IFLA_ADDRESS"), eth.get_attr("IFLA_LINK")  # peer: bridge port
        first = next(  # the dump lists the primary first: added before any VIP
            a for a in addrs if a["index"] == eth["index"] and a["family"] == socket.AF_INET
        )
        address, prefixlen = first.get_attr("IFA_ADDRESS"), first["prefixlen"]
        port = ""
        if peer:
            (ports,) = _dumps_in(self.netns, (ifinfmsg, RTM_GETLINK))
            port = next((p.get_attr("IFLA_IFNAME") for p in ports if p["index"] == peer), "")
        node = Node(name, netns, NODE_IF, address, prefixlen, mac, port)
        self.nodes[name] = node
        return node

    # --- virtual IPs ---

    def _vip(self, vip: str) -> tuple[str, int]:
        iface = ipaddress.IPv4Interface(vip if "/" in vip else f"{vip}/{self.subnet.prefixlen}")
        return str(iface.ip), iface.network.prefixlen

    @staticmethod
    def _has(node: Node, ip: str) -> bool:
        with _rtnl(node.netns) as ipr:
            return any(a.get("IFA_ADDRESS") == ip for a in ipr.get_addr(family=socket.AF_INET))

    def claim(self, node: Node, vip: str) -> VipChange:
        """Add the VIP to the node's interface, then announce it with gratuitous ARP."""
        ip, prefixlen = self._vip(vip)
        others = [n.name for n in self.holders(ip) if n.name != node.name]
        with _rtnl(node.netns) as ipr:
            idx = ipr.link_lookup(ifname=node.ifname)[0]
            try:
                ipr.addr("add", index=idx, address=ip, prefixlen=prefixlen)
                changed = True
            except Exception as e:  # NetlinkError(EEXIST): it was there already
                if getattr(e, "code", None) != errno.EEXIST:
                    raise
                changed = False
        t = time.monotonic_ns()
        change = VipChange("claim", ip, node.name, node.netns, node.ifname, node.mac, changed, t)
        change.others = others
        self.changes.append(change)  # recorded before the ARP: the address is there already
        change.garp = send_garp(node.netns, node.ifname, node.mac, ip)
        return change

    def release(self, node: Node, vip: str) -> VipChange:
        """Delete the VIP from the node's interface (nothing is announced: the next holder
        announces)."""
        ip, prefixlen = self._vip(vip)
        with _rtnl(node.netns) as ipr:
            idx = ipr.link_lookup(ifname=node.ifname)[0]
            try:
                ipr.addr("del", index=idx, address=ip, prefixlen=prefixlen)
                changed = True
            except Exception as e:  # NetlinkError(EADDRNOTAVAIL): not there
                if getattr(e, "code", None) not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    raise
                changed = False
        t = time.monotonic_ns()
        change = VipChange("release", ip, node.name, node.netns, node.ifname, node.mac, changed, t)
        self.changes.append(change)
        return change

    def holders(self, vip: str) -> list[Node]:
        """The nodes whose interface has the VIP now (more than one is a split brain)."""
        ip, _ = self._vip(vip)
        return [n for n in self.nodes.values() if self._has(n, ip)]

    def sampler(
        self, vip: str, nodes: list[Node] | None = None
    ) -> contextlib.AbstractContextManager[Callable[[], list[str]]]:
        """``holder_sampler`` of this network's nodes (or of ``nodes``)."""
        ip, _ = self._vip(vip)
        return holder_sampler(list(self.nodes.values()) if nodes is None else nodes, ip)

    def holder(self, vip: str) -> Node | None:
        """The node that has the VIP now, None when nobody has; ``RuntimeError`` when two
        have."""
        held = self.holders(vip)
        if len(held) > 1:
            raise RuntimeError(f"{vip} is held by {len(held)} nodes: {[n.name for n in held]}")
        return held[0] if held else None

    # --- link faults ---

    def cut(self, node: Node) -> int:
        """Set the node's bridge port down: a real link cut (its ``eth0`` loses carrier, its
        processes and addresses stay). CLOCK_MONOTONIC ns when done."""
        return self._port_state(node, "down")

    def heal(self, node: Node) -> int:
        """Set the node's bridge port up again (forwarding at once: the bridge runs no STP)."""
        return self._port_state(node, "up")

    def _port_state(self, node: Node, state: str) -> int:
        with _rtnl(self.netns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=node.port)[0], state=state)
        return time.monotonic_ns()

    def neighbour_mac(self, node: Node, ip: str) -> str | None:
        """``neighbour_mac`` of the node's namespace."""
        return neighbour_mac(node.netns, ip)

    # --- teardown ---

    def remove(self) -> list[str]:
        """Kill the processes in its namespaces, delete the veths and the bridge, then the
        namespaces. Idempotent; the namespaces removed."""
        if self.netns in self._made and self.netns in _listnetns():
            with contextlib.suppress(Exception), _rtnl(self.netns) as ipr:
                for link in ipr.get_links():
                    if link.get("IFLA_IFNAME") != "lo":
                        ipr.link("del", index=link["index"])
        removed = _remove_namespaces(list(reversed(self._made)))
        self._made.clear()
        self.nodes.clear()
        return removed


@contextlib.contextmanager
def _route_socket() -> Iterator[socket.socket]:
    """A NETLINK_ROUTE socket: it acts in the namespace of the thread that made it."""
    rt = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    try:
        rt.bind((0, 0))
        yield rt
    finally:
        rt.close()


def _dumps_in(netns: str, *requests: tuple[Any, int]) -> list[list[Any]]:
    """Each ``rtnl_dump`` of ``requests`` ((message class, kind), ...) in namespace ``netns``,
    on one socket made there."""

    def dump() -> list[list[Any]]:
        with _route_socket() as rt:
            return [rtnl_dump(rt, cls, kind) for cls, kind in requests]

    return in_namespace(netns, dump)


_netlink_seq = itertools.count(1)  # one for every request: no reply taken for another's


def rtnl_dump(rt: socket.socket, cls: Any, kind: int) -> list[Any]:
    """Every object of one rtnetlink dump (``RTM_GETLINK``, ``RTM_GETADDR``: all families),
    decoded with pyroute2's message class ``cls``, in the kernel's order."""
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST

    seq = next(_netlink_seq)
    msg = cls()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = seq
    msg.encode()
    rt.send(msg.data)
    found = []
    while True:
        data = rt.recv(1 << 16)
        offset = 0
        while offset < len(data):
            length, kind_, _, seq_, _ = struct.unpack_from("=IHHII", data, offset)
            if seq_ == seq:
                if kind_ == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    if error:
                        raise OSError(-error, f"rtnetlink dump: {os.strerror(-error)}")
                    return found
                if kind_ == NLMSG_DONE:
                    return found
                reply = cls(data[offset : offset + length])
                reply.decode()
                found.append(reply)
            offset += (length + 3) & ~3


class VipMover:
    """Claims and releases of virtual IPs on the failover path, in microseconds: each node's
    rtnetlink and packet sockets are opened once (made inside its namespace, they act there
    from any thread) and a claim or release is one netlink request and its ack; a claim sends
    one announcement at once (``announce`` repeats it). Thread-safe enough for one caller at a
    time; pyroute2's own IPRoute is not used here because it forks a helper per namespace and
    costs milliseconds per call."""

    def __init__(self) -> None:
        self._sockets: dict[str, tuple[socket.socket, socket.socket, int]] = {}

    def warm(self, node: Node) -> None:
        """Open the node's sockets now, off the failover path."""
        self._of(node)

    def _of(self, node: Node) -> tuple[socket.socket, socket.socket, int]:
        if node.netns not in self._sockets:

            def make() -> tuple[socket.socket, socket.socket, int]:
                rt = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
                rt.bind((0, 0))
                packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # send only
                packet.bind((node.ifname, 0))
                return rt, packet, socket.if_nametoindex(node.ifname)

            self._sockets[node.netns] = in_namespace(node.netns, make)
        return self._sockets[node.netns]

    def _request(self, node: Node, kind: int, ip: str, prefixlen: int, flags: int) -> int:
        """One RTM_NEWADDR/RTM_DELADDR with an ack; the kernel's errno (0: done)."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        rt, _, index = self._of(node)
        seq = next(_netlink_seq)
        msg = ifaddrmsg()
        msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, prefixlen, index
        msg["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        rt.send(msg.data)
        while True:  # nlmsghdr (length, type, flags, seq, pid), then nlmsgerr's error
            _, kind_, _, seq_, _, error = struct.unpack_from("=IHHIIi", rt.recv(65536))
            if kind_ == NLMSG_ERROR and seq_ == seq:
                return -error

    def has(self, node: Node, ip: str) -> bool:
        """Whether the node's interface has ``ip`` now, from the kernel's address dump."""
        from pyroute2.netlink.rtnl import RTM_GETADDR
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        rt, _, index = self._of(node)
        return any(
            a["index"] == index and a.get_attr("IFA_ADDRESS") == ip
            for a in rtnl_dump(rt, ifaddrmsg, RTM_GETADDR)
        )

    def announce(self, node: Node, ip: str) -> int:
        """One gratuitous ARP for ``ip`` from the node; its CLOCK_MONOTONIC ns."""
        self._of(node)[1].send(garp_frame(node.mac, ip))
        return time.monotonic_ns()

    def claim(self, node: Node, ip: str, prefixlen: int) -> VipChange:
        from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
        from pyroute2.netlink.rtnl import RTM_NEWADDR

        error = self._request(node, RTM_NEWADDR, ip, prefixlen, NLM_F_CREATE | NLM_F_EXCL)
        if error not in (0, errno.EEXIST):  # EEXIST: held already; announced again
            raise OSError(error, f"claim {ip} on {node.name}: {os.strerror(error)}")
        t = time.monotonic_ns()
        change = VipChange("claim", ip, node.name, node.netns, node.ifname, node.mac, not error, t)
        change.garp = [self.announce(node, ip)]
        return change

    def release(self, node: Node, ip: str, prefixlen: int) -> VipChange:
        from pyroute2.netlink.rtnl import RTM_DELADDR

        error = self._request(node, RTM_DELADDR, ip, prefixlen, 0)
        if error not in (0, errno.EADDRNOTAVAIL):  # not held: nothing to do
            raise OSError(error, f"release {ip} on {node.name}: {os.strerror(error)}")
        t = time.monotonic_ns()
        return VipChange("release", ip, node.name, node.netns, node.ifname, node.mac, not error, t)

    def close(self) -> None:
        for rt, packet, _ in self._sockets.values():
            rt.close()
            packet.close()
        self._sockets.clear()
