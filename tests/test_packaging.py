"""The systemd unit: restarted on failure, and a manager's death does not kill its VNFCs."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "packaging" / "systemd" / "nfvha@.service"


def section(text: str, name: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == name and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys[key] = value
    return keys


def test_unit_restarts_the_manager_and_leaves_the_vnfcs_running() -> None:
    service = section(UNIT.read_text(), "Service")
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "process"
    assert service["ExecStart"].split()[1:3] == ["run", "/etc/nfvha/%i.yaml"]


def test_unit_is_notified_and_watched() -> None:
    """nfvha run speaks sd_notify (READY=1, WATCHDOG=1): the unit must expect it."""
    service = section(UNIT.read_text(), "Service")
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"  # the leader, never its standby manager
    assert service["WatchdogSec"]


MANAGER_UNIT = UNIT.with_name("nfvha-manager@.service")


def test_the_manager_instance_unit_stands_by_or_leads_and_leaves_the_vnfcs_running() -> None:
    service = section(MANAGER_UNIT.read_text(), "Service")
    assert service["ExecStart"].split()[1:3] == ["manager", "/etc/nfvha/%i.yaml"]
    assert service["Restart"] == "always"  # a deposed leader exits 3: it comes back standing by
    assert service["KillMode"] == "process"
    assert service["Type"] == "notify"


AGENT_UNIT = UNIT.with_name("nfvha-agent@.service")


def test_the_host_agent_unit_runs_this_hosts_agent_and_comes_back() -> None:
    service = section(AGENT_UNIT.read_text(), "Service")
    assert service["ExecStart"].split()[1:5] == ["agent", "/etc/nfvha/%i.yaml", "--host", "%H"]
    assert service["Restart"] == "always"  # a fenced or rebooted host's agent returns
    assert service["KillMode"] == "process"
