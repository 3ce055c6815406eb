"""Print the README's benchmark tables from bench/results/*.json, and with --write put them
into README.md between their markers (<!-- bench:NAME --> ... <!-- /bench:NAME -->).

Stale results are refused (exit 1): a results file that records no code digest, or whose
digest is not the measured code's here (``provenance.stale``). ``--allow-stale`` shows them
anyway, each table marked with what it was measured on. ``--only NAME...`` (last) limits it
to those tables: one benchmark's rerun rewrites its own table only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import coordination
import daemons
import etcd_scale
import manager
import provenance
import run
import sync
import vip

import scenarios

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent.parent / "README.md"


def scale_table(results: dict) -> str:
    lines = [
        "| VNFCs | VMs | hosts | faults | events | µs per event | events/s | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["growth"]:
        lines.append(
            f"| {r['vnfcs']:,} | {r['vms']:,} | {r['hosts']:,} | {r['faults']:,} | "
            f"{r['events']:,} | {r['us_per_event']} | {r['events_per_s']:,} | "
            f"{r['peak_rss_mib']} MiB |"
        )
    d = results.get("day")
    if d:
        lines += [
            "",
            f"A simulated day at {d['vnfcs']:,} VNFCs ({d['faults']:,} faults, "
            f"{d['events']:,} events): **{d['wall_s']} s** of wall time (goal: under a minute: "
            f"{'met' if d['met'] else 'MISSED'}), plus {d['boot_wall_s']} s to boot the "
            f"{d['vnfs']:,} VNFs in simulation and {d['config_build_s']} s to validate the "
            f"generated configuration; peak memory {d['peak_rss_mib']} MiB.",
        ]
    return "\n".join(lines)


RENDER = {
    "failover": run.table,
    "scenarios": scenarios.table,
    "scale": scale_table,
    "manager": manager.table,
    "sync": sync.table,
    "daemons": daemons.table,
    "vip": vip.table,
    "etcd_scale": etcd_scale.table,
    "coordination": coordination.table,
}


def load(results_dir: Path = RESULTS) -> dict[str, dict]:
    return {
        name: json.loads((results_dir / f"{name}.json").read_text())
        for name in RENDER
        if (results_dir / f"{name}.json").exists()
    }


def stale_reasons(found: dict[str, dict], current: str | None = None) -> dict[str, str]:
    """Per results file, why it is stale (files that are not are left out)."""
    current = current or provenance.digest()
    reasons = {name: provenance.stale(results, current) for name, results in found.items()}
    return {name: why for name, why in reasons.items() if why}


def tables(found: dict[str, dict], stale: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, results in found.items():
        text = RENDER[name](results)
        if name in stale:
            text += f"\n\n**Stale**: {stale[name]}."
        out[name] = text
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    found = load()
    if "--only" in argv:  # --only NAME...: those tables alone (the options come first)
        wanted = argv[argv.index("--only") + 1 :]
        found = {name: results for name, results in found.items() if name in wanted}
    stale = stale_reasons(found)
    for name, why in stale.items():
        print(f"bench/results/{name}.json is stale: {why}", file=sys.stderr)
    if stale and "--allow-stale" not in argv:
        print("refusing stale results (--allow-stale shows them, marked)", file=sys.stderr)
        return 1
    rendered = tables(found, stale)
    if "--write" not in argv:
        for name, text in rendered.items():
            print(f"## {name}\n{text}\n")
        return 0
    readme = README.read_text()
    for name, text in rendered.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        readme = pattern.sub(lambda m, t=text: m.group(1) + t + "\n" + m.group(2), readme)
    README.write_text(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
