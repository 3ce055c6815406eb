"""SVG charts of a recorded trace: a message sequence chart and the consumer's outage timeline.

Both return a standalone SVG document built with ElementTree (which XML-escapes every text and
attribute), so a report can ship the figures without a plotting library. No I/O here.
"""

from __future__ import annotations

import bisect
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SVG_NS = "http://www.w3.org/2000/svg"
# Right of the VNFCs, in this order: managers, the pool reconciler and the provider network
# (the virtual IP's moves), then the NFVI.
FIXED_AFTER = ("ha", "lb", "network", "vnfm", "vim", "nfvi", "operator")
QUIET = frozenset({"HealthCheckPassed", "WatchHealth"})
VIP_STEPS = frozenset({"ClaimAddress", "AddressClaimed", "ReleaseAddress", "AddressReleased"})
RED = "#d62728"
PALETTE = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
FONT = "sans-serif"

# Sequence chart layout (px).
MAX_ROWS = 400
ROW_H = 22
LANE_W = 150
MARGIN_L = 80  # the time column ("+3.21 ms") lives left of the first lifeline
HEAD_Y, HEAD_H = 34, 26

# Outage timeline layout (px).
PLOT_L, PLOT_W = 50, 900
BAND_Y, BAND_H = 84, 40
GAP_LABEL_MS = 20.0

_NFVI = re.compile(r"^(vm-|host-|h\d+$)")


def lifeline(name: str) -> str:
    """The lifeline a trace participant is drawn on; unknown names are VNFCs of their own."""
    if name.startswith("ha:"):
        return "ha"
    if name.startswith("vnfm"):
        return "vnfm"
    if name.startswith("lb:"):
        return "lb"
    if _NFVI.match(name):
        return "nfvi"
    return name  # "consumer", "vim", "operator" and VNFCs are their own lifeline


@dataclass(frozen=True, slots=True)
class _Row:
    """One row of the sequence chart: an arrow, a fault, a self-note or an outage mark."""

    t: int
    kind: str  # "msg" | "fault" | "self" | "mark"
    src: str  # lifeline
    dst: str  # lifeline
    label: str
    why: str = ""


def sequence_chart(records: list[dict], title: str, consumer: dict | None = None) -> str:
    """A message sequence chart of the trace, one row per record (order, not time, sets the y
    position so bursts stay readable); ``consumer`` adds the outage band on its lifeline."""
    rows = sorted(filter(None, map(_row, records)), key=lambda r: r.t)
    if consumer:
        for t, text in (
            (consumer["last_good_ns"], "last good answer"),
            (consumer["first_good_ns"], "first good answer"),
        ):
            bisect.insort(rows, _Row(t, "mark", "consumer", "consumer", text), key=lambda r: r.t)
    shown, hidden = rows[:MAX_ROWS], max(0, len(rows) - MAX_ROWS)
    lanes = _lifelines(shown)
    xs = {name: MARGIN_L + LANE_W / 2 + i * LANE_W for i, name in enumerate(lanes)}
    top = HEAD_Y + HEAD_H + 10
    bottom = top + (len(shown) + (hidden > 0)) * ROW_H + 10
    svg = _svg(MARGIN_L + max(1, len(lanes)) * LANE_W + 20, bottom + 10, title)
    _arrow_marker(svg)
    for name, x in xs.items():
        _lane(svg, name, x, bottom)
    if consumer and "consumer" in xs:
        _outage_band(svg, shown, xs["consumer"], top, consumer)
    t0 = next((r.t for r in shown if r.kind != "mark"), shown[0].t if shown else 0)
    for i, row in enumerate(shown):
        _draw_row(svg, row, xs, top + (i + 0.5) * ROW_H, t0)
    if hidden:
        y = top + (len(shown) + 0.5) * ROW_H + 4
        _el(svg, "text", f"… {hidden} more records", x=10, y=y, font_size=11, fill="#555")
    return ET.tostring(svg, encoding="unicode")


