"""Who a command is for, and whether its manager may issue it: shared by the runtime and the
simulator, so both route exactly alike and the simulator can check scopes (design brief 3)."""

from __future__ import annotations

from collections.abc import Mapping

from nfvha.core import messages as m
from nfvha.core import vim as v
from nfvha.core.messages import Traced

VIM = "vim"
VNFM = "vnfm"

# What each kind of manager may issue. Anything else is outside its scope.
HA_COMMANDS = (
    m.StartVnfc,
    m.SetTimer,
    m.Cleanup,
    m.AssignRole,
    m.KeepRole,
    m.WatchHealth,
    m.ClaimAddress,
    m.ReleaseAddress,
    *m.TO_VNFM,
)
VNFM_COMMANDS = (m.VmLost, m.VmRestored, v.RepairConsent, v.VmErrorReport)
VIM_COMMANDS = (
    v.Alarm,
    v.CleanupVm,
    v.FenceHost,
    v.StartHost,
    v.StartVm,
    v.PromoteStandbyVm,
    v.StartStandbyVm,
    *v.TO_VNFM,
)


def destination(source: str, cmd: Traced, owner: Mapping[str, str]) -> str | None:
    """The manager ``cmd`` is a message for: "vim", "vnfm" or a VNF's name (its HA manager).
    None: a command for a driver (an Alarm: for the operator)."""
    if source == VIM:
        return VNFM if isinstance(cmd, v.TO_VNFM) else None
    if source == VNFM:
        return owner[cmd.vnfc] if isinstance(cmd, m.Message) else VIM
    return VNFM if isinstance(cmd, m.TO_VNFM) else None


def in_scope(source: str, cmd: Traced, owner: Mapping[str, str]) -> bool:
    """An HA manager acts on its own VNF's VNFCs only; the VNFM relays and reports; the VIM
    handles hosts and VMs only."""
    if source == VIM:
        return isinstance(cmd, VIM_COMMANDS)
    if source == VNFM:
        return isinstance(cmd, VNFM_COMMANDS)
    return isinstance(cmd, HA_COMMANDS) and owner.get(cmd.subject) == source
