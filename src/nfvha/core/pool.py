"""The pool of a load-balanced VNF: which servers the load balancer may send consumers to.

Section 3.1 of the seed, active/active behind a load balancer, both cases. Kubernetes'
endpoints style (level-triggered): the desired membership is computed afresh from the managers'
state after every event, never from the event itself; the runtime (``runtime/pool.py``) applies
the difference to every HAProxy instance. No I/O here.

Rules (tests in tests/test_core_pool.py):

1. Case 1 (``pool: vnfc``): one server per VNFC, named after it. A VNFC is ``ready`` only while
   it runs, holds the active role and has confirmed it; otherwise ``maint``. A failed VNFC is
   out from the moment its failure is decided (life ``failed``: being cleaned up), before its
   cleanup ends and long before it is restarted; so is a starting, spare or escalated one.
2. Case 2 (``pool: vm``): one server per VM a VNFC of the VNF runs in, named after the VM. It
   is ``ready`` only while the VIM holds the VM ``up`` and the VNFC in it serves (rule 1): a VM
   the VIM lost, is isolating, repairing or restarting is out, whatever the HA manager knows.
3. Every member says why it is in or out, for the trace.
4. Addresses (``backend_address``): in loopback mode a pooled VNFC serves on
   ``127.0.1.<i+1>:<service port>`` (``i`` its index in the VNF), an LB instance checks on
   ``127.0.2.<i+1>:<service port>`` (its monitor address); with a network node of its own
   (netns mode) either is ``<node ip>:<service port>``. The service address is the frontend.
5. Names: the load balancer of VNF ``v`` is the 2n VNF ``v-lb`` with VNFCs ``v-lb-a`` and
   ``v-lb-b`` (config.lb_vnf_name, config.lb_vnfc_names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nfvha.config import Vnf, parse_address
from nfvha.core.ha import Life, Role, VnfcState

PoolState = Literal["ready", "maint"]

POOL_BLOCK = 1  # 127.0.<block>.<i+1>: the pooled VNFCs' backends
LB_BLOCK = 2  # ... and the LB instances' monitor addresses


@dataclass(frozen=True, slots=True)
class Member:
    state: PoolState
    why: str


def backend_address(vnf: Vnf, vnfc: str, node_ip: str | None = None) -> str | None:
    """Rule 4: the address VNFC ``vnfc`` of ``vnf`` serves (or is checked) on when it has one
    of its own, None when it serves the service address itself. ``node_ip``: the address of
    the VNFC's network node (netns mode); None: loopback mode."""
    if vnf.load_balancer is None and vnf.balances is None:
        return None
    names = [c.name for c in vnf.vnfcs]
    if vnfc not in names:
        raise KeyError(f"{vnfc} is not a VNFC of {vnf.name}")
    port = parse_address(vnf.service.address)[1]
    if node_ip is not None:
        return f"{node_ip}:{port}"
    block = LB_BLOCK if vnf.balances is not None else POOL_BLOCK
    return f"127.0.{block}.{names.index(vnfc) + 1}:{port}"


def servers(vnf: Vnf, vnfc_vm: Mapping[str, str] | None = None) -> dict[str, str]:
    """Server name -> the VNFC behind it, in the VNF's order: the VNFC itself (case 1), or its
    VM (case 2; ``vnfc_vm`` is the placement's)."""
    if vnf.load_balancer is not None and vnf.load_balancer.pool == "vm":
        if vnfc_vm is None:
            raise ValueError(f"{vnf.name}: pool vm needs the placement of its VNFCs")
        return {vnfc_vm[c.name]: c.name for c in vnf.vnfcs}
    return {c.name: c.name for c in vnf.vnfcs}


def serving(c: VnfcState) -> Member:
    """Rule 1, for one VNFC."""
    if c.life is Life.RUNNING and c.role is Role.ACTIVE and c.confirmed:
        return Member("ready", f"{c.name} is active and confirmed")
    if c.life is Life.FAILED:
        return Member("maint", f"{c.name} failed ({c.last_failure or 'being isolated'})")
    if c.life is Life.RUNNING and c.role is Role.ACTIVE:
        return Member("maint", f"{c.name} has not confirmed the active role yet")
    if c.life is Life.RUNNING:
        return Member("maint", f"{c.name} is {c.role.value}, not active")
    return Member("maint", f"{c.name} is {c.life.value}")


def desired(
    vnf: Vnf,
    vnfcs: Mapping[str, VnfcState],
    vnfc_vm: Mapping[str, str] | None = None,
    vms: Mapping[str, str] | None = None,
) -> dict[str, Member]:
    """The whole pool as it should be now: server -> member. ``vnfcs``: the HA manager's view;
    ``vms``: the VIM's (VM -> its life: up, failed, starting...), for case 2."""
    out: dict[str, Member] = {}
    for server, name in servers(vnf, vnfc_vm).items():
        member = serving(vnfcs[name])
        if server != name:  # case 2: the VIM's view first
            life = (vms or {}).get(server, "unknown")
            if life != "up":
                member = Member("maint", f"VM {server} is {life} (VIM)")
            elif member.state == "ready":
                member = Member("ready", f"VM {server} is up and {member.why}")
        out[server] = member
    return out
