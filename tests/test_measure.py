"""The measurement code, on synthetic answer streams and traces (no processes): the consumer's
view of a fault, the probe's tally, the phases read from the trace, scenario verdicts, the one
percentile definition, the benchmarks' row verdicts and staleness check, and predict's interval.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pytest

from nfvha.lab import report, stats
from nfvha.lab.experiment import Experiment, FaultOutcome, consumer_view, phases
from nfvha.lab.probe import Acknowledged, ProbeResult, Tally
from nfvha.lab.scenario import Round, ScenarioOutcome, check_round, escalated_on, load
from nfvha.sim import predict as pr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import provenance  # noqa: E402
import run as bench_run  # noqa: E402
import tables  # noqa: E402

MS = 1_000_000
FAULT = 1_000 * MS


def stream(times_ms: list[float], vnfc: str = "a", start_total: int = 1) -> list:
    """Good answers (t_ns, total, vnfc), totals counting up as a stateful counter's do."""
    return [(round(t * MS), start_total + k, vnfc) for k, t in enumerate(times_ms)]


def every_ms(start: float, end: float) -> list[float]:
    return [float(t) for t in range(int(start), int(end))]


# --- the consumer's view of one fault ---------------------------------------------------------


def test_known_gap_is_the_outage() -> None:
    answers = stream(every_ms(900, 1000) + every_ms(1007, 1100))
    view = consumer_view(answers, FAULT, 1100 * MS)
    assert view.answered
    assert view.outage_ms == pytest.approx(8.0)  # 999 -> 1007
    assert (view.last_good_ns, view.first_good_ns) == (999 * MS, 1007 * MS)
    assert (view.failover_from_ns, view.failover_to_ns) == (999 * MS, 1007 * MS)
    assert view.lost == 0


def test_reply_in_flight_when_the_active_died_does_not_hide_the_outage() -> None:
    """The dying active's last reply arrives 0.2 ms after the fault; the silence follows it."""
    answers = stream([*every_ms(900, 1000), 1000.2, *every_ms(1007, 1100)])
    view = consumer_view(answers, FAULT, 1100 * MS)
    assert view.outage_ms == pytest.approx(6.8)
    assert view.last_good_ns == round(1000.2 * MS)
    assert view.failover_from_ns == view.last_good_ns


def test_replies_read_late_by_a_descheduled_probe_are_the_dying_actives() -> None:
    """The probe, descheduled, reads the dying active's last replies 4 ms after the fault; then
    the successor answers. The failover is from a's last reply to b's first, and only b answers
    after it (what answered_by checks)."""
    answers = stream([*every_ms(900, 1000), 1003.9, 1004.0], "a") + stream(
        every_ms(1007, 1100), "b", 103
    )
    view = consumer_view(answers, FAULT, 1100 * MS)
    assert (view.failover_from_ns, view.failover_to_ns) == (1004 * MS, 1007 * MS)
    assert {v for t, _, v in answers if t >= view.failover_to_ns} == {"b"}


def test_no_answer_after_the_fault_runs_to_the_end_of_the_window() -> None:
    answers = stream(every_ms(900, 1000))
    view = consumer_view(answers, FAULT, 2000 * MS)
    assert not view.answered
    assert view.outage_ms == pytest.approx(1001.0)  # 999 -> the window's end at 2000
    assert view.first_good_ns == 2000 * MS


def test_answers_after_the_window_do_not_end_its_outage() -> None:
    """The service came back only after the next fault: this fault was never answered."""
    answers = stream(every_ms(900, 1000) + every_ms(2500, 2600))
    view = consumer_view(answers, FAULT, 2000 * MS)
    assert not view.answered and view.outage_ms == pytest.approx(1001.0)


def test_a_longer_silence_later_is_the_outage_but_the_failover_stays_at_the_fault() -> None:
    gaps = every_ms(900, 1000) + every_ms(1005, 1300) + every_ms(1320, 1400)
    view = consumer_view(stream(gaps), FAULT, 1400 * MS)
    assert view.outage_ms == pytest.approx(21.0)  # 1299 -> 1320, during the repair
    assert (view.failover_from_ns, view.failover_to_ns) == (999 * MS, 1005 * MS)


def test_a_hiccup_just_after_the_failover_is_not_taken_for_it() -> None:
    """Answers are back 4 ms after the fault; a longer silence 10 ms later (the repair's fork)
    is the outage, but the failover a person looks for is the one at the fault (the demo)."""
    gaps = every_ms(900, 1000) + every_ms(1004, 1010) + every_ms(1016, 1100)
    view = consumer_view(stream(gaps), FAULT, 1100 * MS)
    assert (view.failover_from_ns, view.failover_to_ns) == (999 * MS, 1004 * MS)
    assert (view.last_good_ns, view.first_good_ns) == (1009 * MS, 1016 * MS)


