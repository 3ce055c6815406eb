"""Where a running deployment keeps its sockets (removed at exit) and its state (kept).

A manager that died without stopping leaves its runtime dir behind; its control socket then
refuses connections, and only a socket that accepts one counts as a running deployment.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def runtime_base() -> Path:
    return Path(os.environ.get("NFVHA_RUNTIME_DIR", "/tmp/nfvha"))


def runtime_dir(deployment: str) -> Path:
    return runtime_base() / deployment


def default_state_dir(deployment: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "nfvha" / deployment


def leader_lock(deployment: str) -> Path:
    """Beside the runtime directory, which each new leader replaces."""
    return runtime_base() / f"{deployment}.lock"


def control_socket(deployment: str) -> Path:
    return runtime_dir(deployment) / "control.sock"


def socket_answers(path: Path, timeout_s: float = 2.0) -> bool:
    """A manager listens on ``path``: a connection is accepted (or not refused: a stopped
    manager's backlog may be full, and it is still there)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def running_sockets() -> list[Path]:
    """Control sockets of running deployments; stale ones of managers that died are left out."""
    return [p for p in sorted(runtime_base().glob("*/control.sock")) if socket_answers(p)]
