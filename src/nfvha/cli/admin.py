"""The operator's verbs on a running deployment, as Pacemaker users know them: clear, restart,
stop and start a VNFC; switch a VNF over; maintenance on or off; reload the configuration.
Thin: the HA manager decides (core/ha.py), the trace records each request (an
``OperatorRequest`` event, an ``Operator`` or ``Reloaded`` note) and what followed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from nfvha.cli.operate import SocketOpt, call
from nfvha.cli.output import console

commands = typer.Typer()  # merged into the top level

Vnfc = Annotated[str, typer.Argument(help="VNFC name.")]
Vnf = Annotated[str, typer.Argument(help="VNF name.")]


def _vnfc(verb: str, vnfc: str, socket: Path | None) -> None:
    call(socket, {"op": "vnfc", "verb": verb, "vnfc": vnfc})
    console.print(f"{verb}: {vnfc} (see 'nfvha status', 'nfvha trace')", highlight=False)


@commands.command()
def clear(vnfc: Vnfc, socket: SocketOpt = None) -> None:
    """Forget a VNFC's failures; an escalated one is started again (crm resource cleanup)."""
    _vnfc("clear", vnfc, socket)


@commands.command()
def restart(vnfc: Vnfc, socket: SocketOpt = None) -> None:
    """Restart a VNFC on purpose (not counted as a failure); an active hands over first."""
    _vnfc("restart", vnfc, socket)


@commands.command()
def stop(vnfc: Vnfc, socket: SocketOpt = None) -> None:
    """Stop a VNFC and keep it stopped until 'nfvha start'; an active hands over first."""
    _vnfc("stop", vnfc, socket)


@commands.command()
def start(vnfc: Vnfc, socket: SocketOpt = None) -> None:
    """Start a VNFC stopped with 'nfvha stop' (an escalated one needs 'nfvha clear')."""
    _vnfc("start", vnfc, socket)


@commands.command()
def switchover(vnf: Vnf, socket: SocketOpt = None) -> None:
    """Planned, lossless handover of a 2n VNF: the active steps down (stops serving and
    writing), then the standby, holding every acknowledged write, becomes active."""
    call(socket, {"op": "vnf", "verb": "switchover", "vnf": vnf})
    console.print(f"switchover: {vnf} (see 'nfvha status', 'nfvha trace')", highlight=False)


@commands.command()
def maintenance(
    mode: Annotated[Literal["on", "off"], typer.Argument(help="on: monitor only; off: act.")],
    vnf: Vnf,
    socket: SocketOpt = None,
) -> None:
    """Maintenance of a VNF: failures are observed (status shows them) but not acted on;
    'off' handles what failed meanwhile."""
    call(socket, {"op": "vnf", "verb": "maintenance", "vnf": vnf, "on": mode == "on"})
    console.print(f"maintenance {mode}: {vnf}", highlight=False)


@commands.command()
def reload(socket: SocketOpt = None) -> None:
    """Read the deployment file again: policies, repair and hooks change in place, a VNFC
    whose definition changed is restarted alone (an active hands over first); anything else
    (VNFs, VNFCs, redundancy, addresses, state sync, hosts) needs a restart and is refused."""
    answer = call(socket, {"op": "reload"})
    updated = ", ".join(answer["updated"]) or "-"
    restart = ", ".join(answer["restart"]) or "-"
    console.print(f"reloaded: updated in place: {updated}; restarting: {restart}", highlight=False)
