"""The trace: bounded in memory, complete in its file; noisy notes throttled, never lost."""

from __future__ import annotations

from pathlib import Path

from nfvha.runtime.trace import MAXLEN, Throttle, Trace, load


def test_memory_keeps_the_latest_records_and_the_file_all(tmp_path: Path) -> None:
    sink = tmp_path / "trace.jsonl"
    trace = Trace(sink, maxlen=10)
    for i in range(25):
        trace.record("note", "Tick", data={"i": i}, t=1000 + i)
    trace.close()

    assert [r["data"]["i"] for r in trace.records] == list(range(15, 25))
    assert [r["data"]["i"] for r in load(sink)] == list(range(25))
    # What the users of the records do with them still works on the ring.
    assert trace.records[-1]["data"]["i"] == 24
    assert [r["data"]["i"] for r in trace.records[7:]] == [22, 23, 24]
    assert [r["data"]["i"] for r in trace.since(1022)] == [22, 23, 24]


def test_default_bound() -> None:
    assert Trace().records.maxlen == MAXLEN
    assert Trace(maxlen=None).records.maxlen is None


def test_throttle_traces_a_burst_and_sums_up_the_rest() -> None:
    trace = Trace()
    throttle = Throttle(trace, burst=3, window_s=3600)
    for i in range(100):
        throttle.record("note", "MessageRefused", src="?", why=f"bad line {i}")
    assert [r["why"] for r in trace.records] == ["bad line 0", "bad line 1", "bad line 2"]
    throttle.flush()
    summary = trace.records[-1]
    assert len(trace.records) == 4
    assert summary["name"] == "MessageRefused" and summary["data"] == {"suppressed": 97}
    throttle.flush()  # nothing more to say
    assert len(trace.records) == 4
