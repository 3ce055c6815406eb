"""How the VIM isolates a VM: one driver per mechanism, behind one contract.

Contract of ``isolate(vm, zone, reachable)``: answer (True, why) only once nothing of the VM can
serve any more, proven by the mechanism; (False, why) when it cannot be proven (the VIM then
keeps the VM failed and alarms, and no VNFC of it is replaced). ``reachable``: whether its guest
agent is still heard (connected and beating).

- ``KernelFence`` (``nfvi.fencing: kernel``): ``cgroup.kill`` of the VM's zone through this
  machine's kernel until the kernel says it is empty: out of band, like a BMC powering a
  server off. It works whatever the VM's network does, as long as the VM is on this machine.
- ``WatchdogFence`` (``nfvi.fencing: watchdog``): a VM whose guest is not heard is isolated by
  its own watchdog (core/watchdog.py): no more lease for it, wait until its last lease has
  passed, then the kernel must find its zone empty (the guest killed its VNFCs and exited);
  nothing is killed from here. A VM still heard is killed as by ``KernelFence``, which is what
  its host agent does for a VM it runs. This is sbd's watchdog fencing; a BMC or IPMI driver
  would implement the same ``isolate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from nfvha.core.watchdog import VimLeases
from nfvha.drivers.cgroups import Cgroups

CONFIRM_S = 2.0  # after its lease, how long the kernel has to find a self-fenced VM empty


class KernelFence:
    def __init__(self, cgroups: Cgroups) -> None:
        self.cgroups = cgroups

    async def isolate(self, vm: str, zone: Path, reachable: bool) -> tuple[bool, str]:
        with contextlib.suppress(OSError):
            self.cgroups.freeze(zone, False)
        if await self.cgroups.kill_and_confirm(zone):
            return True, ""
        return False, "cgroup still populated"


class WatchdogFence(KernelFence):
    def __init__(self, cgroups: Cgroups, leases: VimLeases) -> None:
        super().__init__(cgroups)
        self.leases = leases

    async def isolate(self, vm: str, zone: Path, reachable: bool) -> tuple[bool, str]:
        if reachable:
            return await super().isolate(vm, zone, reachable)
        until = self.leases.isolate(vm)
        if not self.cgroups.populated(zone):
            return True, "gone already (its cgroup is empty)"
        if until is not None:
            await asyncio.sleep(max(0.0, until - time.monotonic()))
        deadline = time.monotonic() + CONFIRM_S
        while self.cgroups.populated(zone):
            if time.monotonic() > deadline:
                return False, "still running after its lease passed: it did not fence itself"
            await asyncio.sleep(0.005)
        return True, "fenced by its own watchdog (its lease passed)"
