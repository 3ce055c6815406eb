"""Measuring: the consumer's probe, the demo, and the seed's use cases as scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nfvha import config as cfg
from nfvha.cli.output import console, err, fail, load_config, print_timeline
from nfvha.examples import example_path
from nfvha.lab import report

commands = typer.Typer()  # merged into the top level


class Op(StrEnum):
    INC = "INC"
    GET = "GET"


@commands.command()
def probe(
    target: Annotated[
        str,
        typer.Argument(
            help="udp://HOST:PORT (the counter), tcp://HOST:PORT, http://HOST:PORT/PATH or "
            "dns://HOST:PORT/NAME."
        ),
    ],
    interval_ms: Annotated[float, typer.Option(help="Milliseconds between requests.")] = 1.0,
    duration: Annotated[
        float, typer.Option(help="Seconds to run (SIGINT or SIGTERM stops it earlier, reporting).")
    ] = 5.0,
    op: Annotated[Op, typer.Option(help="Request to send (udp, tcp).")] = Op.INC,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    answers_out: Annotated[
        Path | None, typer.Option(help="Write every good answer as CSV: t_ns,seq,total,vnfc.")
    ] = None,
    sockets: Annotated[
        int,
        typer.Option(min=1, help="Source ports to send from in turn (SO_REUSEPORT spreads them)."),
    ] = 4,
    timeout_ms: Annotated[
        float,
        typer.Option(help="tcp, http: a connection's time to answer (long-lived: each request's)."),
    ] = 1000.0,
    long_lived: Annotated[
        bool,
        typer.Option(
            "--long-lived",
            help="tcp: keep connections open instead of one per request; each sends a request "
            "every interval and reads the answers. A reset, end of file or timeout counts in "
            "'resets'; the connection is reopened at once ('reconnects').",
        ),
    ] = False,
    connections: Annotated[
        int, typer.Option(min=1, help="With --long-lived: how many connections to keep open.")
    ] = 1,
    netns: Annotated[
        str | None,
        typer.Option(
            help="Make the probe's sockets in this network namespace (a name in ip netns list)."
        ),
    ] = None,
) -> None:
    """Act as the consumer: measure outage, errors, lost acknowledged increments, and who
    answered. Exit code 1 when nobody answered at all."""
    from nfvha.lab import probe as probe_mod

    if connections != 1 and not long_lived:
        raise fail("--connections applies to --long-lived connections only", code=2)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
    try:
        with open(answers_out, "w") if answers_out else contextlib.nullcontext() as out:
            result = probe_mod.run(
                target,
                interval_ms,
                duration,
                op.value,
                answers_out=out,
                sockets=sockets,
                timeout_ms=timeout_ms,
                connections=connections if long_lived else 0,
                netns=netns,
            )
    except probe_mod.ProbeError as exc:
        raise fail(str(exc), code=2) from None
    if as_json:
        print(json.dumps(result.to_json()))
    else:
        _print_probe(result)
    if result.answered == 0:
        raise fail(
            f"nobody answered at {target}: {result.sent} requests in {result.duration_s:.1f} s, "
            f"no good answer ({_errors(result)})"
        )


def _errors(result: Any) -> str:
    kinds = ", ".join(f"{what} {n}" for what, n in sorted(result.error_kinds.items()))
    return f"errors {result.errors}" + (f": {kinds}" if kinds else "")


def _print_probe(result: Any) -> None:
    order = " → ".join(r.vnfc for r in result.runs) or "nobody"
    outage = f"{result.outage_ms:.1f} ms" if result.answered else "no good answer at all"
    console.print(
        f"sent {result.sent}, good answers {result.answered}, {_errors(result)}\n"
        + (
            f"long-lived connections {result.connections}: resets {result.resets}, "
            f"reconnects {result.reconnects}\n"
            if result.connections
            else ""
        )
        + f"outage (longest gap between good answers): {outage}\n"
        f"lost acknowledged increments: {result.lost}\n"
        f"answered by: {order}\n"
        f"two actives (interleaved answers): {'YES' if result.interleaved else 'no'}",
        highlight=False,
    )


# --- demo --------------------------------------------------------------------------------------


class Model(StrEnum):
    two_n = "2n"
    n_plus_m = "n+m"
    none = "none"


@commands.command()
def demo(
    model: Annotated[Model, typer.Option(help="Which example to run.")] = Model.two_n,
    hang: Annotated[
        bool, typer.Option("--hang", help="Hang the active (SIGSTOP) instead of killing it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Run the counter example, drive traffic, fail the active, and show what happened."""
    from nfvha.lab.experiment import run_faults

    path = example_path(model.value)
    deployment, base_dir = load_config(path)
    fault = "vnfc-hang" if hang else "vnfc-crash"
    if not as_json:
        console.print(
            f"[bold]nfvha demo[/bold]: {deployment.name} ({path.name}), model {model.value}. "
            f"A probe sends 'INC' every 1 ms to udp://{deployment.vnfs[0].service.address}; "
            f"after 0.5 s the active VNFC gets a {fault}.",
            highlight=False,
        )
    exp = asyncio.run(run_faults(deployment, base_dir, faults=1, fault=fault, spacing_s=1.5))
    outcome = exp.faults[0]
    outage = outcome.outage_ms if outcome.answered else float("inf")
    result = report.verdict(outage, exp.probe["lost"], exp.probe["interleaved"])
    if as_json:
        print(json.dumps({**exp.summary(), "verdict": result}))
        return
    rows = report.timeline(
        exp.records,
        outcome.fault_ns,
        (outcome.failover_from_ns, outcome.failover_to_ns),
        longest=(outcome.last_good_ns, outcome.first_good_ns),
    )
    rows = [r for r in rows if r["ms"] >= -0.5 or r["phase"] == "consumer"]
    console.print("\n[bold]What happened[/bold] (ms from the fault; from the trace and the probe):")
    print_timeline(rows)
    p = outcome.phases_ms
    console.print(
        "\n[bold]Recovery phases[/bold] (ms after the fault): "
        + ", ".join(f"{k} {v:.2f}" for k, v in p.items()),
        highlight=False,
    )
    order = " → ".join(f"{r['vnfc']} ({r['count']})" for r in exp.probe["runs"])
    mark = "[green]PASS[/green]" if result["pass"] else "[red]FAIL[/red]"
    console.print(
        f"\n[bold]Consumer's view[/bold]: {exp.probe['sent']} requests, "
        f"{exp.probe['answered']} good answers; "
        f"answered by {order}\n"
        f"  outage (longest silence after the fault): {outage:.2f} ms"
        + ("" if outcome.answered else " (no answer after the fault)")
        + f"   lost acknowledged increments: {exp.probe['lost']}   "
        f"two actives: {'YES' if exp.probe['interleaved'] else 'no'}\n"
        f"  verdict: {mark} sub-second target {'met' if result['sub_second'] else 'MISSED'}; "
        f"end-to-end band {result['sal']}",
        highlight=False,
    )
    if not result["pass"]:
        raise typer.Exit(1)


