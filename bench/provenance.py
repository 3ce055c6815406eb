"""Where a results file came from, whether it still describes the code, and how a run compares
with the last committed one.

Every results file records ``provenance``: the commit, whether the tree was dirty, and a digest
of the measured code (every file under src/ and bench/ but the results, and pyproject.toml,
committed or not). Results are stale when the digest no longer matches the tree: the code that
produced them is gone, so their figures say nothing about the code that is here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ("src", "bench", "pyproject.toml")
NOT_MEASURED = ("bench/results/",)
REGRESSION = 1.25  # a row whose outage median is more than 25 % above the last committed one


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


def measured_files() -> list[str]:
    listed = _git("ls-files", "-co", "--exclude-standard", "--", *MEASURED).splitlines()
    return sorted({p for p in listed if not p.startswith(NOT_MEASURED) and (ROOT / p).is_file()})


def digest() -> str:
    """sha256 over the measured files' paths and contents."""
    h = hashlib.sha256()
    for path in measured_files():
        h.update(path.encode() + b"\0" + (ROOT / path).read_bytes() + b"\0")
    return h.hexdigest()


def provenance() -> dict[str, Any]:
    dirty = _git("status", "--porcelain", "--", *MEASURED, *(f":!{p}" for p in NOT_MEASURED))
    return {
        "commit": _git("rev-parse", "HEAD").strip(),
        "dirty": bool(dirty.strip()),
        "digest": digest(),
    }


def stale(results: dict[str, Any], current: str | None = None) -> str | None:
    """Why these results do not describe the code here, or None if they do."""
    prov = results.get("provenance")
    if not prov or "digest" not in prov:
        return "no commit or code digest recorded (results from before provenance): rerun"
    if prov["digest"] != (current or digest()):
        where = prov["commit"][:12] + (" (dirty tree)" if prov.get("dirty") else "")
        return f"measured at {where}; the measured code has changed since: rerun"
    return None


def last_committed(name: str) -> tuple[dict[str, Any] | None, str | None]:
    """bench/results/NAME.json as last committed, and the commit that measured it."""
    path = f"bench/results/{name}.json"
    try:
        results = json.loads(_git("show", f"HEAD:{path}"))
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return None, None
    commit = (results.get("provenance") or {}).get("commit")
    return results, commit or _git("log", "-1", "--format=%H", "--", path).strip() or None


def compare(
    row: dict[str, Any],
    previous: dict[str, Any] | None,
    commit: str | None,
    figure: str = "outage_ms",
) -> None:
    """Annotate ``row`` with the last committed median of the same row (of ``figure``, a
    summary) and the ratio to it; ``regressed`` when more than 25 % worse."""
    before = (previous or {}).get(figure, {}).get("median")
    now = row[figure]["median"]
    if before is None or now is None or before <= 0:
        row["previous"] = None
        row["regressed"] = False
        return
    row["previous"] = {"commit": commit, "median_ms": before, "ratio": round(now / before, 3)}
    row["regressed"] = now > REGRESSION * before


def vs_last(row: dict[str, Any]) -> str:
    """The table's cell: change of the median against the last committed results."""
    prev = row.get("previous")
    if not prev:
        return "-"
    text = f"{(prev['ratio'] - 1) * 100:+.0f} %"
    return f"**{text}**" if row.get("regressed") else text
