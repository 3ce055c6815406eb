"""Isolation of every integration test: its own runtime dir (sockets), and no process left
behind, even when the test fails."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from nfvha.drivers import network
from tests.integration.support.cgroups import leftover_cgroups
from tests.integration.support.etcd import etcd_cluster  # noqa: F401  (a fixture, found here)
from tests.integration.support.processes import kill_and_reap, processes_of

# Unix socket paths are limited to 107 bytes: RUNTIME/<deployment>/components.sock must fit.
_SOCKET_TAIL = len("/it-xxxxxxxx/components.sock")


@pytest.fixture(scope="session", autouse=True)
def no_namespace_left_at_the_end():
    """At the end of the session, no network namespace (nor the veths in it) of a test is
    left: the proof the issue asks for. One left is removed, and the session errors."""
    before = set(network.all_namespaces())
    yield
    left = sorted(set(network.all_namespaces()) - before)
    for name in left:
        network.remove_namespaces([name])
    if left:
        pytest.fail(f"network namespaces left behind by the tests (removed now): {left}")


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """NFVHA_RUNTIME_DIR for this test only; at teardown, any process whose environment points
    into it (a VNFC, an `nfvha run`, a probe) is killed and reaped, and the test errors; the
    cgroups of its deployments that are still there are removed."""
    wanted = tmp_path / "rt"
    short = None
    if len(str(wanted)) + _SOCKET_TAIL > 100:
        short = Path(tempfile.mkdtemp(prefix="nfvha-it-"))
        wanted = short / "rt"
    wanted.mkdir()
    monkeypatch.setenv("NFVHA_RUNTIME_DIR", str(wanted))
    yield wanted
    leftovers = processes_of(wanted)
    kill_and_reap(leftovers)
    # What a manager the test killed left in cgroups (the next run would have removed it).
    leftover_cgroups({p.name.removesuffix(".lock") for p in wanted.iterdir()})
    if short is not None:
        shutil.rmtree(short, ignore_errors=True)
    if leftovers:
        pytest.fail(f"processes left behind by the test (killed now): {leftovers}")


@pytest.fixture
def nfvha_runs(runtime_dir: Path):
    """Collects the `nfvha run` processes a test starts; stops them all at teardown."""
    runs = []
    yield runs
    for run in runs:
        run.close()
