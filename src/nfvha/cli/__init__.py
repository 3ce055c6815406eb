"""The operator's command line: run a deployment, look at it, break it, measure it, simulate
it. One module per command group: operate (check, run, status, trace, alarms, fault), admin
(clear, restart, stop, start, switchover, maintenance), measure
(probe, demo, scenario), simulate (sim, predict), cluster (the CA and member certificates);
output holds what they share. Thin: every
decision is elsewhere, these only call and format."""

from __future__ import annotations

import sys

import typer

from nfvha.cli import admin, cluster, measure, operate, simulate

app = typer.Typer(
    help="nfvha: availability manager for network functions. "
    "Runs VNFs with redundancy, detects failures, isolates, fails over, repairs, and measures "
    "the outage from the consumer's side.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings' paragraphs reflowed to the terminal's width
)
# Top-level commands first (as in the help), then the groups.
for group in (operate.commands, admin.commands, measure.commands, simulate.commands):
    app.add_typer(group)
app.add_typer(operate.fault_app, name="fault")
app.add_typer(measure.scenario_app, name="scenario")
app.add_typer(simulate.sim_app, name="sim")
app.add_typer(cluster.cluster_app, name="cluster")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