def outage_timeline(
    answers: list[tuple[int, str]],
    faults: list[tuple[int, str]],
    title: str,
    *,
    gap_ms: float = 5.0,
) -> str:
    """The consumer's view on a time axis: who answered when, where answers stopped, and the
    injected faults. Answers are merged into per-VNFC runs so huge probes stay small."""
    answers, faults = sorted(answers), sorted(faults)
    t0 = answers[0][0] if answers else (faults[0][0] if faults else 0)
    rel = [(t - t0) / 1e6 for t, _ in answers + faults]
    lo = min([0.0, *rel])
    hi = max([lo + 1.0, *rel])

    def x(t_ns: int) -> float:
        return PLOT_L + ((t_ns - t0) / 1e6 - lo) * PLOT_W / (hi - lo)

    svg = _svg(PLOT_L + PLOT_W + 40, 200, title)
    _el(svg, "rect", x=PLOT_L, y=BAND_Y, width=PLOT_W, height=BAND_H, fill="#f4f4f4")
    if not answers:
        _el(svg, "text", "no answers recorded", x=PLOT_L + 8, y=BAND_Y + 24, font_size=12)
    _gaps(svg, answers, x, gap_ms)
    names = dict.fromkeys(who for _, who in answers)
    colours = {who: PALETTE[i % len(PALETTE)] for i, who in enumerate(names)}
    runs = _el(svg, "g", class_="runs")
    for start, end, who in _runs(answers, gap_ms):
        width = max(1.0, x(end) - x(start))
        _el(runs, "rect", x=x(start), y=BAND_Y, width=width, height=BAND_H, fill=colours[who])
    for i, (t, label) in enumerate(faults):
        g = _el(svg, "g", class_="fault")
        _el(
            g,
            "line",
            x1=x(t),
            x2=x(t),
            y1=44 + (i % 3) * 12,
            y2=BAND_Y + BAND_H + 6,
            stroke=RED,
            stroke_width=1.5,
        )
        _el(g, "text", label, x=x(t) + 3, y=42 + (i % 3) * 12, font_size=10, fill=RED)
    _axis(svg, lo, hi, BAND_Y + BAND_H + 10)
    _legend(svg, colours, 182)
    return ET.tostring(svg, encoding="unicode")


# --- sequence chart pieces -----------------------------------------------------------------------


def _row(rec: dict) -> _Row | None:
    """The row a record is drawn as, or None when it is not drawn."""
    kind, name = rec["kind"], rec["name"]
    if name in QUIET or not rec.get("dst") or not (rec.get("src") or kind == "fault"):
        return None
    src = "operator" if kind == "fault" else lifeline(rec["src"])
    dst = lifeline(rec["dst"])
    why = rec.get("why", "")
    if src == dst:
        return None if kind == "note" else _Row(rec["t"], "self", src, dst, name, why)
    return _Row(rec["t"], "fault" if kind == "fault" else "msg", src, dst, _label(rec), why)


def _label(rec: dict) -> str:
    data: dict[str, Any] = rec.get("data") or {}
    if rec["name"] in ("AssignRole", "RoleConfirmed") and "role" in data:
        return f"{rec['name']} {data['role']}"
    if rec["name"] == "PoolMember" and "server" in data:
        return f"PoolMember {data['server']} {data.get('state', '')}"
    address = data.get("address") or data.get("vip")  # a virtual IP's claim or release
    if rec["name"] in VIP_STEPS and address:
        return f"{rec['name']} {address}"
    return rec["name"]


def _lifelines(rows: list[_Row]) -> list[str]:
    """Lifelines in use: consumer, VNFCs by first appearance, then the fixed managers."""
    used = list(dict.fromkeys(n for r in rows for n in (r.src, r.dst)))
    vnfcs = [n for n in used if n != "consumer" and n not in FIXED_AFTER]
    return ["consumer"] * ("consumer" in used) + vnfcs + [n for n in FIXED_AFTER if n in used]


def _lane(svg: ET.Element, name: str, x: float, bottom: float) -> None:
    g = _el(svg, "g", class_="lifeline")
    _el(
        g,
        "rect",
        x=x - 60,
        y=HEAD_Y,
        width=120,
        height=HEAD_H,
        rx=4,
        fill="#eef2fa",
        stroke="#4a5a7a",
    )
    _el(g, "text", name, x=x, y=HEAD_Y + 17, font_size=12, text_anchor="middle")
    _el(g, "line", x1=x, x2=x, y1=HEAD_Y + HEAD_H, y2=bottom, stroke="#999", stroke_dasharray="4 3")


def _outage_band(svg: ET.Element, rows: list[_Row], x: float, top: float, consumer: dict) -> None:
    """Shade the consumer's lifeline from the last good answer's row to the first good one's."""
    marks = [i for i, r in enumerate(rows) if r.kind == "mark"]
    if not marks:
        return
    y1 = top + (marks[0] + 0.5) * ROW_H
    y2 = top + (marks[1] + 0.5) * ROW_H if len(marks) > 1 else top + len(rows) * ROW_H
    ms = (consumer["first_good_ns"] - consumer["last_good_ns"]) / 1e6
    g = _el(svg, "g", class_="outage")
    _el(g, "rect", x=x - 8, y=y1, width=16, height=y2 - y1, fill=RED, fill_opacity=0.3)
    _el(g, "text", f"outage {ms:.1f} ms", x=x + 12, y=(y1 + y2) / 2 + 4, font_size=10, fill=RED)


