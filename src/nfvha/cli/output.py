"""What every command group shares: the consoles, errors as exit codes, loading a deployment
file, and the timeline as the operator reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from nfvha import config as cfg

# No emoji codes: what is printed is data (a fingerprint's "...:AB:CD:..." would show 🆎 💿).
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_config(path: Path) -> tuple[cfg.Deployment, Path]:
    try:
        return cfg.load(path)
    except cfg.ConfigError as exc:
        raise fail(str(exc), code=2) from None


def print_timeline(rows: list[dict[str, Any]]) -> None:
    """One line per record: time, phase, who to whom, what; the manager's why indented below."""
    for row in rows:
        arrow = f"{row['src']} → {row['dst']}" if row["dst"] else row["src"]
        console.print(
            f"{row['ms']:+10.3f} ms  [bold]{row['phase']:<12}[/bold] {arrow:<26} {row['what']}",
            highlight=False,
            soft_wrap=True,
        )
        if row["why"]:
            console.print(f"{'':>27}[dim]why: {row['why']}[/dim]", highlight=False, soft_wrap=True)
