"""A bad deployment file is refused by `nfvha check` and `nfvha run` with exit code 2 and one
clear line per problem: the file, the path inside it, what is wrong; never a traceback.

Every command of this module runs once, concurrently, in a module fixture (each is a fresh
interpreter); the tests read the outcomes."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.integration.support.runs import NFVHA

GOOD = {
    "name": "cfg-test",
    "vnfs": [
        {
            "name": "v",
            "redundancy": {"model": "2n"},
            "service": {"name": "s", "address": "127.0.0.1:7999"},
            "vnfcs": [
                {"name": "a", "command": "nfvha-counter"},
                {"name": "b", "command": "nfvha-counter"},
            ],
        }
    ],
}


def good(**vnf_changes) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    raw["vnfs"][0].update(vnf_changes)
    return raw


def dumped(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False)


def with_policies(**policies) -> str:
    return dumped(good(policies=policies))


# case -> (file content, or None for a missing file; regexes stderr must match)
CASES: dict[str, tuple[str | bytes | None, list[str]]] = {
    "missing-file": (None, [r": cannot read: No such file or directory"]),
    "yaml-syntax": ("name: x\nvnfs: [\n  {name: v,\n", [r":\d+:\d+: not valid YAML"]),
    "not-a-mapping": ("- one\n- two\n", [r": expected a mapping at the top level, got list"]),
    "unknown-key": (
        with_policies(restart_maximum=3),
        [r": vnfs\[0\]\.policies\.restart_maximum: Extra inputs are not permitted"],
    ),
    "wrong-model": (
        dumped(good(redundancy={"model": "3n"})),
        [r": vnfs\[0\]\.redundancy\.model: Input should be '2n', 'n\+m' or 'none'"],
    ),
    "2n-three-vnfcs": (
        dumped(good(vnfcs=[{"name": n, "command": "x"} for n in ("a", "b", "c")])),
        [r": vnfs\[0\]: .*model 2n needs exactly 2 VNFCs, got 3"],
    ),
    "duplicate-vnfc": (
        dumped(good(vnfcs=[{"name": "a", "command": "x"}, {"name": "a", "command": "y"}])),
        [r": vnfs\[0\]: .*VNFC names must be unique, repeated: a"],
    ),
    "bad-address": (
        dumped(good(service={"name": "s", "address": "localhost"})),
        [r": vnfs\[0\]\.service\.address: .*expected HOST:PORT"],
    ),
    "sdk-false-2n": (
        dumped(good(sdk=False, policies={"health_check": {"kind": "udp"}})),
        [r": vnfs\[0\]: .*needs the SDK"],
    ),
    "exec-without-command": (
        with_policies(health_check={"kind": "exec"}),
        [r": vnfs\[0\]\.policies\.health_check: .*exec health check needs 'command'"],
    ),
}
# Cases only `check` needs: a file that is not UTF-8, and a message with brackets in it
# (Rich markup must not eat them).
EXTRA_CHECK_ONLY: dict[str, tuple[str | bytes | None, list[str]]] = {
    "not-utf8": (b"name: caf\xe9\n", [r": not UTF-8 text"]),
    "bad-name-pattern": (
        dumped(good(name="Bad_Name")),
        [r": vnfs\[0\]\.name: String should match pattern '\^\[a-z0-9\]\[a-z0-9\._-\]\{0,62\}\$'"],
    ),
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[tuple[str, str], tuple[Path, subprocess.CompletedProcess]]:
    work = tmp_path_factory.mktemp("bad-configs")
    runtime = work / "rt"
    env = {**os.environ, "NFVHA_RUNTIME_DIR": str(runtime), "NO_COLOR": "1"}
    jobs = []
    for case, (content, _) in {**CASES, **EXTRA_CHECK_ONLY}.items():
        path = work / f"{case}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        commands = ["check", "run"] if case in CASES else ["check"]
        for command in commands:
            argv = [NFVHA, command, str(path)]
            if command == "run":
                argv += ["--state-dir", str(work / "state")]
            jobs.append(((case, command), path, argv))

    def one(job):
        key, path, argv = job
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        return key, (path, done)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(one, jobs))
    # `run` refused before it touched anything.
    assert not runtime.exists() or not any(runtime.iterdir())
    assert not (work / "state").exists()
    return results


def check_refusal(path: Path, done: subprocess.CompletedProcess, patterns: list[str]) -> None:
    stderr = ANSI.sub("", done.stderr)
    assert done.returncode == 2, f"exit code {done.returncode}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert done.stdout == "", done.stdout
    assert stderr.startswith(f"error: {path}"), stderr
    for pattern in patterns:
        assert re.search(re.escape(str(path)) + pattern, stderr), (pattern, stderr)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_refused(outcomes, case: str, command: str) -> None:
    path, done = outcomes[(case, command)]
    check_refusal(path, done, CASES[case][1])


@pytest.mark.timeout(90)
def test_config_not_utf8_is_refused(outcomes) -> None:
    path, done = outcomes[("not-utf8", "check")]
    check_refusal(path, done, EXTRA_CHECK_ONLY["not-utf8"][1])


@pytest.mark.timeout(90)
def test_error_message_is_printed_verbatim(outcomes) -> None:
    path, done = outcomes[("bad-name-pattern", "check")]
    check_refusal(path, done, EXTRA_CHECK_ONLY["bad-name-pattern"][1])


@pytest.mark.timeout(90)
def test_good_config_is_accepted(tmp_path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(dumped(GOOD))
    done = subprocess.run([NFVHA, "check", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{path}: valid" in done.stdout
