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
        (("model: 2n}", "model: 2n}\n    state_sync: sideways"), "vnfs[0].state_sync", "'direct'"),
        (
            ("model: 2n}", "model: 2n}\n    state_sync: store\n    state_store: {etcd: 'x:y'}"),
            "vnfs[0].state_store.etcd",
            "HOST:PORT",
        ),
        (
            ("model: 2n}", "model: 2n}\n    state_store: {prefix: relative}"),
            "vnfs[0].state_store.prefix",
            "pattern",
        ),
        (
            ("model: 2n}", "model: 2n}\n    policies: {restart_backoff_ms: -1}"),
            "vnfs[0].policies.restart_backoff_ms",
            "greater than or equal to 0",
        ),
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


def test_state_sync_defaults_and_what_does_not_fit(tmp_path: Path) -> None:
    dep, _ = config.load(write(tmp_path, GOOD))
    assert (dep.vnfs[0].sync, dep.vnfs[0].service_mode) == ("direct", "replicated")
    store = GOOD.replace("model: 2n}", "model: 2n}\n    state_sync: store")
    dep, _ = config.load(write(tmp_path, store))
    assert dep.vnfs[0].service_mode == "external"
    single = GOOD.replace("model: 2n", "model: none").replace(
        '      - {name: b, command: ["nfvha-counter"]}\n', ""
    )
    dep, _ = config.load(write(tmp_path, single))
    assert (dep.vnfs[0].sync, dep.vnfs[0].service_mode) == ("manager", "checkpoint")
    for text, what in [
        (single.replace("model: none}", "model: none}\n    state_sync: direct"), "model 2n"),
        (
            single.replace("model: none}", "model: none}\n    state: none\n    state_sync: store"),
            "keeps no state",
        ),
    ]:
        with pytest.raises(config.ConfigError, match=what):
            config.load(write(tmp_path, text))


HOT_STANDBY = """
name: t
network: {mode: netns, subnet: 10.9.0.0/24}
vnfs:
  - name: v
    redundancy: {model: 2n}
    state: none
    sdk: false
    service: {name: s, address: "127.0.0.1:7000", vip: 10.9.0.100}
    vnfcs: [{name: a, command: x}, {name: b, command: x}]
    policies: {health_check: {kind: udp}}
"""


def test_a_hot_standby_behind_a_virtual_ip(tmp_path: Path) -> None:
    dep, _ = config.load(write(tmp_path, HOT_STANDBY))
    service = dep.vnfs[0].service
    assert service.address_in("netns") == "10.9.0.100:7000"
    assert service.address_in("loopback") == "127.0.0.1:7000"


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        ("vip: 10.9.0.100", "vip: 10.9.0.300", "vnfs[0].service.vip: expected an IPv4 address"),
        ("vip: 10.9.0.100", "vip: 10.77.0.100", "vnfs[0].service.vip: 10.77.0.100 is not a host"),
        ("vip: 10.9.0.100", "vip: 10.9.0.255", "is not a host address of network.subnet"),
        (", vip: 10.9.0.100", "", "vnfs[0]: a 2n hot standby without the SDK needs service.vip"),
        ("state: none", "state: replicated", "vnfs[0]: a stateful VNF needs the SDK"),
        ("mode: netns", "mode: bridge", "network.mode: Input should be"),
        ("subnet: 10.9.0.0/24", "subnet: 10.9.0.0/33", "network.subnet: expected an IPv4 network"),
    ],
)
def test_virtual_ip_errors_name_the_path(tmp_path: Path, old: str, new: str, what: str) -> None:
    assert old in HOT_STANDBY
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, HOT_STANDBY.replace(old, new)))
    assert str(tmp_path / "d.yaml") in str(err.value) and what in str(err.value), err.value


def test_a_virtual_ip_belongs_to_one_service(tmp_path: Path) -> None:
    two = HOT_STANDBY + HOT_STANDBY.split("vnfs:\n", 1)[1].replace("name: v", "name: w").replace(
        "{name: a,", "{name: c,"
    ).replace("{name: b,", "{name: d,").replace("127.0.0.1:7000", "127.0.0.1:7001")
    with pytest.raises(config.ConfigError, match="a virtual IP belongs to one service"):
        config.load(write(tmp_path, two))


def with_coordination(value: str, policies: str = "") -> str:
    text = GOOD.replace("name: t\n", f"name: t\ncoordination: {value}\n", 1)
    return (
        text.replace("    service:", f"    policies: {policies}\n    service:")
        if policies
        else text
    )