def test_two_servers_interleaved_count_as_one_stream_of_answers() -> None:
    """Answers alternate between two servers: the silence is measured whoever answers."""
    a = stream([t for t in every_ms(900, 1100) if t % 2 == 0 and not 1000 <= t < 1010], "a")
    b = stream([t for t in every_ms(900, 1100) if t % 2 == 1 and not 1000 <= t < 1010], "b")
    view = consumer_view(sorted(a + b), FAULT, 1100 * MS)
    assert view.outage_ms == pytest.approx(11.0)  # 999 -> 1010


def test_a_repeated_total_after_the_fault_is_a_lost_update() -> None:
    before = [(t * MS, t - 899, "a") for t in range(900, 1000)]  # totals 1..100
    after = [(t * MS, t - 910, "b") for t in range(1010, 1020)]  # 100, 101, ...: 100 repeats
    view = consumer_view(before + after, FAULT, 1100 * MS)
    assert view.lost == 1


# --- the probe's tally --------------------------------------------------------------------------


def tally(op: str = "INC") -> Tally:
    return Tally(ProbeResult("udp://x:1", op, 1.0, 1.0), window_ns=100 * MS)


def test_tally_gap_lost_and_answerers() -> None:
    t = tally()
    for k, (ms, total) in enumerate([(1, 1), (2, 2), (9, 3), (10, 3)]):
        t.good(ms * MS, total, "a" if k < 2 else "b")
    r = t.result
    assert r.answered == 4 and r.outage_ms == pytest.approx(7.0)
    assert r.lost == 1 and r.max_total == 3
    assert [(run.vnfc, run.count) for run in r.runs] == [("a", 2), ("b", 2)]
    assert not r.interleaved


def test_tally_sees_two_actives_interleaved() -> None:
    t = tally()
    for k, who in enumerate("ababab"):
        t.good((k + 1) * MS, 0, who)
    assert t.result.interleaved


def test_a_switch_back_after_the_window_is_not_two_actives() -> None:
    t = tally()
    t.good(1 * MS, 0, "a")
    t.good(2 * MS, 0, "b")
    t.good(500 * MS, 0, "a")  # b answered alone for longer than the window
    assert not t.result.interleaved


def test_reordered_answers_on_several_sockets_are_not_losses() -> None:
    acked = Acknowledged()
    assert [acked.repeats(t) for t in (1, 3, 2, 4)] == [False] * 4
    assert acked.repeats(3)  # acknowledged before: forgotten
    assert not acked.repeats(0) and not acked.repeats(0)  # stateless: never a loss


def test_tally_get_reports_how_far_the_total_went_back() -> None:
    t = tally("GET")
    for ms, total in [(1, 10), (2, 10), (3, 7)]:
        t.good(ms * MS, total, "a")
    assert t.result.lost == 3


# --- phases from the trace's structured fields ---------------------------------------------------


def rec(t_ms: float, kind: str, name: str, src: str = "", dst: str = "", **data) -> dict:
    return {"t": round(t_ms * MS), "kind": kind, "name": name, "src": src, "dst": dst,
            "data": data, "why": "words that may change"}  # fmt: skip


FAILOVER = [
    rec(1000, "fault", "vnfc-crash", "operator", "a"),
    rec(1003, "event", "ProcessExited", "a", "ha:v", vnfc="a"),
    rec(1003.01, "command", "WatchHealth", "ha:v", "a", vnfc="a", on=False),
    rec(1003.02, "command", "Cleanup", "ha:v", "a", vnfc="a"),
    rec(1003.3, "event", "CleanupDone", "a", "ha:v", vnfc="a", ok=True),
    rec(1003.31, "command", "AssignRole", "ha:v", "b", vnfc="b", role="active", epoch=2),
    rec(1004.1, "event", "RoleConfirmed", "b", "ha:v", vnfc="b", role="active"),
    rec(1004.2, "command", "StartVnfc", "ha:v", "a", vnfc="a"),
    rec(1125, "event", "RoleConfirmed", "a", "ha:v", vnfc="a", role="standby"),
]


def test_phases_are_read_from_record_names_and_data() -> None:
    assert phases(FAILOVER, FAULT, "a") == {
        "detected": 3.0,
        "isolated": 3.3,
        "assigned": 3.31,
        "serving": 4.1,
        "repaired": 125.0,
    }


