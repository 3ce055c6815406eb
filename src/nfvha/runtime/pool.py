"""The pool reconciler: every HAProxy instance of a load-balanced VNF carries the pool that
``core.pool.desired`` computes, applied through HAProxy's runtime API (never a reload).

Contracts:
- ``reconcile()`` runs after every step of the dispatcher (the engine calls it): it computes the
  desired pool of each load-balanced VNF from the HA manager (and, for ``pool: vm``, the VIM)
  and wakes the instances' drivers when it, or an instance's life, changed. It does no I/O and
  never waits: the drivers are tasks of their own, one per HAProxy instance.
- A driver is level-triggered: it reads ``show servers state`` and sets every server whose
  admin state differs from the desired one; it does so again on every wake and at least every
  ``check_interval_ms`` (a change lost to an error is made at the next pass). Each change is a
  trace record ``PoolMember`` (src ``lb:VNF``, dst the instance; data: server, state, lb; why).
  Both instances always carry the same pool: the passive one is hot.
- ``excluded(vnf, vnfc)`` returns once the VNFC's server is in maintenance on every instance
  that runs (an instance that is down or does not answer its admin socket holds no consumer
  traffic and is brought in line when it is back), or after ``GATE_S`` with a trace note
  ``PoolNotConfirmed``. The engine awaits it before a failed VNFC's cleanup, so the failed VNFC
  is out of the pool before it is isolated and, later, restarted (section 3.1: exclude first,
  then recover).
- ``excluded_vm(vm)``: the same for a VM of a pool of VMs (case 2); the engine awaits it
  before the VIM's cleanup of a lost VM, so the VM leaves the pool before it is isolated.
- ``prepare(lb_vnfc)`` writes an instance's configuration before it starts: its own admin
  socket, the frontend on the service address, its monitor address, and the pool as desired
  now (servers out of it start ``disabled``), so a restarted instance serves the same pool.
- Network mode netns (``node_ip`` gives a VNFC's node address): the servers are
  ``<node ip>:<port>`` (the VNFC's node, or its VM's), each instance's monitor is on its own
  node's address, and the frontend is the service's virtual IP, bound ``transparent`` (a
  non-local bind): both instances bind it, only the one whose node holds it (the LB VNF's
  active) receives consumers.
- With ``checks: true`` HAProxy checks the servers too: a server that HAProxy marks DOWN while
  it should be ready is a failed health check of its VNFC (``HealthCheckFailed`` fed to the
  VNF's HA manager, whose failure_threshold counts them): once per fall, however many instances
  see it, until an instance sees it up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfvha.config import Deployment, Vnf, lb_config_path
from nfvha.core import messages as m
from nfvha.core import pool as core
from nfvha.core.ha import HAManager, Life
from nfvha.drivers.loadbalancer import (
    HaproxyConfig,
    HaproxyError,
    LoadBalancer,
    Server,
    ServerState,
)
from nfvha.runtime.trace import Trace

GATE_S = 1.0  # longest a cleanup waits for the pool (a hung HAProxy answers nothing)
API_TIMEOUT_S = 0.5  # one runtime API exchange
RETRY_S = 0.02  # an instance that does not answer yet (starting) is tried again this soon

Feed = Callable[[str, m.Message], None]
NodeIp = Callable[[str], str | None]  # a VNFC's node address in netns mode; None: loopback


@dataclass
class Instance:
    """One HAProxy instance (a VNFC of the LB VNF) as its driver sees it."""

    vnfc: str
    api: LoadBalancer  # the runtime API client only: the process is the engine's VNFC
    actual: dict[str, str] | None = None  # server -> admin state; None: not known now
    oper: dict[str, str] = field(default_factory=dict)  # server -> what its checks see
    life: tuple[Life, int | None] = (Life.STOPPED, None)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Pool:
    """One load-balanced VNF and its pair of HAProxy instances."""

    vnf: Vnf
    lb: Vnf
    servers: dict[str, str]  # server -> VNFC
    instances: dict[str, Instance]
    desired: dict[str, core.Member] = field(default_factory=dict)
    down_reported: set[str] = field(default_factory=set)


class Pools:
    def __init__(
        self,
        deployment: Deployment,
        managers: Mapping[str, HAManager],
        runtime_dir: Path,
        trace: Trace,
        feed: Feed,
        vnfc_vm: Mapping[str, str] | None = None,
        vms: Callable[[], Mapping[str, str]] = dict,
        node_ip: NodeIp = lambda _vnfc: None,
    ) -> None:
        self.managers, self.runtime_dir, self.trace, self.feed = managers, runtime_dir, trace, feed
        self.vnfc_vm, self.vms, self.node_ip = vnfc_vm, vms, node_ip
        self.pools: dict[str, Pool] = {}
        specs = {v.name: v for v in deployment.vnfs}
        for lb in deployment.vnfs:
            if lb.balances is None:
                continue
            vnf = specs[lb.balances]
            instances = {
                c.name: Instance(
                    c.name,
                    LoadBalancer(
                        lb_config_path(runtime_dir, c.name).parent,
                        vnf.service.address,
                        [("placeholder", None)],  # the client needs no slots: prepare() has them
                        timeout=API_TIMEOUT_S,
                    ),
                )
                for c in lb.vnfcs
            }
            self.pools[vnf.name] = Pool(vnf, lb, core.servers(vnf, vnfc_vm), instances)
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    # --- the engine's entry points ------------------------------------------------------------

    def start(self) -> None:
        for pool in self.pools.values():
            pool.desired = self._desired(pool)
            for inst in pool.instances.values():
                self._tasks.append(asyncio.get_running_loop().create_task(self._drive(pool, inst)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def reconcile(self) -> None:
        """After a step of the dispatcher: what should the pools be now? Wakes the drivers."""
        for pool in self.pools.values():
            desired = self._desired(pool)
            changed = desired != pool.desired
            pool.desired = desired
            lb = self.managers[pool.lb.name].vnfcs
            for inst in pool.instances.values():
                life = (lb[inst.vnfc].life, lb[inst.vnfc].pid)
                if life != inst.life:
                    inst.life, inst.actual = life, None  # a new process knows its own pool
                    inst.oper.clear()
                    changed = True
            if changed:
                for inst in pool.instances.values():
                    inst.wake.set()

    async def excluded(self, vnf: str, vnfc: str) -> None:
        """Until ``vnfc``'s server is out of the pool on every running instance (at most
        GATE_S). A VNF without a load balancer returns at once."""
        pool = self.pools.get(vnf)
        if pool is not None:
            server = next(s for s, c in pool.servers.items() if c == vnfc)
            await self._out(pool, server, vnfc)

    async def excluded_vm(self, vm: str) -> None:
        """Until VM ``vm`` is out of every pool of VMs it serves in (at most GATE_S each)."""
        for pool in self.pools.values():
            if vm in pool.servers and pool.servers[vm] != vm:
                await self._out(pool, vm, vm)

    async def _out(self, pool: Pool, server: str, who: str) -> None:
        self.reconcile()

        def out() -> bool:
            return all(
                not self._alive(i) or (i.actual is not None and i.actual.get(server) == "maint")
                for i in pool.instances.values()
            )

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(out), GATE_S)
            except TimeoutError:
                late = [i.vnfc for i in pool.instances.values() if not out()]
                self.trace.record(
                    "note",
                    "PoolNotConfirmed",
                    src=f"lb:{pool.vnf.name}",
                    dst=who,
                    data={"server": server, "lb": late},
                    why=f"no answer within {GATE_S:g} s; isolating {who} anyway",
                )

    def prepare(self, lb_vnfc: str) -> None:
        """Write the configuration of an instance about to start, with the pool as it is now."""
        for pool in self.pools.values():
            if lb_vnfc in pool.instances:
                self.reconcile()
                path = lb_config_path(self.runtime_dir, lb_vnfc)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(self.config(pool, lb_vnfc).render())

    def config(self, pool: Pool, lb_vnfc: str) -> HaproxyConfig:
        spec, check = pool.vnf.load_balancer, pool.vnf.policies.health_check
        assert spec is not None
        slots = tuple(
            Server(
                server,
                core.backend_address(pool.vnf, vnfc, self.node_ip(vnfc)),
                disabled=pool.desired[server].state != "ready",
            )
            for server, vnfc in pool.servers.items()
        )
        own = self.node_ip(lb_vnfc)  # netns: the frontend is the VIP, which moves between nodes
        return HaproxyConfig(
            lb_config_path(self.runtime_dir, lb_vnfc).parent,
            pool.lb.service.address_in("netns" if own else "loopback"),
            slots,
            mode="http" if check.kind == "http" else "tcp",
            check_path=check.path,
            check_status=check.expect_status,
            inter_ms=spec.check_interval_ms,
            checks=spec.checks,
            connect_timeout_ms=100,  # loopback or one bridge: a refused connect is redispatched
            monitor=core.backend_address(pool.lb, lb_vnfc, own),
            # netns: both bind the VIP before their node holds it (the passive one is hot)
            bind_options="transparent" if own and pool.lb.service.vip else "",
        )

    def snapshot(self) -> dict[str, Any]:
        """Per load-balanced VNF: its LB VNF, each server's desired state and why, and each
        instance's pool as last read from it (None: not known now)."""
        return {
            vnf: {
                "lb": pool.lb.name,
                "desired": {
                    s: {"state": mb.state, "why": mb.why} for s, mb in pool.desired.items()
                },
                "instances": {i.vnfc: i.actual for i in pool.instances.values()},
            }
            for vnf, pool in self.pools.items()
        }

    # --- one instance's driver ----------------------------------------------------------------

    def _desired(self, pool: Pool) -> dict[str, core.Member]:
        vms = self.vms() if self.vnfc_vm is not None else None
        return core.desired(pool.vnf, self.managers[pool.vnf.name].vnfcs, self.vnfc_vm, vms)

    @staticmethod
    def _alive(inst: Instance) -> bool:
        return inst.life[0] in (Life.STARTING, Life.RUNNING) and inst.life[1] is not None

    async def _drive(self, pool: Pool, inst: Instance) -> None:
        period = pool.vnf.load_balancer.check_interval_ms / 1000 if pool.vnf.load_balancer else 0.1
        while True:
            wait = RETRY_S if self._alive(inst) and inst.actual is None else period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inst.wake.wait(), wait)
            # Python 3.11's wait_for swallows a cancel that lands with the wake-up: honour it,
            # or close() waits for ever.
            if (me := asyncio.current_task()) is not None and me.cancelling():
                raise asyncio.CancelledError
            inst.wake.clear()
            if not self._alive(inst):
                await self._settled(inst, None)
                continue
            try:
                await self._apply(pool, inst)
            except (HaproxyError, OSError):  # starting, stopped or hung: known once it answers
                await self._settled(inst, None)
            except Exception:  # a bug must not end the pool's driver: it tries again
                traceback.print_exc()
                await self._settled(inst, None)
                await asyncio.sleep(period)

    async def _apply(self, pool: Pool, inst: Instance) -> None:
        states = await inst.api.servers()
        # Kept here: a restart of the instance meanwhile resets inst.actual to None.
        actual = inst.actual = {s.name: s.admin for s in states}
        self._checks(pool, inst, states)
        for server, member in list(pool.desired.items()):
            if actual.get(server) == member.state:
                continue
            await inst.api.set_state(server, member.state)
            actual[server] = member.state
            self.trace.record(
                "command",
                "PoolMember",
                src=f"lb:{pool.vnf.name}",
                dst=inst.vnfc,
                data={"server": server, "state": member.state, "lb": inst.vnfc},
                why=member.why,
            )
        await self._settled(inst, actual)

    async def _settled(self, inst: Instance, actual: dict[str, str] | None) -> None:
        inst.actual = actual
        async with self._changed:
            self._changed.notify_all()

    def _checks(self, pool: Pool, inst: Instance, states: list[ServerState]) -> None:
        """HAProxy's own checks: a fall of a server that should serve is reported, once."""
        spec = pool.vnf.load_balancer
        if spec is None or not spec.checks:
            return
        for s in states:
            before, inst.oper[s.name] = inst.oper.get(s.name), s.oper
            wanted = pool.desired.get(s.name)
            if s.oper == "up":
                pool.down_reported.discard(s.name)
            if wanted is None or wanted.state != "ready" or s.admin != "ready":
                continue
            if before == "up" and s.oper == "down" and s.name not in pool.down_reported:
                pool.down_reported.add(s.name)
                reason = f"HAProxy {inst.vnfc} marks {s.name} DOWN ({s.check_status})"
                self.feed(
                    pool.vnf.name, m.HealthCheckFailed(vnfc=pool.servers[s.name], reason=reason)
                )
