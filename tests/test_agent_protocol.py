"""The NFVI protocol: every line between the driver and its agents is checked on arrival."""

from __future__ import annotations

import pytest

from nfvha.agents.protocol import decode_from_agent, decode_from_driver
from nfvha.core.heartbeat import AgentKind
from nfvha.sdk.protocol import ProtocolError, encode

HELLO = encode("hello", kind="host", name="host-1", pid=42)


def test_messages_of_the_table_pass() -> None:
    assert decode_from_agent(HELLO, None) == {
        "t": "hello",
        "kind": "host",
        "name": "host-1",
        "pid": 42,
    }
    assert decode_from_agent(encode("hb"), "guest") == {"t": "hb", "n": None}
    assert decode_from_agent(encode("hb", n=3), "guest") == {"t": "hb", "n": 3}
    started = encode("vnfc_started", name="a", req=3, pid=99)
    assert decode_from_agent(started, "guest")["pid"] == 99
    assert decode_from_agent(encode("vm_exited", name="vm-1", pid=7, status=-9), "host")
    start = encode("start_vnfc", token=1, req=1, vnfc="a", argv=["x"], env={}, cwd="/")
    assert decode_from_driver(start, "guest")["argv"] == ["x"]


@pytest.mark.parametrize(
    ("line", "sender", "reason"),
    [
        (b"not json\n", None, "Invalid JSON"),
        (b"[1, 2]\n", None, "Input should be an object"),
        (b'{"kind": "host"}\n', None, "Unable to extract tag"),
        (encode("warp"), "host", "Input tag 'warp' found"),
        (encode("hello", kind="alien", name="x", pid=1), None, "hello.kind: Input should be"),
        (encode("hello", kind="host", name="x", pid=-1), None, "hello.pid: Input should be great"),
        (encode("hello", kind="host", name="x", pid=True), None, "hello.pid: Input should be a va"),
        (encode("hello", kind="host", name="x"), None, "hello.pid: Field required"),
        (encode("hb", extra=1), "host", "hb.extra: Extra inputs are not permitted"),
        (encode("vnfc_started", name="a", req="1", pid=2), "guest", "vnfc_started.req"),
        (encode("hb"), None, "hb before hello"),
        (HELLO, "host", "hello is not for a host agent to send"),
        (encode("vnfc_started", name="a", req=1, pid=2), "host", "not for a host agent"),
        (encode("vm_exited", name="v", pid=2, status=0), "guest", "not for a guest agent"),
    ],
)
def test_a_malformed_or_misplaced_line_from_an_agent_is_refused(
    line: bytes, sender: AgentKind | None, reason: str
) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_from_agent(line, sender)


@pytest.mark.parametrize(
    ("line", "receiver", "reason"),
    [
        (b"{\n", "guest", "Invalid JSON"),
        (
            encode("start_vm", token=1, vm="v", cgroup="/c", nice=0),
            "guest",
            "not for a guest agent",
        ),
        (encode("start_vm", token=1, vm="v", cgroup="/c", nice=-5), "host", "start_vm.nice"),
        (encode("start_vm", vm="v", cgroup="/c", nice=0), "host", "start_vm.token: Field required"),
        (encode("start_vm", token=0, vm="v", cgroup="/c", nice=0), "host", "start_vm.token: Input"),
        (
            encode("start_vnfc", token=1, req=1, vnfc="a", argv="x", env={}, cwd="/"),
            "guest",
            "start_vnfc.argv: Input should be a valid array",
        ),
        (
            encode("start_vnfc", token=1, req=1, vnfc="a", argv=["x"], env={"A": 1}, cwd="/"),
            "guest",
            "start_vnfc.env.A: Input should be a valid string",
        ),
    ],
)
def test_a_malformed_line_from_the_driver_is_refused(
    line: bytes, receiver: str, reason: str
) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_from_driver(line, receiver)
