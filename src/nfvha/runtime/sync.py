"""What a component needs to know to keep its VNF's state (the VNF's ``state_sync``).

Given to the component in every ``assign`` as ``sync``:
  {"mode": "direct"}                                   the active writes to the standby's
                                                       peer socket (``peer`` says which)
  {"mode": "manager"}                                  through the manager, as before
  {"mode": "shared_storage", "path": LOG}              the component writes the log itself
  {"mode": "store", "endpoints": [...], "key": KEY}    the component writes etcd itself
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from nfvha.config import Vnf

PEER_DIR = Path("/run/nfvha-peers")  # netns mode (root): short paths, beside no runtime dir


def peer_address(runtime_dir: Path, vnfc: str, on_disk: bool = False) -> str:
    """The Unix socket a component of a direct-sync VNF listens on for its active.

    Abstract (written with a leading '@' for the NUL, see ``nfvha.sdk.peer.unix_address``):
    nothing on disk, so a new leader replacing the runtime directory does not unlink it, and the
    kernel frees it when the component dies. But an abstract socket belongs to its network
    namespace: in netns mode (``on_disk``) the active and its standby live in two VMs' namespaces
    and could not reach it, and every write went through the manager, which a takeover then
    stopped. There it is a socket file under ``peer_dir``, which no runtime directory contains."""
    if on_disk:
        return str(peer_dir(runtime_dir) / vnfc)
    return f"@nfvha-peer/{_tag(runtime_dir)}/{vnfc}"


def peer_dir(runtime_dir: Path) -> Path:
    """Where a netns deployment's peer sockets are: removed by its deliberate stop."""
    return PEER_DIR / _tag(runtime_dir)


def _tag(runtime_dir: Path) -> str:
    return hashlib.sha1(str(runtime_dir).encode()).hexdigest()[:12]


def sync_spec(vnf: Vnf, deployment: str, state_dir: Path) -> dict[str, Any]:
    mode = vnf.sync
    if mode == "shared_storage":
        default = state_dir / "checkpoints" / f"{vnf.name}.shared.log"
        return {"mode": mode, "path": str(vnf.state_store.path or default)}
    if mode == "store":
        key = f"{vnf.state_store.prefix.rstrip('/')}/{deployment}/{vnf.name}"
        return {"mode": mode, "endpoints": list(vnf.state_store.etcd), "key": key}
    return {"mode": mode or "none"}
