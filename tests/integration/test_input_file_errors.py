"""Bad fault schedules (`nfvha sim run --faults`), latency files (`--latencies`) and scenario
files (`nfvha scenario run`) are refused like a bad deployment file: exit code 2 and one line
per problem naming the file, the path inside it and what is wrong; never a traceback.

Every command runs once, concurrently, in a module fixture; the tests read the outcomes."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from nfvha.lab import scenario as sc
from tests.integration.support.runs import NFVHA

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def uc1_with(**changes: object) -> str:
    raw = yaml.safe_load((sc.directory() / "uc1.yaml").read_text())
    raw.update(changes)
    return yaml.safe_dump(raw, sort_keys=False)


def uc1_expect_without_name() -> str:
    raw = yaml.safe_load((sc.directory() / "uc1.yaml").read_text())
    del raw["expect"][1][2]["name"]
    return yaml.safe_dump(raw, sort_keys=False)


def uc1_bad_deployment() -> str:
    raw = yaml.safe_load((sc.directory() / "uc1.yaml").read_text())
    raw["deployment"]["vnfs"][0]["redundancy"]["model"] = "3n"
    return yaml.safe_dump(raw, sort_keys=False)


# case -> (how the file is passed, its content or None for a missing file, stderr patterns
# each following the file's name)
CASES: dict[str, tuple[list[str], str | None, list[str]]] = {
    "faults-missing": (["sim", "run", "uc1", "--faults"], None, [r": cannot read: No such"]),
    "faults-yaml": (["sim", "run", "uc1", "--faults"], "- {at: 1\n", [r":\d+:\d+: not valid"]),
    "faults-not-a-list": (
        ["sim", "run", "uc1", "--faults"],
        "at: 1\n",
        [r": \(top level\): Input should be a valid list"],
    ),
    "faults-entries": (
        ["sim", "run", "uc1", "--faults"],
        "- {at: 1, kind: vnfc-crash, target: vnfc-1}\n"
        "- {at: 2, kind: vnfc-crash, target: nobody}\n"
        "- {at: 3, kind: meteor, target: vnfc-1}\n",
        [r": \[1\]\.target: no vnfc named 'nobody'$", r": \[2\]\.kind: Input should be "],
    ),
    "latencies-unknown": (
        ["sim", "run", "uc1", "--latencies"],
        "spawn: 0.1\nwarp: 1\n",
        [r": warp: Extra inputs are not permitted$", r": known latencies: fork, spawn"],
    ),
    "latencies-negative": (
        ["sim", "run", "uc1", "--latencies"],
        "fork: -1\n",
        [r": fork: Input should be greater than or equal to 0$"],
    ),
    "scenario-step": (
        ["scenario", "run"],
        uc1_expect_without_name(),
        [r": expect\[1\]\[2\]\.name: Field required$"],
    ),
    "scenario-fault": (
        ["scenario", "run"],
        uc1_with(fault={"kind": "meteor"}),
        [r": fault\.kind: Input should be "],
    ),
    "scenario-deployment": (
        ["scenario", "run"],
        uc1_bad_deployment(),
        [r": deployment\.vnfs\[0\]\.redundancy\.model: Input should be '2n'"],
    ),
    "scenario-not-a-mapping": (
        ["scenario", "run"],
        "- uc1\n",
        [r": expected a mapping at the top level, got list$"],
    ),
    "sim-scenario": (
        ["sim", "run"],
        uc1_with(fault={"kind": "meteor"}),
        [r": fault\.kind: Input should be "],
    ),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    work = tmp_path_factory.mktemp("bad-inputs")
    env = {**os.environ, "NFVHA_RUNTIME_DIR": str(work / "rt"), "NO_COLOR": "1"}
    jobs = []
    for case, (args, content, _) in CASES.items():
        path = work / f"{case}.yaml"
        if content is not None:
            path.write_text(content)
        jobs.append((case, path, [NFVHA, *args, str(path)]))

    def one(job):
        case, path, argv = job
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        return case, (path, done)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, jobs))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_refused(outcomes, case: str) -> None:
    path, done = outcomes[case]
    stderr = ANSI.sub("", done.stderr)
    assert done.returncode == 2, f"exit code {done.returncode}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert done.stdout == "", done.stdout
    assert stderr.startswith(f"error: {path}"), stderr
    for pattern in CASES[case][2]:
        assert re.search(re.escape(str(path)) + pattern, stderr, re.MULTILINE), (pattern, stderr)


@pytest.mark.timeout(30)
def test_unknown_scenario_is_refused() -> None:
    done = subprocess.run(
        [NFVHA, "scenario", "run", "uc99"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "no scenario 'uc99' (known: uc1," in ANSI.sub("", done.stderr)