def test_rewording_a_why_changes_no_phase() -> None:
    reworded = [{**r, "why": "entirely different words"} for r in FAILOVER]
    assert phases(reworded, FAULT, "a") == phases(FAILOVER, FAULT, "a")


def test_a_failed_cleanup_is_no_isolation() -> None:
    failed = [
        {**r, "data": {**r["data"], "ok": False}} if r["name"] == "CleanupDone" else r
        for r in FAILOVER
    ]
    assert "isolated" not in phases(failed, FAULT, "a")


def test_phases_stop_at_the_next_fault() -> None:
    assert "repaired" not in phases(FAILOVER, FAULT, "a", until_ns=1100 * MS)


# --- scenario verdicts ---------------------------------------------------------------------------


def test_escalation_is_counted_in_faults_not_words() -> None:
    records = [
        rec(1, "fault", "vnfc-crash"),
        rec(2, "fault", "vnfc-crash"),
        rec(3, "event", "ProcessExited", "a"),
        rec(4, "fault", "vnfc-crash"),
        rec(5, "message", "Escalate", "vnfm:v", "vnfm", vnfc="a", failures=3),
    ]
    assert escalated_on(records) == 3
    assert escalated_on(records[:4]) is None


def outcome_of(
    scenario_name: str, faults: list[FaultOutcome], rounds: list[Round]
) -> ScenarioOutcome:
    probe = {"lost": 0, "interleaved": False}
    exp = Experiment("d", "2n", probe, faults, records=[])
    return ScenarioOutcome(scenario_name, load(scenario_name), exp, rounds)


def fault(outage_ms: float, answered: bool = True) -> FaultOutcome:
    return FaultOutcome("vnfc-crash", "a", FAULT, outage_ms, answered, 0)


def test_verdict_fails_a_round_that_does_not_match() -> None:
    good = Round({}, [{"ok": True, "steps": []}], [], None)
    bad = Round({}, [{"ok": False, "steps": [], "missing": "x"}], [], None)
    assert outcome_of("uc1", [fault(7.0)] * 2, [good, good]).verdict()["pass"]
    v = outcome_of("uc1", [fault(7.0)] * 2, [good, bad]).verdict()
    assert not v["sequence_matches"] and not v["pass"]


def test_verdict_fails_a_fault_never_answered() -> None:
    good = Round({}, [{"ok": True, "steps": []}], [], None)
    v = outcome_of("uc1", [fault(7.0), fault(900.0, answered=False)], [good]).verdict()
    assert not v["answered_after_every_fault"] and not v["pass"]
    assert v["outage_ms"] == 900.0  # the silence to the window's end, not dropped


def test_a_round_is_checked_in_its_own_window() -> None:
    scenario = load("uc1")
    records = [
        rec(1000, "fault", "vnfc-crash", "operator", "a"),
        rec(1003, "message", "Escalate", "ha:v", "vnfm"),
        rec(2000, "fault", "vnfc-crash", "operator", "b"),
    ]
    first = check_round(scenario, records, 1000 * MS, 2000 * MS, {})
    second = check_round(scenario, records, 2000 * MS, None, {})
    assert first.escalated_on == 1 and second.escalated_on is None


def test_uc9_expects_its_escalation_on_the_third_failure() -> None:
    scenario = load("uc9")
    ok = [{"ok": True, "steps": []}] * len(scenario.expect)
    assert Round({}, ok, [], 3).matches(scenario)
    assert not Round({}, ok, [], 2).matches(scenario)
    assert not Round({}, ok, [], None).matches(scenario)


# --- the timeline a person reads ---------------------------------------------------------------


def test_timeline_labels_a_silence_by_where_it_really_is() -> None:
    failover = (999 * MS, 1006 * MS)
    later = (1900 * MS, 1950 * MS)
    rows = report.timeline([], FAULT, failover, longest=later)
    texts = [r["what"] for r in rows]
    assert "before the failover (before the fault)" in texts[0]
    assert "(900.0 ms after the fault)" in texts[2]
    assert [r["ms"] for r in rows] == [-1.0, 6.0, 900.0, 950.0]


# --- statistics: one definition -------------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 0.95) == pytest.approx(95.05)
    assert stats.percentile(values, 1.0) == 100.0
    assert stats.percentile([7.0], 0.95) == 7.0
    for sample in ([3.0, 1.0, 4.0, 1.0, 5.0], [2.0, 9.0, 4.0, 6.0]):
        assert stats.percentile(sample, 0.5) == statistics.median(sample)
        assert stats.percentile(sample, 0.95) == pytest.approx(
            statistics.quantiles(sample, n=20, method="inclusive")[-1]
        )


