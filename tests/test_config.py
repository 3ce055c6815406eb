"""Configuration errors name the file and the path inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfvha import config

GOOD = """
name: t
vnfs:
  - name: v
    redundancy: {model: 2n}
    service: {name: s, address: "127.0.0.1:7000"}
    vnfcs:
      - {name: a, command: "nfvha-counter"}
      - {name: b, command: ["nfvha-counter"]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    dep, base = config.load(write(tmp_path, GOOD))
    vnf = dep.vnfs[0]
    assert vnf.vnfcs[0].command == ["nfvha-counter"]
    assert vnf.state_mode == "replicated"
    assert vnf.policies.health_check.kind == "sdk"
    assert base == tmp_path.resolve()


@pytest.mark.parametrize(
    ("change", "where", "what"),
    [
        (("model: 2n", "model: 3n"), "vnfs[0].redundancy.model", "Input should be"),
        (("name: s,", "nme: s,"), "vnfs[0].service", "name"),
        (('"127.0.0.1:7000"', '"localhost"'), "vnfs[0].service.address", "HOST:PORT"),
        (("{name: b,", "{name: a,"), "vnfs[0]", "unique"),
        (("redundancy: {model: 2n}", "redundancy: {model: 2n}\n    sdk: false"), "vnfs[0]", "SDK"),
    ],
)
def test_bad_config_names_file_and_path(tmp_path: Path, change, where: str, what: str) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where}")
    assert what in message


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nvnfs: [\n")
    with pytest.raises(config.ConfigError, match=rf"^{path}:\d+:\d+: not valid YAML"):
        config.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.yaml")
