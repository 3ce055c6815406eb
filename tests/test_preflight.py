"""Preflight: what will fail is found before anything starts, with the path inside the file."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nfvha import config as cfg
from nfvha.drivers.containment import ENV_SWITCH
from nfvha.runtime.preflight import Finding, preflight


def plain(port: int, **vnfc: object) -> dict:
    return {
        "name": "pf",
        "vnfs": [
            {
                "name": "v",
                "redundancy": {"model": "none"},
                "state": "none",
                "sdk": False,
                "service": {"name": "s", "protocol": "udp", "address": f"127.0.0.1:{port}"},
                "vnfcs": [{"name": "v-1", "command": "sh -c true", **vnfc}],
                "policies": {"health_check": {"kind": "udp"}},
            }
        ],
    }


@pytest.fixture
def udp_port():
    """A UDP port held by this test while it runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1], s


def run(raw: dict, tmp_path: Path, **kw: bool) -> list[Finding]:
    return preflight(cfg.Deployment.model_validate(raw), tmp_path, tmp_path / "state", **kw)


def errors(found: list[Finding]) -> dict[str, str]:
    return {f.where: f.what for f in found if f.level == "error"}


def warnings(found: list[Finding]) -> dict[str, str]:
    return {f.where: f.what for f in found if f.level == "warning"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_valid_deployment_has_no_error(tmp_path: Path) -> None:
    assert errors(run(plain(free_port()), tmp_path)) == {}


def test_missing_and_non_executable_commands(tmp_path: Path) -> None:
    (tmp_path / "script.sh").write_text("#!/bin/sh\n")
    raw = plain(free_port(), command="no-such-command-nfvha --x")
    assert "not found" in errors(run(raw, tmp_path))["vnfs[0].vnfcs[0].command"]
    raw = plain(free_port(), command="./script.sh")
    assert "not executable" in errors(run(raw, tmp_path))["vnfs[0].vnfcs[0].command"]
    raw = plain(free_port(), command="nfvha-counter")  # the interpreter's bin dir comes first
    assert errors(run(raw, tmp_path)) == {}


def test_a_held_port_is_an_error_unless_the_deployment_may_hold_it(
    tmp_path: Path, udp_port: tuple[int, socket.socket]
) -> None:
    raw = plain(udp_port[0])
    assert "in use" in errors(run(raw, tmp_path))["vnfs[0].service.address"]
    assert "in use" in warnings(run(raw, tmp_path, ports_held_ok=True))["vnfs[0].service.address"]


def test_health_check_that_does_not_fit_the_service(tmp_path: Path) -> None:
    raw = plain(free_port())
    raw["vnfs"][0]["service"]["protocol"] = "tcp"
    raw["vnfs"][0]["policies"]["health_check"]["address"] = f"127.0.0.1:{free_port()}"
    found = warnings(run(raw, tmp_path))
    assert "udp check against a tcp service" in found["vnfs[0].policies.health_check.kind"]
    assert "not the service's" in found["vnfs[0].policies.health_check.address"]


def test_unknown_user_and_group(tmp_path: Path) -> None:
    found = errors(run(plain(free_port(), user="no-such-user-nfvha"), tmp_path))
    assert "no-such-user-nfvha" in found["vnfs[0].vnfcs[0].user"]
    found = errors(run(plain(free_port(), group="no-such-group-nfvha"), tmp_path))
    assert "no-such-group-nfvha" in found["vnfs[0].vnfcs[0].group"]


def test_state_dir_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    dep = cfg.Deployment.model_validate(plain(free_port()))
    found = preflight(dep, tmp_path, tmp_path / "file" / "state")
    assert "is not a directory" in errors(found)["state_dir"]


def test_without_cgroups_a_warning_and_limits_are_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SWITCH, "off")
    assert "escapes its group" in warnings(run(plain(free_port()), tmp_path))["vnfs"]
    raw = plain(free_port(), limits={"pids_max": 64})
    assert "cgroup containment" in errors(run(raw, tmp_path))["vnfs[0].vnfcs[0].limits"]


def test_config_of_a_vnfc_stop_signal_user_limits() -> None:
    vnfc = cfg.Vnfc.model_validate(
        {"name": "a", "command": "x", "stop_signal": "int", "limits": {"memory_max": "256M"}}
    )
    assert vnfc.stop_signal == "SIGINT"
    assert vnfc.limits.files() == {"memory.max": "256M"}
    for bad in ({"stop_signal": "SIGKILL"}, {"stop_signal": "NOPE"}, {"limits": {"cpu_max": "x"}}):
        with pytest.raises(ValueError):
            cfg.Vnfc.model_validate({"name": "a", "command": "x", **bad})
