"""One fault vocabulary: the CLI, the control socket, the engine, the NFVI driver, scenarios,
the simulator and old traces all take the names of nfvha.faults, and only those."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nfvha import faults
from nfvha.cli.operate import fault_app
from nfvha.lab import scenario as sc
from nfvha.runtime.control import REQUEST
from nfvha.runtime.engine import FAULTS
from nfvha.sim.latency import measured
from nfvha.sim.world import Simulation


def test_the_cli_has_one_command_per_runtime_fault_and_hides_the_old_names() -> None:
    shown = {c.name: c.callback for c in fault_app.registered_commands if not c.hidden}
    hidden = {c.name: c.callback for c in fault_app.registered_commands if c.hidden}
    assert set(shown) == {*faults.RUNTIME, "flap"}
    assert set(hidden) == set(faults.ALIASES)
    for old, new in faults.ALIASES.items():
        assert hidden[old] is shown[new], old


@pytest.mark.parametrize("kind", [*faults.RUNTIME, *faults.ALIASES])
def test_the_control_socket_takes_every_runtime_fault_and_old_name(kind: str) -> None:
    request = REQUEST.validate_python({"op": "fault", "kind": kind, "target": "x"})
    assert request.kind == faults.canonical(kind)


@pytest.mark.parametrize("kind", ["link-cut", "bogus", "vnfc-kill"])
def test_the_control_socket_refuses_other_names(kind: str) -> None:
    with pytest.raises(ValidationError):
        REQUEST.validate_python({"op": "fault", "kind": kind, "target": "x"})


def test_the_runtime_injects_every_runtime_fault() -> None:
    # The engine signals a VNFC's process; the NFVI driver takes the VM and host faults.
    assert set(FAULTS) | set(faults.NFVI) == set(faults.RUNTIME)
    assert all(faults.TARGET_OF[k] == "vnfc" for k in FAULTS)


def test_the_simulator_handles_every_simulated_fault() -> None:
    for kind in faults.SIMULATED:
        assert hasattr(Simulation, "_fault_" + kind.replace("-", "_")), kind
    assert set(faults.FAILURES) <= set(faults.SIMULATED) & set(faults.RUNTIME)
    assert set(faults.TARGET_OF) == set(faults.RUNTIME) | set(faults.SIMULATED)


def test_shipped_scenarios_use_the_vocabulary() -> None:
    for name in sc.names():
        scenario = sc.load(name)
        assert scenario.fault.kind in faults.FAILURES
        fault_steps = [s for chain in scenario.expect for s in chain if s.kind == "fault"]
        assert all(s.name == scenario.fault.kind for s in fault_steps), name


def test_a_trace_with_old_names_still_gives_latencies() -> None:
    def rec(t_ms: float, kind: str, name: str, src: str, dst: str) -> dict:
        return {"t": int(t_ms * 1e6), "kind": kind, "name": name, "src": src, "dst": dst}

    old = [rec(0, "fault", "kill", "operator", "a"), rec(3, "event", "ProcessExited", "a", "m")]
    assert measured(old)["exit_seen"] == [pytest.approx(0.003)]