def test_summary_of_nothing_is_empty_not_zero() -> None:
    assert stats.summary([]) == {"n": 0, "median": None, "p95": None, "max": None}
    assert stats.summary([1.0, 2.0, 3.0])["median"] == 2.0


@pytest.mark.parametrize(
    ("df", "t"),
    [(1, 12.706), (2, 4.303), (9, 2.262), (19, 2.093), (29, 2.045), (60, 2.000), (120, 1.980)],
)
def test_t_quantiles_are_exact(df: int, t: float) -> None:
    assert stats.t_quantile(0.95, df) == pytest.approx(t, abs=5e-4)


def test_predict_interval_at_30_runs_uses_2045_not_196() -> None:
    samples = [float(k % 7) for k in range(30)]
    est = pr.Estimate.of(samples)
    half = 2.045 * statistics.stdev(samples) / math.sqrt(30)
    assert est.high - est.mean == pytest.approx(half, rel=1e-3)
    assert pr.t95(30) == pytest.approx(2.045, abs=5e-4)


def test_predict_outages_as_the_consumer_sees_them() -> None:
    outages = [pr.Outage("v", 10.0, 10.005, "vnfc-crash"), pr.Outage("v", 10.006, 10.01, "x")]
    seen = pr.as_consumer_sees(outages, 0.0025, end=100.0)
    assert len(seen) == 1  # the first, 2.5 ms longer, runs into the second
    assert seen[0].start == 10.0 and seen[0].end == pytest.approx(10.0125)
    assert seen[0].kind == "vnfc-crash"
    clipped = pr.as_consumer_sees([pr.Outage("v", 99.999, 100.0, "x")], 0.0025, end=100.0)
    assert clipped[0].end == 100.0


# --- the benchmarks' rows and their provenance -------------------------------------------------


def bench_row(**over) -> dict:
    row = {
        "outage_ms": {"n": 3, "median": 7.0, "p95": 9.0, "max": 10.0},
        "unanswered": [],
        "lost_acknowledged": 0,
        "two_actives_seen": False,
    }
    return {**row, **over}


def test_a_row_is_judged_on_absolute_ceilings_and_every_check_that_can_fire() -> None:
    row = bench_row()
    bench_run.judge(row, (15.0, 50.0), {})
    assert row["met"] and row["goal"] == "median ≤ 15, max ≤ 50 ms"
    for bad in (
        bench_row(unanswered=[2]),
        bench_row(lost_acknowledged=1),
        bench_row(two_actives_seen=True),
        bench_row(outage_ms={"n": 3, "median": 16.0, "p95": 20.0, "max": 20.0}),
    ):
        bench_run.judge(bad, (15.0, 50.0), {})
        assert not bad["met"], bad
    sequence = bench_row()
    bench_run.judge(sequence, (15.0, 50.0), {"sequence": False})
    assert not sequence["met"]


def test_a_check_that_cannot_fire_is_na_not_a_pass_or_a_failure() -> None:
    row = bench_row(lost_acknowledged=None, two_actives_seen=None)
    bench_run.judge(row, (15.0, 50.0), {})
    assert row["met"] and row["checks"]["lost"] is None
    assert bench_run.na(None) == "N/A" and bench_run.na(0) == "0"


def test_a_row_more_than_25_percent_worse_than_last_committed_is_flagged() -> None:
    row = bench_row()
    provenance.compare(row, {"outage_ms": {"median": 5.0}}, "abc")
    assert row["regressed"] and row["previous"]["ratio"] == 1.4
    assert provenance.vs_last(row) == "**+40 %**"
    steady = bench_row()
    provenance.compare(steady, {"outage_ms": {"median": 6.0}}, "abc")
    assert not steady["regressed"] and provenance.vs_last(steady) == "+17 %"
    new = bench_row()
    provenance.compare(new, None, None)
    assert new["previous"] is None and provenance.vs_last(new) == "-"


def test_tables_refuse_results_of_other_code() -> None:
    here = {"provenance": {"commit": "c" * 40, "dirty": False, "digest": "d1"}}
    found = {"failover": here, "scenarios": {"runs": []}}
    assert tables.stale_reasons(found, current="d1") == {
        "scenarios": "no commit or code digest recorded (results from before provenance): rerun"
    }
    changed = tables.stale_reasons({"failover": here}, current="d2")
    assert "measured at cccccccccccc; the measured code has changed since" in changed["failover"]
    assert tables.stale_reasons({"failover": here}, current="d1") == {}


