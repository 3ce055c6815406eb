"""Print the README's benchmark tables from bench/results/*.json, and with --write put them
into README.md between their markers (<!-- bench:NAME --> ... <!-- /bench:NAME -->)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import run

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


def tables() -> dict[str, str]:
    out = {}
    for name, render in (
        ("failover", run.table),
        ("scenarios", scenarios.table),
        ("scale", scale_table),
    ):
        path = RESULTS / f"{name}.json"
        if path.exists():
            out[name] = render(json.loads(path.read_text()))
    return out


def main() -> None:
    found = tables()
    if "--write" not in sys.argv:
        for name, text in found.items():
            print(f"## {name}\n{text}\n")
        return
    readme = README.read_text()
    for name, text in found.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        readme = pattern.sub(lambda m, t=text: m.group(1) + t + "\n" + m.group(2), readme)
    README.write_text(readme)


if __name__ == "__main__":
    main()
