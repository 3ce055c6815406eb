"""`nfvha reload`: what a new version of the configuration changes in a running deployment.

Pure: compares two validated deployments. What can change in place is applied without
restarting anything: a VNF's policies, repair and hooks. A changed VNFC definition (command,
env, stop signal, user, limits...) restarts that VNFC alone, the way a planned restart does
(an active hands over first). Anything that shapes the deployment itself (its VNFs and VNFCs,
redundancy, service addresses, state sync, hosts and VMs) needs a restart of `nfvha run`: the
reload is refused, naming what changed, and nothing is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nfvha.config import Deployment, Vnf

IN_PLACE = {"policies", "repair", "hooks"}  # a VNF's fields a reload applies as they are


@dataclass
class ReloadPlan:
    updated: list[str] = field(default_factory=list)  # VNFs changed in place
    restart: list[tuple[str, str]] = field(default_factory=list)  # (VNF, VNFC) to restart
    refused: list[str] = field(default_factory=list)  # why the reload cannot be applied

    @property
    def unchanged(self) -> bool:
        return not (self.updated or self.restart or self.refused)


def plan(old: Deployment, new: Deployment) -> ReloadPlan:
    out = ReloadPlan()
    top = set(Deployment.model_fields) - {"vnfs"}
    for name in sorted(top):
        if getattr(old, name) != getattr(new, name):
            out.refused.append(f"'{name}' changed")
    before = {v.name: v for v in old.vnfs}
    after = {v.name: v for v in new.vnfs}
    if before.keys() != after.keys():
        out.refused.append(f"VNFs changed ({', '.join(sorted(before.keys() ^ after.keys()))})")
    for name in sorted(before.keys() & after.keys()):
        _compare_vnf(before[name], after[name], out)
    return out


def _compare_vnf(old: Vnf, new: Vnf, out: ReloadPlan) -> None:
    shape = set(Vnf.model_fields) - IN_PLACE - {"vnfcs"}
    for name in sorted(shape):
        if getattr(old, name) != getattr(new, name):
            out.refused.append(f"VNF {old.name}: '{name}' changed")
    vnfcs_old = {c.name: c for c in old.vnfcs}
    vnfcs_new = {c.name: c for c in new.vnfcs}
    if list(vnfcs_old) != list(vnfcs_new):
        out.refused.append(f"VNF {old.name}: its VNFCs changed")
        return
    out.restart += [(old.name, n) for n in vnfcs_old if vnfcs_old[n] != vnfcs_new[n]]
    if any(getattr(old, f) != getattr(new, f) for f in IN_PLACE if f in Vnf.model_fields):
        out.updated.append(old.name)
