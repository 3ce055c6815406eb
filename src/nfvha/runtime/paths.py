"""Where a running deployment keeps its sockets (removed at exit) and its state (kept)."""

from __future__ import annotations

import os
from pathlib import Path


def runtime_base() -> Path:
    return Path(os.environ.get("NFVHA_RUNTIME_DIR", "/tmp/nfvha"))


def runtime_dir(deployment: str) -> Path:
    return runtime_base() / deployment


def default_state_dir(deployment: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "nfvha" / deployment


def control_socket(deployment: str) -> Path:
    return runtime_dir(deployment) / "control.sock"


def running_sockets() -> list[Path]:
    return sorted(runtime_base().glob("*/control.sock"))
