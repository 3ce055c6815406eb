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


def peer_address(runtime_dir: Path, vnfc: str) -> str:
    """The abstract Unix socket a component of a direct-sync VNF listens on for its active,
    written with a leading '@' for the NUL (see ``nfvha.sdk.peer.unix_address``). Abstract:
    nothing on disk, so a new leader replacing the runtime directory
    does not unlink it, and the kernel frees it when the component dies."""
    tag = hashlib.sha1(str(runtime_dir).encode()).hexdigest()[:12]
    return f"@nfvha-peer/{tag}/{vnfc}"


def sync_spec(vnf: Vnf, deployment: str, state_dir: Path) -> dict[str, Any]:
    mode = vnf.sync
    if mode == "shared_storage":
        default = state_dir / "checkpoints" / f"{vnf.name}.shared.log"
        return {"mode": mode, "path": str(vnf.state_store.path or default)}
    if mode == "store":
        key = f"{vnf.state_store.prefix.rstrip('/')}/{deployment}/{vnf.name}"
        return {"mode": mode, "endpoints": list(vnf.state_store.etcd), "key": key}
    return {"mode": mode or "none"}
