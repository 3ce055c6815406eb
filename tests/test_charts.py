"""The SVG charts: valid XML, lifelines in order, arrows in the right direction, outage shown."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from nfvha.lab.charts import lifeline, outage_timeline, sequence_chart

NS = {"s": "http://www.w3.org/2000/svg"}
MS = 1_000_000
SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    assert svg.startswith("<svg")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    return ET.fromstring(svg)


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(SVG + "g") if g.get("class") == cls]


def texts(el: ET.Element) -> list[str]:
    return [t.text or "" for t in el.iter(SVG + "text")]


def headers(root: ET.Element) -> dict[str, float]:
    """Lifeline name -> x of its header, in drawing (left-to-right) order."""
    out = {}
    for g in groups(root, "lifeline"):
        text = g.find("s:text", NS)
        assert text is not None and text.text not in out
        out[text.text] = float(text.get("x"))
    return out


def rows_with(root: ET.Element, label: str) -> list[ET.Element]:
    """Row groups whose label is ``label``, top to bottom."""
    rows = [g for g in root.iter(SVG + "g") if g.get("class") in ("msg", "fault", "self")]
    return [g for g in rows if label in texts(g)]


def row_with(root: ET.Element, label: str) -> ET.Element:
    (row,) = rows_with(root, label)
    return row


def rec(t_ms: float, kind: str, name: str, src: str = "", dst: str = "", **data) -> dict:
    r = {"t": int(t_ms * MS), "kind": kind, "name": name}
    r.update({k: v for k, v in (("src", src), ("dst", dst)) if v})
    if data:
        r["data"] = data
    return r


TRACE = [
    rec(0.0, "event", "HealthCheckPassed", "c0", "ha:vnf"),
    rec(1.0, "command", "StartVnfc", "ha:vnf", "vnfm"),
    rec(2.0, "command", "StartVm", "vnfm", "vim"),
    rec(3.0, "command", "BootVm", "vim", "vm-1"),
    rec(4.0, "event", "ProcessStarted", "vnfm", "ha:vnf", vnfc="c0"),
    rec(5.0, "command", "AssignRole", "ha:vnf", "c0", vnfc="c0", role="active", epoch=1),
    rec(6.0, "message", "RoleConfirmed", "c0", "ha:vnf", vnfc="c0", role="active", epoch=1),
    rec(7.0, "command", "AssignRole", "ha:vnf", "c1", vnfc="c1", role="standby", epoch=1),
    rec(8.0, "event", "WatchHealth", "ha:vnf", "c1"),
    rec(9.0, "message", "Request", "consumer", "c0"),
    rec(10.0, "note", "Degraded", "ha:vnf", "ha:vnf"),
    rec(11.0, "event", "Migrate", "h1", "host-2"),
    rec(12.0, "fault", "vnfc-crash", "operator", "c0", pid=42),
    rec(13.0, "event", "ProcessExited", "vnfm", "ha:vnf", vnfc="c0"),
    rec(14.0, "command", "AssignRole", "ha:vnf", "c1", vnfc="c1", role="active", epoch=2),
]


@pytest.mark.parametrize(
    ("name", "lane"),
    [
        ("consumer", "consumer"),
        ("ha:vnf", "ha"),
        ("vnfm", "vnfm"),
        ("vnfm:vnf", "vnfm"),
        ("vim", "vim"),
        ("operator", "operator"),
        ("vm-3", "nfvi"),
        ("host-a", "nfvi"),
        ("h1", "nfvi"),
        ("h12", "nfvi"),
        ("hx", "hx"),
        ("h1a", "h1a"),
        ("c0", "c0"),
        ("haproxy", "haproxy"),
        ("lb:web", "lb"),
        ("network", "network"),
    ],
)
def test_lifeline_mapping(name: str, lane: str) -> None:
    assert lifeline(name) == lane


def test_lifelines_appear_once_in_documented_order() -> None:
    root = parse(sequence_chart(TRACE, "failover"))
    xs = headers(root)
    assert list(xs) == ["consumer", "c0", "c1", "ha", "vnfm", "vim", "nfvi", "operator"]
    assert all(a < b for a, b in zip(xs.values(), list(xs.values())[1:], strict=False))


def test_assign_role_arrow_goes_from_ha_to_the_vnfc() -> None:
    root = parse(sequence_chart(TRACE, "failover"))
    xs = headers(root)
    line = row_with(root, "AssignRole standby").find("s:line", NS)
    assert float(line.get("x1")) == xs["ha"]
    assert float(line.get("x2")) == xs["c1"]
    assert line.get("marker-end") == "url(#arrow)"
    back = row_with(root, "RoleConfirmed active").find("s:line", NS)
    assert (float(back.get("x1")), float(back.get("x2"))) == (xs["c0"], xs["ha"])


def test_virtual_ip_and_pool_steps_are_labelled_on_their_lifelines() -> None:
    trace = [
        rec(0.0, "command", "ReleaseAddress", "ha:vnf", "c0", vnfc="c0", address="10.77.0.100"),
        rec(1.0, "event", "AddressReleased", "network", "c0", vip="10.77.0.100", node="c0"),
        rec(2.0, "command", "PoolMember", "lb:web", "web-lb-a", server="c0", state="maint"),
        rec(3.0, "command", "ClaimAddress", "ha:vnf", "c1", vnfc="c1", address="10.77.0.100"),
        rec(4.0, "event", "AddressClaimed", "network", "c1", vip="10.77.0.100", node="c1"),
    ]
    root = parse(sequence_chart(trace, "vip"))
    xs = headers(root)
    assert list(xs) == ["c0", "web-lb-a", "c1", "ha", "lb", "network"]
    claimed = row_with(root, "AddressClaimed 10.77.0.100").find("s:line", NS)
    assert (float(claimed.get("x1")), float(claimed.get("x2"))) == (xs["network"], xs["c1"])
    pool = row_with(root, "PoolMember c0 maint").find("s:line", NS)
    assert (float(pool.get("x1")), float(pool.get("x2"))) == (xs["lb"], xs["web-lb-a"])
    row_with(root, "ReleaseAddress 10.77.0.100")


def test_rows_carry_time_relative_to_first_drawn_record() -> None:
    root = parse(sequence_chart(TRACE, "failover"))
    assert "+0.00 ms" in texts(row_with(root, "StartVnfc"))  # HealthCheckPassed is skipped
    first, last = rows_with(root, "AssignRole active")
    assert "+4.00 ms" in texts(first)
    assert "+13.00 ms" in texts(last)


def test_quiet_records_and_same_lifeline_notes_are_skipped() -> None:
    body = sequence_chart(TRACE, "failover")
    assert "HealthCheckPassed" not in body and "WatchHealth" not in body
    assert "Degraded" not in body
    root = parse(body)
    assert groups(root, "self")[0] is row_with(root, "Migrate")  # h1 -> host-2: both nfvi


def test_fault_is_a_red_arrow_from_operator_to_the_target() -> None:
    root = parse(sequence_chart(TRACE, "failover"))
    xs = headers(root)
    (fault,) = groups(root, "fault")
    line = fault.find("s:line", NS)
    assert line.get("stroke") == "#d62728"
    assert (float(line.get("x1")), float(line.get("x2"))) == (xs["operator"], xs["c0"])
    assert "✕" in texts(fault) and "vnfc-crash" in texts(fault)


def test_text_is_escaped() -> None:
    nasty = [rec(0.0, "message", "Say<&>", "c<&>", "ha:vnf")]
    svg = sequence_chart(nasty, 'a "title" <&>')
    assert "Say&lt;&amp;&gt;" in svg
    root = parse(svg)
    assert "c<&>" in headers(root)
    assert 'a "title" <&>' in texts(root)


def test_outage_band_sits_between_last_and_first_good_answer() -> None:
    consumer = {"last_good_ns": int(11.5 * MS), "first_good_ns": int(14.5 * MS)}
    root = parse(sequence_chart(TRACE, "failover", consumer=consumer))
    (band,) = groups(root, "outage")
    assert texts(band) == ["outage 3.0 ms"]
    rect = band.find("s:rect", NS)
    top, bottom = float(rect.get("y")), float(rect.get("y")) + float(rect.get("height"))
    fault_y = float(groups(root, "fault")[0].find("s:line", NS).get("y1"))
    failover = rows_with(root, "AssignRole active")[-1]
    failover_y = float(failover.find("s:line", NS).get("y1"))
    before_y = float(row_with(root, "Migrate").find("s:circle", NS).get("cy"))
    assert top < fault_y < bottom
    assert failover_y < bottom  # the failover at 14 ms precedes the first good answer
    assert before_y < top


def test_no_band_without_consumer() -> None:
    assert not groups(parse(sequence_chart(TRACE, "failover")), "outage")


def test_long_traces_are_cut_with_a_note() -> None:
    many = [rec(i * 0.01, "message", f"M{i}", "c0", "ha:vnf") for i in range(450)]
    root = parse(sequence_chart(many, "long"))
    assert len(groups(root, "msg")) == 400
    assert "… 50 more records" in texts(root)


def test_empty_trace_is_still_a_document() -> None:
    parse(sequence_chart([], "nothing"))
    parse(outage_timeline([], [], "nothing"))


def answers_with_gap(n: int = 10_000, gap_at: int = 5_000, gap_ms: float = 50.0) -> list:
    """One answer per ms, a1 for the first half and a2 after a ``gap_ms`` silence."""
    out, t = [], 0
    for i in range(n):
        t += int(gap_ms * MS) if i == gap_at else MS
        out.append((t, "a1" if i < gap_at else "a2"))
    return out


def test_timeline_merges_answers_into_runs() -> None:
    root = parse(outage_timeline(answers_with_gap(), [], "probe"))
    (runs,) = groups(root, "runs")
    assert len(runs) == 2  # one rectangle per VNFC run, not 10,000 ticks
    assert sum(1 for _ in root.iter()) < 100
    assert {"a1", "a2"} <= set(texts(groups(root, "legend")[0]))
    assert len({r.get("fill") for r in runs}) == 2


def test_timeline_shades_and_labels_the_gap() -> None:
    answers = answers_with_gap()
    root = parse(outage_timeline(answers, [], "probe"))
    (gap,) = groups(root, "gap")
    assert texts(gap) == ["50.0 ms"]
    rect = gap.find("s:rect", NS)
    (runs,) = groups(root, "runs")
    first, second = runs
    first_end = float(first.get("x")) + float(first.get("width"))
    assert float(rect.get("x")) == pytest.approx(first_end, abs=0.2)
    assert float(rect.get("x")) + float(rect.get("width")) == pytest.approx(
        float(second.get("x")), abs=0.2
    )


def test_short_gaps_are_shaded_without_label() -> None:
    root = parse(outage_timeline(answers_with_gap(200, 100, 10.0), [], "probe"))
    (gap,) = groups(root, "gap")
    assert texts(gap) == []


def test_timeline_draws_fault_lines() -> None:
    answers = answers_with_gap()
    faults = [(answers[4_999][0] + MS, "kill <a1>")]
    root = parse(outage_timeline(answers, faults, "probe"))
    (fault,) = groups(root, "fault")
    line = fault.find("s:line", NS)
    assert line.get("stroke") == "#d62728"
    assert line.get("x1") == line.get("x2")
    gap_x = float(groups(root, "gap")[0].find("s:rect", NS).get("x"))
    assert float(line.get("x1")) == pytest.approx(gap_x, abs=1.0)
    assert texts(fault) == ["kill <a1>"]
