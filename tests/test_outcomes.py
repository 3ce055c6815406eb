"""The trace read for the tools around nfvha: outcomes from records, and their stderr lines."""

from __future__ import annotations

from typing import Any

from nfvha import config as cfg
from nfvha.runtime import journal
from nfvha.runtime import outcomes as o
from tests.integration.support.deployments import example

DEP: cfg.Deployment = example("2n", name="t", port=7999)


def rec(t: int, kind: str, name: str, **data: Any) -> dict[str, Any]:
    return {"t": t, "wall": 0.0, "kind": kind, "name": name, "data": data}


def assigned(t: int, vnfc: str, role: str, epoch: int) -> list[dict[str, Any]]:
    return [
        rec(t, "command", "AssignRole", vnfc=vnfc, role=role, epoch=epoch),
        rec(t + 1, "event", "RoleConfirmed", vnfc=vnfc, role=role, epoch=epoch),
    ]


def feed(records: list[dict[str, Any]]) -> list[o.Outcome]:
    reader = o.Outcomes(DEP)
    return [out for r in records for out in reader.feed(r)]


STEADY = [*assigned(0, "counter-a", "active", 1), *assigned(10, "counter-b", "standby", 1)]


def test_a_crash_of_the_active_is_a_failover_then_a_recovery_then_a_restart() -> None:
    crash = [
        rec(1_000, "event", "ProcessExited", vnfc="counter-a", status="killed"),
        rec(1_500, "command", "Cleanup", vnfc="counter-a", grace_s=0.0),
        *assigned(3_000, "counter-b", "active", 2),
        rec(4_000, "command", "StartVnfc", vnfc="counter-a", token=2),
    ]
    outs = feed(STEADY + crash)
    kinds = [type(x).__name__ for x in outs]
    assert kinds == [
        "ServiceState", "RoleTaken", "RoleTaken",  # a serves, b is standby
        "Failed", "ServiceState",  # a failed, the service is down
        "Failover", "ServiceState", "RoleTaken", "Recovered",  # b took over
        "Restart",
    ]  # fmt: skip
    failed = next(x for x in outs if isinstance(x, o.Failed))
    assert (failed.role, failed.detection_s) == ("active", 500 / 1e9)
    assert next(x for x in outs if isinstance(x, o.Recovered)).recovery_s == 1_501 / 1e9
    assert [x.up for x in outs if isinstance(x, o.ServiceState)] == [True, False, True]
    line = journal.line(next(x for x in outs if isinstance(x, o.Failover)))
    assert line == "nfvha event=failover vnf=counter from=counter-a to=counter-b epoch=2"


def test_a_standby_failure_is_no_failover_and_a_stale_confirmation_is_ignored() -> None:
    outs = feed(
        [
            *STEADY,
            rec(1_000, "command", "Cleanup", vnfc="counter-b", grace_s=0.5),
            rec(1_100, "event", "RoleConfirmed", vnfc="counter-b", role="standby", epoch=1),
        ]
    )
    assert not any(isinstance(x, o.Failover | o.Recovered) for x in outs)
    assert isinstance(outs[-1], o.Failed) and outs[-1].detection_s is None  # no sign traced


def test_an_escalation_is_read_from_the_managers_message_once() -> None:
    data = {"vnfc": "counter-b", "failures": 4, "reason": "failed 4 times within 60 s"}
    outs = feed([rec(1, "message", "Escalate", **data), rec(2, "event", "Escalate", **data)])
    assert outs == [o.Escalation("counter", "counter-b", 4, "failed 4 times within 60 s")]
    assert journal.line(outs[0]) == (
        "nfvha event=escalation vnf=counter vnfc=counter-b failures=4 "
        'reason="failed 4 times within 60 s"'
    )
