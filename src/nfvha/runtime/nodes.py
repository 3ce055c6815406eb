"""Where a deployment's processes live on the network: the network mode of ``nfvha run``.

- loopback: every VNFC on this machine's loopback, binding the service address itself (the
  foundation's mode; no privileges needed). A virtual IP is ignored.
- netns: a provider network (``drivers.network``): one node namespace per VNFC (per VM with
  hosts declared), one for consumers (``consumer``) and one for the manager's own port on it
  (``mgmt``), from which the network health checks run: a node whose link is cut fails them,
  as it would for any peer on the network. A VNFC listens on its node's addresses (it is alone
  in its namespace: ``NFVHA_SERVICE_ADDRESS`` is ``0.0.0.0:<port>``) and consumers reach the
  service at its virtual IP, which only the active's node holds (core/ha.py rule 10).
- auto: netns where this machine can (root, ``ip netns``), else loopback.

Contracts: ``open`` resolves the mode and says why when ``auto`` falls back; a namespace
left by a dead run of the same deployment is removed first; ``close`` removes every namespace
and veth, and is idempotent. Address changes are returned for the caller's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from typing import Any

from nfvha.config import Deployment, NetworkMode, parse_address
from nfvha.drivers import network as net

CONSUMER = "consumer"
MGMT = "mgmt"


def _child_forgets_our_signals() -> None:
    """pyroute2 forks helpers (to make a namespace, to open a socket in one) and stops them
    with SIGTERM. A forked child inherits the event loop's signal handling: its SIGTERM would
    be written to the manager's wakeup fd, and the manager would stop as if told to. The child
    gets the default handling back instead."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


os.register_at_fork(after_in_child=_child_forgets_our_signals)


def prepare(deployment: Deployment) -> None:
    """What a takeover's network needs first that needs no lead, done by a standby while it
    waits: the namespace probe (it makes and removes a namespace: about 150 ms, pyroute2's
    import with it)."""
    if deployment.network.mode != "loopback":
        net.available()


@dataclass
class Nodes:
    deployment: Deployment
    mode: NetworkMode
    why: str = ""  # why auto fell back to loopback
    network: net.ProviderNetwork | None = None
    node_of_vnfc: dict[str, net.Node] = field(default_factory=dict)
    _mover: net.VipMover = field(default_factory=net.VipMover)

    @classmethod
    def open(
        cls, deployment: Deployment, vm_of: dict[str, str] | None = None, adopt: bool = False
    ) -> Nodes:
        """Resolve the mode and, for netns, build the network: a node per VM (``vm_of``:
        VNFC -> VM, with hosts) or per VNFC. ``adopt``: take over the network of a manager
        that died, with the VNFCs in it."""
        wanted = deployment.network.mode
        if wanted == "loopback":
            return cls(deployment, "loopback")
        ok, why = net.available()
        if not ok:
            if wanted == "auto":
                return cls(deployment, "loopback", why=why)
            raise net.NetworkUnavailable(f"network mode netns: {why}")
        if not adopt:
            net.remove_leftovers(deployment.name)
        vips = [str(v.service.vip) for v in deployment.vnfs if v.service.vip is not None]
        subnet = str(deployment.network.subnet)
        network = net.ProviderNetwork(deployment.name, subnet, vips, attach=adopt)
        nodes = cls(deployment, "netns", network=network)
        try:
            network.add_node(MGMT)
            network.add_node(CONSUMER)
            for vnf in deployment.vnfs:
                for c in vnf.vnfcs:
                    where = (vm_of or {}).get(c.name, c.name)
                    node = network.nodes.get(where) or network.add_node(where)
                    nodes.node_of_vnfc[c.name] = node
            if vips:  # the sockets that move them, opened now: not on the failover path
                for node in set(nodes.node_of_vnfc.values()):
                    nodes._mover.warm(node)
        except BaseException:
            nodes.close()
            raise
        return nodes

    def describe(self) -> str:
        if self.network is None:
            because = f" ({self.why})" if self.why else ""
            return f"network mode loopback{because}: services on this machine's loopback"
        return (
            f"network mode netns: provider network {self.network.subnet} on bridge namespace "
            f"{self.network.netns}; consumers in {self.netns(CONSUMER)}"
        )

    def netns(self, node: str) -> str | None:
        return self.network.nodes[node].netns if self.network else None

    def vnfc_netns(self, vnfc: str) -> str | None:
        node = self.node_of_vnfc.get(vnfc)
        return node.netns if node else None

    def in_netns(self, vnfc: str, argv: list[str]) -> list[str]:
        """argv that enters the VNFC's node namespace, then execs (same pid): for a VNFC a guest
        agent starts, with the ``ip netns exec`` conventions."""
        netns = self.vnfc_netns(vnfc)
        if netns is None:
            return argv
        ip = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "ip"
        return [ip, "netns", "exec", netns, *argv]

    def listen_address(self, service_address: str) -> str:
        """What a VNFC binds: the service address on loopback; all its node's addresses in
        netns mode (consumers come through the virtual IP)."""
        if self.network is None:
            return service_address
        return f"0.0.0.0:{parse_address(service_address)[1]}"

    def check_address(self, vnfc: str, service_address: str) -> str:
        """Where a network health check of this VNFC goes: its node's own address in netns
        mode, over the provider network."""
        node = self.node_of_vnfc.get(vnfc)
        if node is None:
            return service_address
        return f"{node.address}:{parse_address(service_address)[1]}"

    def claim(self, vnfc: str, vip: str) -> dict[str, Any] | None:
        """Add ``vip`` to the VNFC's node and announce it (then ``GARP_COUNT - 1`` times more,
        ``GARP_INTERVAL_S`` apart, from the event loop ``loop``); None in loopback mode. One
        netlink request: done before the caller's next command."""
        if self.network is None:
            return None
        node = self.node_of_vnfc[vnfc]
        change = self._mover.claim(node, vip, self.network.subnet.prefixlen)
        loop = asyncio.get_running_loop()
        for i in range(1, net.GARP_COUNT):  # the repeats, should the first be lost
            loop.call_later(net.GARP_INTERVAL_S * i, self._announce, node, vip)
        return change.as_dict()

    def release(self, vnfc: str, vip: str) -> dict[str, Any] | None:
        if self.network is None:
            return None
        node = self.node_of_vnfc[vnfc]
        return self._mover.release(node, vip, self.network.subnet.prefixlen).as_dict()

    def _announce(self, node: net.Node, vip: str) -> None:
        with contextlib.suppress(OSError):  # closed meanwhile, or the link is down
            self._mover.announce(node, vip)

    def holds(self, vnfc: str, vip: str) -> bool:
        """Whether the VNFC's node has ``vip`` now (loopback mode: no virtual IP, False)."""
        node = self.node_of_vnfc.get(vnfc)
        return node is not None and self._mover.has(node, vip)

    def snapshot(self) -> dict[str, Any]:
        if self.network is None:
            return {"mode": self.mode, "why": self.why}
        return {
            "mode": self.mode,
            "subnet": str(self.network.subnet),
            "consumer_netns": self.netns(CONSUMER),
            "bridge_netns": self.network.netns,
            "nodes": {  # port: its veth's bridge end (ip -n BRIDGE_NETNS link set PORT down)
                name: {"netns": n.netns, "address": n.address, "port": n.port}
                for name, n in self.network.nodes.items()
            },
        }

    def close(self) -> None:
        self._mover.close()
        if self.network is not None:
            self.network.remove()
