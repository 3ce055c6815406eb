"""The pool of a load-balanced VNF (core/pool.py rules), and its configuration: the implicit
load-balancer VNF, the backend addresses, and what a bad load_balancer block is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfvha import config
from nfvha.core import messages as m
from nfvha.core import pool
from nfvha.core.ha import HAManager

POOLED = """
name: t
vnfs:
  - name: web
    redundancy: {model: n+m, active: 2, spare: 1, spare_start: on_demand}
    sdk: false
    service: {name: http, protocol: tcp, address: "127.0.0.1:7080"}
    load_balancer: {pool: vnfc}
    vnfcs:
      - {name: web-a, command: "true"}
      - {name: web-b, command: "true"}
      - {name: web-c, command: "true"}
    policies: {health_check: {kind: tcp}}
"""


def load(tmp_path: Path, text: str) -> config.Deployment:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    return config.load(path)[0]


def problem(tmp_path: Path, text: str) -> str:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: vnfs["), message
    return message


def up(mgr: HAManager, name: str) -> None:
    """A plain process: started, its first good check is its registration, confirmed."""
    mgr.handle(m.ProcessStarted(vnfc=name, pid=1), 0.0)
    assign = next(
        c
        for c in mgr.handle(m.HealthCheckPassed(vnfc=name), 0.0).commands
        if c.name == "AssignRole"
    )
    assert isinstance(assign, m.AssignRole)
    mgr.handle(m.RoleConfirmed(vnfc=name, role=assign.role, epoch=assign.epoch), 0.0)


def test_the_load_balancer_is_an_implicit_2n_vnf(tmp_path: Path) -> None:
    dep = load(tmp_path, POOLED)
    web, lb = dep.vnfs
    assert (lb.name, [c.name for c in lb.vnfcs]) == ("web-lb", ["web-lb-a", "web-lb-b"])
    assert (lb.redundancy.model, lb.sdk, lb.state_mode, lb.balances) == ("2n", False, "none", "web")
    assert lb.service.address == web.service.address  # the frontend is the service address
    assert lb.vnfcs[0].command[1:3] == ["-db", "-f"]
    assert lb.vnfcs[0].command[3].endswith("/t/lb/web-lb-a/haproxy.cfg")
    assert lb.policies.health_check.kind == "http" and web.balances is None
    assert web.load_balancer == config.LoadBalancing(pool="vnfc")


def test_backend_addresses(tmp_path: Path) -> None:
    web, lb = load(tmp_path, POOLED).vnfs
    assert [pool.backend_address(web, c.name) for c in web.vnfcs] == [
        "127.0.1.1:7080",
        "127.0.1.2:7080",
        "127.0.1.3:7080",
    ]
    assert pool.backend_address(lb, "web-lb-b") == "127.0.2.2:7080"  # its monitor address
    assert pool.backend_address(web, "web-b", node_ip="10.77.0.5") == "10.77.0.5:7080"
    plain = load(tmp_path, POOLED.replace("    load_balancer: {pool: vnfc}\n", "")).vnfs[0]
    assert pool.backend_address(plain, "web-a") is None  # it serves the service address


def test_a_vnfc_is_in_the_pool_only_while_active_and_confirmed(tmp_path: Path) -> None:
    web = load(tmp_path, POOLED).vnfs[0]
    mgr = HAManager(web)
    mgr.start(0.0)
    states = {s: mb.state for s, mb in pool.desired(web, mgr.vnfcs).items()}
    assert states == {"web-a": "maint", "web-b": "maint", "web-c": "maint"}  # starting
    up(mgr, "web-a")
    up(mgr, "web-b")
    want = pool.desired(web, mgr.vnfcs)
    assert {s: mb.state for s, mb in want.items()} == {
        "web-a": "ready",
        "web-b": "ready",
        "web-c": "maint",
    }
    assert want["web-c"].why == "web-c is stopped"
    # Rule 1: out as soon as its failure is decided, before its cleanup is done.
    mgr.handle(m.ProcessExited(vnfc="web-a", status="killed by SIGKILL"), 0.1)
    want = pool.desired(web, mgr.vnfcs)
    assert want["web-a"].state == "maint" and "failed (exited" in want["web-a"].why
    assert want["web-b"].state == "ready"
    # Isolated: the on-demand spare starts; it joins only once it is confirmed active.
    mgr.handle(m.CleanupDone(vnfc="web-a", ok=True), 0.2)
    assert pool.desired(web, mgr.vnfcs)["web-c"].state == "maint"
    up(mgr, "web-c")
    assert pool.desired(web, mgr.vnfcs)["web-c"].state == "ready"
    assert pool.desired(web, mgr.vnfcs)["web-a"].state == "maint"


def test_vm_pool_follows_the_vim_first(tmp_path: Path) -> None:
    text = POOLED.replace("{pool: vnfc}", "{pool: vm}").replace(
        "name: t\n", "name: t\nhosts: [{name: h1}, {name: h2}]\n"
    )
    web = load(tmp_path, text).vnfs[0]
    mgr = HAManager(web)
    mgr.start(0.0)
    up(mgr, "web-a")
    up(mgr, "web-b")
    placement = {c.name: f"vm-{c.name}" for c in web.vnfcs}
    vms = {"vm-web-a": "up", "vm-web-b": "failed", "vm-web-c": "up"}
    want = pool.desired(web, mgr.vnfcs, placement, vms)
    assert list(want) == ["vm-web-a", "vm-web-b", "vm-web-c"]
    assert want["vm-web-a"] == pool.Member(
        "ready", "VM vm-web-a is up and web-a is active and confirmed"
    )
    assert want["vm-web-b"] == pool.Member("maint", "VM vm-web-b is failed (VIM)")
    assert want["vm-web-c"].state == "maint"  # its VM is up, its VNFC is not serving


SINGLE = POOLED.replace(
    "n+m, active: 2, spare: 1, spare_start: on_demand}", "none}\n    state: none"
).replace('      - {name: web-b, command: "true"}\n      - {name: web-c, command: "true"}\n', "")


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (SINGLE, "needs model n+m"),
        (POOLED.replace("protocol: tcp", "protocol: udp"), "not udp"),
        (POOLED.replace("{pool: vnfc}", "{pool: vm}"), "pool: vm needs hosts"),
        (
            POOLED.replace("{kind: tcp}", "{kind: tcp, address: '127.0.0.1:7080'}"),
            "own backend address",
        ),
        (POOLED.replace("- {name: web-c,", "- {name: web-lb-a,"), "web-lb-a already taken"),
        (POOLED.replace("name: t\n", "name: t\nnetwork: {mode: netns}\n"), "set one"),
    ],
)
def test_bad_load_balancer_blocks_name_file_and_path(tmp_path: Path, text: str, what: str) -> None:
    assert what in problem(tmp_path, text)


def test_vm_pool_needs_a_vm_per_vnfc(tmp_path: Path) -> None:
    text = POOLED.replace("{pool: vnfc}", "{pool: vm}").replace(
        "name: t\n", "name: t\nhosts: [{name: h1}]\nvms: [{name: vm1}]\n"
    )
    text = text.replace('{name: web-a, command: "true"}', '{name: web-a, command: "true", vm: vm1}')
    text = text.replace('{name: web-b, command: "true"}', '{name: web-b, command: "true", vm: vm1}')
    assert "a VM of its own" in problem(tmp_path, text)
    vnfc_pool = text.replace("{pool: vm}", "{pool: vnfc}")
    assert load(tmp_path, vnfc_pool).vnfs[0].load_balancer.pool == "vnfc"  # loopback: fine
    netns = vnfc_pool.replace("name: t\n", "name: t\nnetwork: {mode: auto}\n")
    assert "share its address and the service port" in problem(tmp_path, netns)


def test_admin_socket_too_long_for_haproxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NFVHA_RUNTIME_DIR", "/tmp/" + "x" * 80)
    path = tmp_path / "d.yaml"
    path.write_text(POOLED)
    with pytest.raises(config.ConfigError, match="over HAProxy's 97 bytes: set NFVHA_RUNTIME_DIR"):
        config.load(path)


def test_the_vip_goes_to_the_load_balancer_and_auto_without_one_warns(tmp_path: Path) -> None:
    auto = POOLED.replace("name: t\n", "name: t\nnetwork: {mode: auto}\n")
    assert (
        "vnfs[0].service.vip: where mode auto picks netns"
        in config.warnings(load(tmp_path, auto))[-1]
    )
    dep = load(tmp_path, auto.replace('7080"}', '7080", vip: 10.77.0.80}'))
    assert not any("service.vip" in w for w in config.warnings(dep))
    web, lb = dep.vnfs
    assert (web.service.vip, lb.service.vip) == (None, "10.77.0.80")
    assert lb.service.address_in("netns") == "10.77.0.80:7080"
    assert pool.backend_address(web, "web-b", "10.77.0.4") == "10.77.0.4:7080"
    assert pool.backend_address(lb, "web-lb-a", "10.77.0.6") == "10.77.0.6:7080"