def _draw_row(svg: ET.Element, row: _Row, xs: dict[str, float], y: float, t0: int) -> None:
    g = _el(svg, "g", class_=row.kind)
    if row.why:
        _el(g, "title", row.why)
    _el(
        g,
        "text",
        f"+{(row.t - t0) / 1e6:.2f} ms",
        x=MARGIN_L - 6,
        y=y + 4,
        font_size=10,
        fill="#666",
        text_anchor="end",
    )
    x1, x2 = xs[row.src], xs[row.dst]
    if row.kind in ("self", "mark"):
        colour = RED if row.kind == "mark" else "#555"
        _el(g, "circle", cx=x1, cy=y, r=3, fill=colour)
        _el(g, "text", row.label, x=x1 + 8, y=y + 4, font_size=11, fill=colour, font_style="italic")
        return
    colour = RED if row.kind == "fault" else "#333"
    line = _el(g, "line", x1=x1, x2=x2, y1=y, y2=y, stroke=colour, stroke_width=1.2)
    if row.kind == "fault":
        line.set("stroke-width", "2")
        _el(g, "text", "✕", x=x2, y=y + 5, font_size=15, fill=RED, text_anchor="middle")
    else:
        line.set("marker-end", "url(#arrow)")
    _el(
        g,
        "text",
        row.label,
        x=(x1 + x2) / 2,
        y=y - 4,
        font_size=11,
        fill=colour,
        text_anchor="middle",
    )


def _arrow_marker(svg: ET.Element) -> None:
    marker = _el(
        _el(svg, "defs"),
        "marker",
        id="arrow",
        viewBox="0 0 10 10",
        refX=10,
        refY=5,
        markerWidth=7,
        markerHeight=7,
        orient="auto-start-reverse",
    )
    _el(marker, "path", d="M0,0 L10,5 L0,10 z", fill="#333")


# --- outage timeline pieces ----------------------------------------------------------------------


def _runs(answers: list[tuple[int, str]], gap_ms: float) -> list[tuple[int, int, str]]:
    """Merge consecutive answers of one VNFC less than ``gap_ms`` apart into (start, end, who)."""
    runs: list[tuple[int, int, str]] = []
    for t, who in answers:
        if runs and runs[-1][2] == who and t - runs[-1][1] < gap_ms * 1e6:
            runs[-1] = (runs[-1][0], t, who)
        else:
            runs.append((t, t, who))
    return runs


def _gaps(
    svg: ET.Element, answers: list[tuple[int, str]], x: Callable[[int], float], gap_ms: float
) -> None:
    """Shade every silence longer than ``gap_ms``; label the long ones with their length."""
    for (a, _), (b, _) in zip(answers, answers[1:], strict=False):
        ms = (b - a) / 1e6
        if ms <= gap_ms:
            continue
        g = _el(svg, "g", class_="gap")
        _el(g, "rect", x=x(a), y=BAND_Y, width=x(b) - x(a), height=BAND_H, fill="#f7c6c6")
        if ms > GAP_LABEL_MS:
            _el(
                g,
                "text",
                f"{ms:.1f} ms",
                x=(x(a) + x(b)) / 2,
                y=BAND_Y - 4,
                font_size=10,
                fill=RED,
                text_anchor="middle",
            )


def _axis(svg: ET.Element, lo: float, hi: float, y: float) -> None:
    g = _el(svg, "g", class_="axis", font_size=10, fill="#333")
    _el(g, "line", x1=PLOT_L, x2=PLOT_L + PLOT_W, y1=y, y2=y, stroke="#333")
    raw = (hi - lo) / 8
    mag = 10 ** math.floor(math.log10(raw))
    step = next(k * mag for k in (1, 2, 5, 10) if k * mag >= raw)
    v = math.ceil(lo / step) * step
    while v <= hi + 1e-9:
        px = PLOT_L + (v - lo) * PLOT_W / (hi - lo)
        _el(g, "line", x1=px, x2=px, y1=y, y2=y + 4, stroke="#333")
        _el(g, "text", f"{round(v, 6):g}", x=px, y=y + 15, text_anchor="middle")
        v += step
    _el(g, "text", "ms since first answer", x=PLOT_L + PLOT_W, y=y + 28, text_anchor="end")


def _legend(svg: ET.Element, colours: dict[str, str], y: float) -> None:
    g = _el(svg, "g", class_="legend", font_size=11)
    for i, (who, colour) in enumerate(colours.items()):
        _el(g, "rect", x=PLOT_L + i * 140, y=y - 9, width=10, height=10, fill=colour)
        _el(g, "text", who, x=PLOT_L + i * 140 + 14, y=y)


# --- XML helpers ---------------------------------------------------------------------------------


def _svg(width: float, height: float, title: str) -> ET.Element:
    w, h = _fmt(width), _fmt(height)
    svg = ET.Element("svg", xmlns=SVG_NS, width=w, height=h, viewBox=f"0 0 {w} {h}")
    svg.set("font-family", FONT)
    _el(svg, "rect", x=0, y=0, width=width, height=height, fill="white")
    _el(svg, "text", title, x=10, y=20, font_size=14, font_weight="bold")
    return svg


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    """Append a child; ``font_size`` becomes ``font-size``, ``class_`` becomes ``class``."""
    names = {k: k.rstrip("_").replace("_", "-") for k in attrs}
    el = ET.SubElement(parent, tag, {names[k]: _fmt(v) for k, v in attrs.items()})
    el.text = text
    return el


def _fmt(v: Any) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)
