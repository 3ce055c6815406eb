"""Simulating: the same managers on a virtual clock (sim run, sim fuzz) and the availability
they predict (predict)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from nfvha import config as cfg
from nfvha.cli.output import console, err, fail, load_config

commands = typer.Typer()  # merged into the top level


sim_app = typer.Typer(
    help="Deterministic simulation of the same managers: fault schedules, invariants, fuzzing.",
    no_args_is_help=True,
)

ConfigArg = Annotated[
    Path, typer.Argument(help="Deployment file (YAML), or a scenario name like uc2.")
]


def load_deployment(config: Path) -> cfg.Deployment:
    """A deployment file, a scenario file, or a scenario's name."""
    from nfvha.lab import scenario as sc

    if config.suffix in (".yaml", ".yml") and config.exists():
        text = config.read_text(errors="replace")
        if "\ndeployment:" not in "\n" + text:
            return load_config(config)[0]
    try:
        return sc.load(str(config)).deployment
    except cfg.ConfigError as exc:
        raise fail(str(exc), code=2) from None


LatenciesOpt = Annotated[
    Path | None,
    typer.Option(help="YAML mapping of latency names to seconds (fork, spawn, exit_seen, ...)."),
]
LatenciesFromOpt = Annotated[
    Path | None,
    typer.Option(help="Take the latencies from a recorded trace (nfvha run --trace, a report)."),
]


def sim_latencies(latencies: Path | None, latencies_from: Path | None) -> Any:
    """The simulator's latencies: measured defaults, a file, or the medians of a real trace."""
    from nfvha.runtime.trace import load
    from nfvha.sim import latency
    from nfvha.sim.world import Latencies

    try:
        if latencies is not None:
            return latency.load(latencies)
        if latencies_from is not None:
            found, counts = latency.from_trace(load(latencies_from))
            seen = ", ".join(f"{k} ({n})" for k, n in counts.items() if n)
            err.print(f"latencies from {latencies_from}: {seen or 'none seen, defaults kept'}")
            return found
    except (cfg.ConfigError, OSError, ValueError) as exc:
        raise fail(str(exc), code=2) from None
    return Latencies()


def _print_outcome(outcome: Any, as_json: bool) -> None:
    v = outcome.violation
    if as_json:
        print(
            json.dumps(
                {
                    "seed": outcome.seed,
                    "faults": [f.to_dict() for f in outcome.faults],
                    "ok": v is None,
                    "violation": None
                    if v is None
                    else {"invariant": v.name, "at_s": v.at, "detail": v.detail},
                    "events": outcome.sim.events,
                    "virtual_s": outcome.sim.now,
                }
            )
        )
        return
    console.print(
        f"seed {outcome.seed}: {len(outcome.faults)} faults, {outcome.sim.events} events, "
        f"{outcome.sim.now:.1f} s simulated",
        highlight=False,
    )
    if v is None:
        console.print("[green]all invariants held[/green]")
        return
    console.print(
        f"[red]invariant {v.name} violated[/red] at t={v.at:.6f} s: {v.detail}", highlight=False
    )
    console.print("schedule that fails (YAML, for --faults):", highlight=False)
    print(yaml.safe_dump([f.to_dict() for f in outcome.faults], sort_keys=False), end="")


