"""nfvha as the operator runs it (`nfvha run` in the background, the CLI) and the engine
in-process."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nfvha import config as cfg
from nfvha.runtime.control import ControlError, request
from nfvha.runtime.engine import Engine
from nfvha.runtime.trace import Trace
from tests.integration.support.processes import kill_and_reap
from tests.integration.support.waiting import PATIENCE_S, wait_for_sync

VENV_BIN = Path(sys.executable).parent
NFVHA = str(VENV_BIN / "nfvha")
NFVHA_COUNTER = str(VENV_BIN / "nfvha-counter")


def cli(*args: str, timeout_s: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NFVHA, *args], capture_output=True, text=True, timeout=timeout_s, **kwargs
    )


class NfvhaRun:
    """``nfvha run CONFIG`` in the background, in its own process group."""

    def __init__(
        self,
        config: Path,
        name: str,
        runtime_dir: Path,
        work: Path,
        *,
        standby_manager: bool = True,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.socket = runtime_dir / name / "control.sock"
        self.deployment_dir = runtime_dir / name
        self.trace_path = work / f"{name}.trace.jsonl"
        self.stdout_path, self.stderr_path = work / f"{name}.out", work / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    NFVHA,
                    "run",
                    str(config),
                    "--state-dir",
                    str(work / "state"),
                    "--trace",
                    str(self.trace_path),
                    *([] if standby_manager else ["--no-standby-manager"]),
                    *extra,
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def records(self) -> list[dict[str, Any]]:
        """Its trace file (shared with its standby manager, which appends to it)."""
        lines = self.trace_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def status(self) -> dict[str, Any] | None:
        try:
            return request(self.socket, {"op": "status"}, timeout=5)
        except (ControlError, ValueError):
            return None

    def wait_status(self, cond: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"nfvha run exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.stderr
                )
            st = self.status()
            return st if st is not None and cond(st) else None

        return wait_for_sync(probe, what)

    def wait_steady(self) -> dict[str, Any]:
        return self.wait_status(steady, "a steady deployment")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = PATIENCE_S) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        """Teardown, also after a failed test: stop it, by force if it must be."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_and_reap([self.proc.pid])
                self.proc.wait()


def steady(status: dict[str, Any]) -> bool:
    """Every service up and every VNFC running (status view of experiment.is_steady)."""
    for vnf in status["vnfs"]:
        if not vnf["service"]["up"]:
            return False
        if any(c["state"] != "running" or c["role"] == "none" for c in vnf["vnfcs"]):
            return False
    return True


def vnfcs(status: dict[str, Any], vnf: str) -> dict[str, dict[str, Any]]:
    """A VNF's VNFCs in a status document, by name."""
    spec = next(v for v in status["vnfs"] if v["vnf"] == vnf)
    return {c["name"]: c for c in spec["vnfcs"]}


def serving(status: dict[str, Any], vnf: str = "web") -> set[str]:
    """The VNFCs of a VNF that are running and active."""
    return {
        n
        for n, c in vnfcs(status, vnf).items()
        if c["role"] == "active" and c["state"] == "running"
    }


def vnfc_view(status: dict[str, Any], name: str) -> dict[str, Any]:
    for vnf in status["vnfs"]:
        for c in vnf["vnfcs"]:
            if c["name"] == name:
                return c
    raise KeyError(name)


@contextlib.asynccontextmanager
async def running_engine(dep: cfg.Deployment, base_dir: Path, state_dir: Path):
    """An in-process engine, always shut down (every VNFC it started stopped) on the way out."""
    engine = Engine(dep, base_dir, Trace(), state_dir)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.shutdown()
