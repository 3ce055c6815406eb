"""The consumer (`nfvha probe`) measures what it sees: answers, outage, lost increments."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.integration.support.consumers import udp_get
from tests.integration.support.deployments import free_udp_port
from tests.integration.support.processes import kill_and_reap
from tests.integration.support.runs import NFVHA_COUNTER, cli
from tests.integration.support.waiting import wait_for_sync


@pytest.fixture
def standalone_counter(runtime_dir):
    address = f"127.0.0.1:{free_udp_port()}"
    proc = subprocess.Popen(
        [NFVHA_COUNTER, "--standalone", "--address", address],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_sync(lambda: proc.poll() is not None or udp_get(address), "the standalone counter")
        assert proc.poll() is None, f"nfvha-counter exited with {proc.returncode}"
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_and_reap([proc.pid])
            proc.wait()


def probe_json(target: str, *args: str) -> dict:
    done = cli("probe", target, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.timeout(60)
def test_probe_against_standalone_counter(standalone_counter) -> None:
    duration_ms = 1500.0
    result = probe_json(
        f"udp://{standalone_counter}", "--interval-ms", "2", "--duration", str(duration_ms / 1000)
    )
    assert result["sent"] > 0
    assert result["answered"] > 0
    assert result["answered"] <= result["sent"]
    assert result["lost"] == 0
    assert not result["interleaved"]
    assert [r["vnfc"] for r in result["runs"]] == ["standalone"]
    # Totals only grow, one per INC the counter received.
    assert result["max_total"] >= result["answered"]
    # An outage is a gap between answers; with one healthy server it is a small part of the run.
    assert 0 < result["outage_ms"] < duration_ms / 2, result


@pytest.mark.timeout(60)
def test_probe_get_does_not_count(standalone_counter) -> None:
    before = udp_get(standalone_counter)
    result = probe_json(
        f"udp://{standalone_counter}", "--op", "GET", "--interval-ms", "5", "--duration", "0.3"
    )
    after = udp_get(standalone_counter)
    assert result["answered"] > 0 and result["lost"] == 0
    assert before is not None and after is not None
    assert after[0] == before[0] == result["max_total"]


@pytest.mark.timeout(60)
def test_probe_against_nothing() -> None:
    result = probe_json(
        f"udp://127.0.0.1:{free_udp_port()}", "--interval-ms", "5", "--duration", "0.3"
    )
    assert result["sent"] > 0
    assert result["answered"] == 0
    assert result["runs"] == []
    assert result["lost"] == 0 and result["max_total"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["bad-url", "tcp://127.0.0.1:7000"])
def test_probe_bad_target(target: str) -> None:
    done = cli("probe", target, "--duration", "0.1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "expected udp://HOST:PORT" in done.stderr
    assert repr(target) in done.stderr


@pytest.mark.timeout(60)
def test_probe_port_out_of_range() -> None:
    done = cli("probe", "udp://127.0.0.1:99999", "--duration", "0.1")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