@sim_app.command("run")
def sim_run(
    config: ConfigArg,
    faults: Annotated[
        str,
        typer.Option(help="'random', or a YAML file: a list of {at, kind, target[, duration]}."),
    ] = "random",
    seed: Annotated[int, typer.Option(help="Seed of the random schedule.")] = 1,
    duration: Annotated[float, typer.Option(help="Seconds of faults (random schedules).")] = 60.0,
    mean_gap: Annotated[float, typer.Option(help="Mean seconds between random faults.")] = 2.0,
    trace: Annotated[Path | None, typer.Option(help="Write the trace here (JSON lines).")] = None,
    latencies: LatenciesOpt = None,
    latencies_from: LatenciesFromOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Simulate a deployment under a fault schedule; every invariant checked at every step.
    The same (deployment, schedule, seed) gives the same trace, byte for byte."""
    from nfvha.sim import faults as fs
    from nfvha.sim import runner

    deployment = load_deployment(config)
    if faults == "random":
        schedule = runner.random_schedule(deployment, seed, duration, mean_gap)
    else:
        try:
            schedule = fs.load(Path(faults), runner.entities(deployment))
        except cfg.ConfigError as exc:
            raise fail(str(exc), code=2) from None
    lat = sim_latencies(latencies, latencies_from)
    outcome = runner.simulate(deployment, seed, schedule, latencies=lat)
    if outcome.violation is not None:
        outcome = runner.shrink(deployment, outcome, latencies=lat)
    if trace is not None:
        trace.write_text(outcome.sim.trace_text())
    _print_outcome(outcome, as_json)
    if outcome.violation is not None:
        raise typer.Exit(1)


@sim_app.command("fuzz")
def sim_fuzz(
    config: ConfigArg,
    runs: Annotated[int, typer.Option(min=1, help="How many seeds to try.")] = 100,
    first_seed: Annotated[int, typer.Option(help="The first seed.")] = 1,
    duration: Annotated[float, typer.Option(help="Seconds of faults per run.")] = 30.0,
    mean_gap: Annotated[float, typer.Option(help="Mean seconds between faults.")] = 1.0,
    latencies: LatenciesOpt = None,
    latencies_from: LatenciesFromOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Random fault schedules, one per seed; the first failing run is shrunk to the shortest
    schedule that still fails, and printed with its seed."""
    from nfvha.sim import runner

    deployment = load_deployment(config)
    lat = sim_latencies(latencies, latencies_from)
    done, failed = runner.fuzz(
        deployment,
        runs,
        first_seed=first_seed,
        duration=duration,
        mean_gap=mean_gap,
        latencies=lat,
    )
    if failed is None:
        if as_json:
            print(json.dumps({"runs": done, "ok": True}))
        else:
            console.print(f"[green]{done} runs, all invariants held[/green]", highlight=False)
        return
    _print_outcome(runner.shrink(deployment, failed, latencies=lat), as_json)
    raise typer.Exit(1)


@commands.command()
def predict(
    config: Annotated[
        Path, typer.Argument(help="Deployment file (YAML) with a 'reliability' section.")
    ],
    runs: Annotated[
        int | None,
        typer.Option(
            min=2, help="Independent runs (seeds SEED..); default: as many as --precision needs."
        ),
    ] = None,
    precision: Annotated[
        float,
        typer.Option(
            min=0.001, help="Without --runs: run until the 95% CI on unavailability is ±this."
        ),
    ] = 0.05,
    years: Annotated[float, typer.Option(min=0.001, help="Simulated years per run.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the first run.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Predict each service's availability from the MTBF and MTTR of VNFCs, VMs and hosts:
    Monte Carlo over simulated years of the same managers, with 95 % confidence intervals,
    cross-checked against the closed-form Markov result where it applies (2n or none, only
    VNFCs failing). See docs/predict.md."""
    import time

    from nfvha.sim import predict as pr

    deployment = load_deployment(config)
    started = time.monotonic()
    try:
        result = pr.predict(deployment, runs=runs, years=years, seed=seed, precision=precision)
    except pr.PredictError as exc:
        raise fail(f"{config}: {exc}", code=2) from None
    if as_json:
        print(json.dumps(result.to_json()))
        return
    rel = result.reliability
    given = []
    for kind in pr.KINDS:
        r = getattr(rel, kind)
        if r is not None:
            hangs = getattr(r, "hang_fraction", 0.0)
            repair = getattr(result.latencies, pr.LATENCY_OF[kind])
            given.append(
                f"{kind} MTBF {r.mtbf_h:g} h, repair {repair:g} s"
                + (f" ({hangs:.0%} hangs)" if hangs else "")
            )
    console.print(
        f"[bold]{result.deployment}[/bold]: {result.runs} runs x {result.years:g} "
        f"year{'' if result.years == 1 else 's'}, "
        f"seeds {result.seed}..{result.seed + result.runs - 1}: {result.faults} failures, "
        f"{result.events} events, {time.monotonic() - started:.1f} s"
        + (f" (runs until ±{result.precision:.0%} on unavailability)" if result.precision else "")
        + "\n"
        f"failures: {'; '.join(given)}; other kinds do not fail",
        highlight=False,
        soft_wrap=True,
    )
    for s in result.services:
        a, n, d, o = s.availability, s.nines, s.downtime_min, s.outages_per_year
        digits = min(12, max(4, int(pr.nines(a.mean)) + 4)) if a.mean < 1 else 4
        console.print(
            f"\nservice [bold]{s.service}[/bold] (VNF {s.vnf}, model {s.model})\n"
            f"  availability  {a.mean:.{digits}f}   95% CI [{a.low:.{digits}f}, "
            f"{a.high:.{digits}f}]"
            + (
                f" (unavailability ±{s.unavailability_rel_ci:.1%})"
                if s.unavailability_rel_ci is not None
                else ""
            )
            + "\n"
            f"  nines         {n.mean:.2f}   [{n.low:.2f}, {n.high:.2f}]\n"
            f"  downtime      {d.mean:.1f} min/year   [{d.low:.1f}, {d.high:.1f}]\n"
            f"  outages       {o.mean:.1f} /year   [{o.low:.1f}, {o.high:.1f}]",
            highlight=False,
            soft_wrap=True,
        )
        if s.closed is not None:
            c = s.closed.availability
            where = (
                "[green]inside[/green]" if s.closed_inside else "[yellow]OUTSIDE[/yellow]"
            ) + " the 95% CI"
            console.print(
                f"  closed form   {c:.{digits}f}   ({pr.nines(c):.2f} nines, "
                f"{pr.downtime_min_per_year(c):.1f} min/year; Markov, model {s.closed.model}): "
                f"{where}",
                highlight=False,
                soft_wrap=True,
            )
        table = Table("outages by kind", "count", "median ms", "p95 ms", "max ms")
        for kind, k in s.by_kind.items():
            table.add_row(
                kind, str(k.count), f"{k.median_ms:,.1f}", f"{k.p95_ms:,.1f}", f"{k.max_ms:,.1f}"
            )
        if s.by_kind:
            console.print(table)