def test_the_digest_covers_the_measured_code_not_the_results() -> None:
    files = provenance.measured_files()
    assert "src/nfvha/lab/experiment.py" in files and "bench/run.py" in files
    assert not any(f.startswith("bench/results/") for f in files)


# --- the manager benchmark: re-adoption from the trace, its rows and table ---------------------

import manager as bench_manager  # noqa: E402


def kill_figures(readopted_ms: float | None = 40.0, outage_ms: float = 3.0, **over) -> dict:
    row = {
        "takeover_ms": 15.0,
        "readopted_ms": readopted_ms,
        "outage_ms": outage_ms,
        "answered": True,
        "same_vnfcs": True,
        "leader": 2,
    }
    return {**row, **over}


def test_re_adoption_is_read_from_the_new_leaders_notes_after_the_kill() -> None:
    records = [
        {"t": 900 * MS, "kind": "note", "name": "ManagerAdopted", "src": "ha:old", "why": "x"},
        {"t": 1015 * MS, "kind": "note", "name": "Adopting", "data": {"vnfcs": ["a", "b"]}},
        {"t": 1020 * MS, "kind": "note", "name": "ManagerAdopted", "src": "ha:v1", "why": "kept"},
        {"t": 1032 * MS, "kind": "note", "name": "ManagerAdopted", "src": "ha:v2", "why": "kept"},
        {"t": 1500 * MS, "kind": "note", "name": "Adopting"},  # the next kill's
    ]
    seen = bench_manager.takeover(records, FAULT, 1400 * MS, vnfs=2)
    assert (seen["takeover_ms"], seen["readopted_ms"]) == (15.0, 32.0)  # the last VNF decided
    assert [d["vnf"] for d in seen["decisions"]] == ["ha:v1", "ha:v2"]
    assert seen["adopting"] == ["a", "b"] and seen["restarted"] == []
    undecided = bench_manager.takeover(records, FAULT, 1400 * MS, vnfs=3)
    assert undecided["readopted_ms"] is None  # a VNF whose manager never decided: not re-adopted


def test_manager_rows_are_judged_on_their_ceilings_and_every_kill() -> None:
    good = bench_manager.rows([kill_figures() for _ in range(3)], wanted=3, lost=0)
    assert [r["met"] for r in good] == [True, True]
    assert good[0]["goal"] == "median ≤ 200, max ≤ 1000 ms"
    assert good[1]["goal"] == "median ≤ 10, max ≤ 50 ms"
    kills = [kill_figures(), kill_figures(), kill_figures(1200.0)]
    slow = bench_manager.rows(kills, wanted=3, lost=0)  # a median within, one kill above 1 s
    assert not slow[0]["met"] and slow[0]["checks"]["median"] and not slow[0]["checks"]["max"]
    assert slow[1]["met"]  # the data path is judged on its own
    for kills, wanted, lost, row in (
        ([kill_figures(outage_ms=60.0)], 1, 0, 1),  # one silence above the max
        ([kill_figures(answered=False)], 1, 0, 1),
        ([kill_figures()], 1, None, 1),  # acknowledged writes not checked: not a pass
        ([kill_figures(None)], 1, 0, 0),  # never re-adopted
        ([kill_figures(same_vnfcs=False)], 1, 0, 0),  # a VNFC restarted, not adopted
        ([kill_figures()], 2, 0, 0),  # the rounds ended early
    ):
        assert not bench_manager.rows(kills, wanted, lost)[row]["met"], (kills, wanted, lost)


def test_manager_table_shows_the_verdicts_and_what_failed() -> None:
    kills = [kill_figures(250.0), kill_figures(400.0)]
    results = {
        "runs": bench_manager.rows(kills, wanted=2, lost=0),
        "per_kill": kills,
        "kills": 2,
        "kills_done": 2,
        "probe_interval_ms": 1.0,
        "probe": {"op": "GET", "sockets": 4, "sent": 1000, "answered": 1000},
        "lost_acknowledged": 0,
        "stopped_clean": True,
        "quiet_outage_ms": stats.summary([2.0, 3.0]),
        "quiet_window_ms": 600.0,
    }
    text = bench_manager.table(results)  # no comparison yet: vs last shows "-"
    assert "| 2 | 325.0 ms |" in text and "**no** (median) |" in text
    assert text.count("| yes |") == 1  # the data path's row
    assert "(N=2, 600.0 ms each): longest silence median 2.5 ms, max 3.0." in text
    assert "Stopped clean (nothing of the deployment left): yes" in text