# --- scenarios ---------------------------------------------------------------------------------

scenario_app = typer.Typer(
    help="The seed's use cases UC1-UC9 and the service-access scenarios (vip-failover, "
    "lb-vnfc-pool, lb-vm-pool, lb-ha): run them with the probe, check the sequence.",
    no_args_is_help=True,
)


@scenario_app.command("list")
def scenario_list() -> None:
    """List the scenarios."""
    from nfvha.lab import scenario as sc

    for name in sc.names():
        s = sc.load(name)
        console.print(f"{name:<12} {s.title}  [dim]({s.seed})[/dim]", highlight=False)


@scenario_app.command("run")
def scenario_run(
    name: Annotated[
        str, typer.Argument(help="A name from 'nfvha scenario list', a scenario file, or 'all'.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write trace.jsonl, sequence.svg, outage.svg, result.json here."
        ),
    ] = None,
) -> None:
    """Run a scenario: its deployment, its fault, the probe; print outage, lost updates, the
    message sequence, whether it matches the expected one, and the verdict."""
    from nfvha.lab import scenario as sc

    wanted = sc.names() if name == "all" else [name]
    try:
        loaded = {n: sc.load(n) for n in wanted}
    except cfg.ConfigError as exc:
        raise fail(str(exc), code=2) from None
    outcomes = []
    for n, scenario in loaded.items():
        if not as_json and len(wanted) > 1:
            err.print(f"running {n} ...", highlight=False)
        outcome = asyncio.run(sc.run(Path(n).stem, scenario, sc.directory()))
        outcomes.append(outcome)
        if report_dir is not None:
            where = report_dir / outcome.name if len(wanted) > 1 else report_dir
            sc.write_report(outcome, where)
        if not as_json and len(wanted) == 1:
            _print_scenario(outcome)
    if as_json:
        results = [o.to_json() for o in outcomes]
        print(json.dumps(results if len(wanted) > 1 else results[0]))
    elif len(wanted) > 1:
        _print_scenario_table(outcomes)
    if not all(o.verdict()["pass"] for o in outcomes):
        raise typer.Exit(1)


