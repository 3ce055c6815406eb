"""The package's shape: each public class name means one thing across the package."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import nfvha

ROOT = Path(nfvha.__file__).parent


def test_public_class_names_are_unique() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