def test_coordination_embedded_by_default_and_etcd_in_its_short_form(tmp_path: Path) -> None:
    dep, _ = config.load(write(tmp_path, GOOD))
    assert dep.coordination.backend == "embedded"
    assert dep.vnfs[0].policies.role_lease_ms == 1000
    dep, _ = config.load(write(tmp_path, with_coordination("etcd://10.0.0.1:2379,10.0.0.2:2379")))
    assert dep.coordination.backend == "etcd"
    assert dep.coordination.endpoints == ["10.0.0.1:2379", "10.0.0.2:2379"]
    # A role lease left at its default outlasts a takeover (twice the TTL); one set is kept.
    assert dep.vnfs[0].policies.role_lease_ms == 4000
    long = with_coordination("{backend: etcd, endpoints: 'a:1', ttl_s: 1}", "{role_lease_ms: 2500}")
    dep, _ = config.load(write(tmp_path, long))
    assert dep.vnfs[0].policies.role_lease_ms == 2500


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        ("zk://a:1", "coordination", "expected 'embedded' or 'etcd://HOST:PORT,...'"),
        ("etcd://", "coordination", "etcd coordination needs endpoints"),
        ("etcd://nohost", "coordination.endpoints", "expected HOST:PORT"),
        ("{backend: etcd, endpoints: 'a:1', ttl_s: 0}", "coordination.ttl_s", "greater than"),
        ("{backend: embedded, endpoints: 'a:1'}", "coordination", "endpoints are for backend"),
        ("{backend: etcd, endpoints: 'a:1', prefix: x}", "coordination.prefix", "match pattern"),
        ("{backend: etcd, endpoints: 'a:1', lease: 3}", "coordination.lease", "Extra inputs"),
    ],
)
def test_coordination_errors_name_the_path(
    tmp_path: Path, value: str, where: str, what: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, with_coordination(value)))
    assert f"d.yaml: {where}: " in str(err.value)
    assert what in str(err.value)


def test_a_role_lease_shorter_than_an_etcd_takeover_is_refused(tmp_path: Path) -> None:
    short = with_coordination("etcd://a:1", "{role_lease_ms: 2000}")
    with pytest.raises(config.ConfigError, match=r"vnfs\[0\]\.policies\.role_lease_ms: 2000 ms"):
        config.load(write(tmp_path, short))


HOSTS = GOOD.replace("name: t\n", "name: t\nhosts: [{name: h1}, {name: h2}]\n", 1)


def with_nfvi(text: str, nfvi: str) -> str:
    return text.replace("name: t\n", f"name: t\nnfvi: {nfvi}\n", 1)


def test_nfvi_on_the_network_with_a_watchdog(tmp_path: Path) -> None:
    text = with_nfvi(HOSTS, "{transport: tls, cluster_dir: c, fencing: watchdog}")
    dep, _ = config.load(write(tmp_path, text))
    assert (dep.nfvi.transport, dep.nfvi.fencing, dep.nfvi.agent_lease_ms) == (
        "tls",
        "watchdog",
        2000,
    )
    etcd = text.replace("name: t\n", "name: t\ncoordination: etcd://a:1\n", 1)
    dep, _ = config.load(write(tmp_path, etcd))
    assert dep.nfvi.agent_lease_ms == 4000  # raised to outlast a takeover, as role leases are


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (with_nfvi(HOSTS, "{transport: tls}"), "nfvi: transport tls needs cluster_dir"),
        (
            with_nfvi(HOSTS, "{fencing: watchdog, agent_lease_ms: 150}"),
            "nfvi: agent_lease_ms 150 must exceed the heartbeat detection time (3 x 50 = 150 ms)",
        ),
        (with_nfvi(GOOD, "{fencing: watchdog}"), "fencing watchdog are for VMs: declare 'hosts'"),
        (with_nfvi(HOSTS, "{fencing: bmc}"), "nfvi.fencing: Input should be 'kernel' or"),
        (with_nfvi(HOSTS, "{transport: tls, cluster_dir: c, port: 0}"), "nfvi.port: Input should"),
        (
            with_nfvi(HOSTS, "{fencing: watchdog, agent_lease_ms: 2500}").replace(
                "name: t\n", "name: t\ncoordination: etcd://a:1\n", 1
            ),
            "nfvi.agent_lease_ms: 2500 ms is shorter than a manager takeover on etcd",
        ),
    ],
)
def test_nfvi_errors_name_the_path(tmp_path: Path, text: str, what: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, text))
    assert what in str(err.value)


def test_a_plain_process_under_etcd_without_watchdog_fencing_is_warned_about(
    tmp_path: Path,
) -> None:
    plain = """
name: t
vnfs:
  - name: v
    redundancy: {model: none}
    sdk: false
    state: none
    service: {name: s, address: "127.0.0.1:7000"}
    policies: {health_check: {kind: udp}}
    vnfcs:
      - {name: a, command: "sleep 100"}
"""
    dep, _ = config.load(write(tmp_path, plain))
    assert not any("role lease" in w for w in config.warnings(dep))
    etcd = plain.replace("name: t\n", "name: t\ncoordination: etcd://a:1\n", 1)
    dep, _ = config.load(write(tmp_path, etcd))
    (warning,) = [w for w in config.warnings(dep) if "role lease" in w]
    assert warning.startswith("vnfs[0].sdk: a plain process holds no role lease")