def _print_scenario(outcome: Any) -> None:
    exp, v = outcome.experiment, outcome.verdict()
    first = exp.faults[0]
    console.print(
        f"[bold]{outcome.scenario.title}[/bold]  ({outcome.scenario.seed})", highlight=False
    )
    console.print(
        "bindings: " + ", ".join(f"${k}={val}" for k, val in outcome.bindings.items()),
        highlight=False,
    )
    probe = exp.probe
    where = f" from network namespace {probe['netns']}" if probe.get("netns") else ""
    console.print(f"probe: {probe['target']}{where}", highlight=False)
    rows = report.timeline(exp.records, first.fault_ns, (first.last_good_ns, first.first_good_ns))
    print_timeline([r for r in rows if r["ms"] >= 0 or r["phase"] == "consumer"])
    console.print("\n[bold]Expected sequence[/bold]")
    for i, chain in enumerate(outcome.chains, 1):
        mark = "[green]matches[/green]" if chain["ok"] else "[red]DIFFERS[/red]"
        console.print(f" chain {i}: {mark}", highlight=False)
        for step in chain["steps"]:
            at = f"{step['ms']:+9.3f} ms" if step["ms"] is not None else "  missing  "
            console.print(f"   {at}  {step['step']}", highlight=False)
    if outcome.forbidden_seen:
        seen = ", ".join(outcome.forbidden_seen)
        console.print(f" [red]should not happen, but did:[/red] {seen}", highlight=False)
    if outcome.scenario.escalates_on is not None:
        console.print(
            f" escalation expected on failure {outcome.scenario.escalates_on}, "
            f"came on failure {outcome.escalated_on}",
            highlight=False,
        )
    _print_verdict(v)


def _print_verdict(v: dict[str, Any]) -> None:
    sub = "met" if v["sub_second"] else "MISSED"
    if not v["sub_second_applies"]:
        sub = "n/a (no redundancy)"
    mark = "[green]PASS[/green]" if v["pass"] else "[red]FAIL[/red]"
    console.print(
        f"\noutage {v['outage_ms']:.1f} ms; lost acknowledged {v['lost_acknowledged']}; "
        f"two actives {'YES' if v['two_actives_seen'] else 'no'}; sequence "
        f"{'matches' if v['sequence_matches'] else 'DIFFERS'}; sub-second {sub}; band {v['sal']}"
        + (
            f"\nanswered after the failover by {', '.join(v['answered_by']['seen']) or 'nobody'}"
            f" (expected {v['answered_by']['expected']})"
            if "answered_by" in v
            else ""
        )
        + f"\nverdict: {mark}",
        highlight=False,
    )


def _print_scenario_table(outcomes: list[Any]) -> None:
    table = Table(
        "scenario", "fault", "outage ms", "lost", "sequence", "sub-second", "band", "verdict"
    )
    for o in outcomes:
        v = o.verdict()
        sub = ("met" if v["sub_second"] else "missed") if v["sub_second_applies"] else "n/a"
        table.add_row(
            o.name,
            o.scenario.fault.kind,
            f"{v['outage_ms']:.1f}",
            str(v["lost_acknowledged"]),
            "matches" if v["sequence_matches"] else "DIFFERS",
            sub,
            v["sal"],
            "PASS" if v["pass"] else "FAIL",
        )
    console.print(table)
