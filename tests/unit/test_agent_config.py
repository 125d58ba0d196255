"""The agent config: defaults, YAML, environment overrides, strict validation, and `sluice check-config`."""

from __future__ import annotations

import dataclasses
import enum
import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from ovsagent.config import (
    ENV_PREFIX,
    AgentConfig,
    ConfigError,
    DatapathType,
    InterfaceType,
    LogLevel,
    OpenFlowVersion,
    config_to_dict,
    load_agent_config,
    load_config,
    markdown_table,
    meta,
)

ROOT = Path(__file__).resolve().parents[2]
SLUICE = ROOT / ".venv" / "bin" / "sluice"


def load(text: str = "", **env: str) -> AgentConfig:
    return load_config(AgentConfig, text, env, ENV_PREFIX)


# ------------------------------------------------------------------------------------------ defaults


def test_defaults() -> None:
    cfg = load(NODE_NAME="node-a")
    assert cfg.node_name == "node-a"
    assert cfg.kubeconfig is None
    assert cfg.cni_socket == Path("/var/run/sluice/cni.sock")
    assert cfg.state_dir == Path("/var/lib/sluice")
    assert cfg.ipam_dir == Path("/var/lib/sluice/ipam")
    assert cfg.bridge == "br-int"
    assert cfg.datapath_type is DatapathType.SYSTEM
    assert cfg.interface_type is InterfaceType.INTERNAL
    assert cfg.ovs_rundir == Path("/var/run/openvswitch")
    assert cfg.ovsdb == "unix:/var/run/openvswitch/db.sock"
    assert cfg.controllers == ()
    assert cfg.inactivity_probe_ms == 5000
    assert cfg.controller_max_backoff_ms == 1000
    assert cfg.of_protocols == (OpenFlowVersion.OF13, OpenFlowVersion.OF15)
    assert cfg.pod_cidr_override is None
    assert cfg.tunnel_ip is None
    assert cfg.underlay_interface is None
    assert cfg.mtu is None
    assert cfg.tunnel_ofport == 10
    assert cfg.gateway_port == "sluice-gw0"
    assert cfg.flow_wait_seconds == 10.0
    assert cfg.metrics_address == "0.0.0.0:9101"
    assert cfg.log_level is LogLevel.INFO
    assert cfg.log_level.level == 20


def test_loaded_defaults_equal_the_dataclass_defaults() -> None:
    # Code building AgentConfig() directly gets what an empty file gives.
    assert load(NODE_NAME=socket.gethostname().lower()) == AgentConfig()


def test_node_name_falls_back_to_the_lower_cased_hostname() -> None:
    assert load().node_name == socket.gethostname().lower()


def test_config_is_frozen() -> None:
    cfg = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mtu = 1400  # type: ignore[misc]


# ------------------------------------------------------------------------------- YAML and derived


def test_yaml_load() -> None:
    cfg = load(
        """
        node_name: worker-1
        kubeconfig: /etc/sluice/kubeconfig
        state_dir: /srv/sluice
        datapath_type: netdev
        ovs_rundir: /run/ovs-a
        controllers: [tcp:198.18.0.1:6653, "ssl:198.18.0.2", "tcp:[fd00::1]:6653", unix:/run/c.sock]
        inactivity_probe_ms: 0
        controller_max_backoff_ms: 4000
        of_protocols: [OpenFlow13, OpenFlow14]
        pod_cidr_override: 100.64.7.0/24
        tunnel_ip: 198.18.0.7
        underlay_interface: eth1
        mtu: 1442
        tunnel_ofport: 4
        gateway_port: gw0
        flow_wait_seconds: 2
        metrics_address: ""
        log_level: DEBUG
        """.replace("\n        ", "\n")
    )
    assert cfg.node_name == "worker-1"
    assert cfg.kubeconfig == Path("/etc/sluice/kubeconfig")
    assert cfg.ipam_dir == Path("/srv/sluice/ipam")  # derived from state_dir
    assert cfg.datapath_type is DatapathType.NETDEV
    assert cfg.interface_type is InterfaceType.VETH  # derived from datapath_type
    assert cfg.ovsdb == "unix:/run/ovs-a/db.sock"  # derived from ovs_rundir
    assert cfg.controllers == (
        "tcp:198.18.0.1:6653",
        "ssl:198.18.0.2",
        "tcp:[fd00::1]:6653",
        "unix:/run/c.sock",
    )
    assert cfg.inactivity_probe_ms == 0
    assert cfg.controller_max_backoff_ms == 4000
    assert cfg.of_protocols == (OpenFlowVersion.OF13, OpenFlowVersion.OF14)
    assert cfg.pod_cidr_override == "100.64.7.0/24"
    assert cfg.tunnel_ip == "198.18.0.7"
    assert cfg.underlay_interface == "eth1"
    assert cfg.mtu == 1442
    assert cfg.tunnel_ofport == 4
    assert cfg.gateway_port == "gw0"
    assert cfg.flow_wait_seconds == 2.0 and isinstance(cfg.flow_wait_seconds, float)
    assert cfg.metrics_address == ""
    assert cfg.log_level is LogLevel.DEBUG


def test_explicit_values_beat_derived_ones() -> None:
    cfg = load(
        "datapath_type: netdev\ninterface_type: internal\nipam_dir: /x/ipam\novsdb: tcp:198.18.0.1:6640\n"
    )
    assert cfg.interface_type is InterfaceType.INTERNAL
    assert cfg.ipam_dir == Path("/x/ipam")
    assert cfg.ovsdb == "tcp:198.18.0.1:6640"


@pytest.mark.parametrize(
    ("datapath", "expected"), [("system", InterfaceType.INTERNAL), ("netdev", InterfaceType.VETH)]
)
def test_interface_type_derives_from_datapath(datapath: str, expected: InterfaceType) -> None:
    assert load(f"datapath_type: {datapath}").interface_type is expected
    assert load(SLUICE_AGENT_DATAPATH_TYPE=datapath).interface_type is expected


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}"])
def test_empty_documents_mean_defaults(text: str) -> None:
    assert load(text, NODE_NAME="n") == load(NODE_NAME="n")


def test_load_agent_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("bridge: br-test\n")
    assert load_agent_config(path, {"SLUICE_AGENT_MTU": "1400"}).bridge == "br-test"
    assert load_agent_config(path, {"SLUICE_AGENT_MTU": "1400"}).mtu == 1400
    with pytest.raises(ConfigError, match=r"cannot read .*missing.yaml"):
        load_agent_config(tmp_path / "missing.yaml", {})


# ---------------------------------------------------------------------------------- environment


def test_env_overrides_yaml() -> None:
    cfg = load(
        "mtu: 1400\nbridge: br-a\ncontrollers: [tcp:198.18.0.1:6653]\n",
        SLUICE_AGENT_MTU="1300",
        SLUICE_AGENT_CONTROLLERS="tcp:198.18.0.2:6653, tcp:198.18.0.3",
        SLUICE_AGENT_OF_PROTOCOLS="OpenFlow15",
        SLUICE_AGENT_FLOW_WAIT_SECONDS="0.5",
        SLUICE_AGENT_DATAPATH_TYPE="netdev",
        SLUICE_AGENT_KUBECONFIG="/k/config",
        OTHER_VARIABLE="ignored",
    )
    assert cfg.mtu == 1300
    assert cfg.bridge == "br-a"  # not overridden
    assert cfg.controllers == ("tcp:198.18.0.2:6653", "tcp:198.18.0.3")
    assert cfg.of_protocols == (OpenFlowVersion.OF15,)
    assert cfg.flow_wait_seconds == 0.5
    assert cfg.interface_type is InterfaceType.VETH
    assert cfg.kubeconfig == Path("/k/config")


def test_env_empty_value_nulls_an_optional_field() -> None:
    cfg = load("mtu: 1400\ntunnel_ip: 198.18.0.1\n", SLUICE_AGENT_MTU="", SLUICE_AGENT_TUNNEL_IP="")
    assert cfg.mtu is None and cfg.tunnel_ip is None
    assert load("controllers: [tcp:198.18.0.1]", SLUICE_AGENT_CONTROLLERS="").controllers == ()


def test_env_node_name_beats_node_name_variable() -> None:
    assert load(NODE_NAME="from-downward-api").node_name == "from-downward-api"
    assert load("node_name: from-file", NODE_NAME="x").node_name == "from-file"
    assert load(NODE_NAME="x", SLUICE_AGENT_NODE_NAME="from-env").node_name == "from-env"


def test_unknown_env_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="SLUICE_AGENT_MTUU") as info:
        load(SLUICE_AGENT_MTUU="1400")
    assert "SLUICE_AGENT_MTU," in str(info.value)  # lists the known ones
    with pytest.raises(ConfigError, match="SLUICE_AGENT_mtu"):
        load(SLUICE_AGENT_mtu="1400")  # the variable names are upper-case


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("SLUICE_AGENT_MTU", "big", "expected an integer, got 'big'"),
        ("SLUICE_AGENT_FLOW_WAIT_SECONDS", "soon", "expected a number"),
        ("SLUICE_AGENT_FLOW_WAIT_SECONDS", "nan", "expected a number"),
        ("SLUICE_AGENT_DATAPATH_TYPE", "dpdk", "one of \\{system, netdev\\}"),
        ("SLUICE_AGENT_OF_PROTOCOLS", "OpenFlow13,OpenFlow99", "OpenFlow99"),
        ("SLUICE_AGENT_MTU", "100", "out of range"),
    ],
)
def test_wrong_env_value_names_key_and_variable(var: str, value: str, message: str) -> None:
    key = var.removeprefix(ENV_PREFIX).lower()
    with pytest.raises(ConfigError, match=message) as info:
        load(**{var: value})
    assert info.value.key == key
    assert f"key {key!r}" in str(info.value) and var in str(info.value)


# ----------------------------------------------------------------------------------- validation


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"key 'bridg'.*unknown key") as info:
        load("bridg: br-int\n")
    assert info.value.key == "bridg"
    assert "bridge" in str(info.value)  # the known keys are listed


def test_duplicate_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"key 'mtu'.*twice.*line 3"):
        load("mtu: 1400\nbridge: b\nmtu: 1300\n")


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("mtu: '1400'", "mtu", "expected an integer, got '1400'"),
        ("mtu: 1400.5", "mtu", "expected an integer"),
        ("mtu: true", "mtu", "expected an integer, got true"),
        ("tunnel_ofport: null", "tunnel_ofport", "expected an integer, got null"),
        ("bridge: 5", "bridge", "expected a string, got 5"),
        ("bridge: [a]", "bridge", "expected a string, got a list"),
        ("node_name: yes", "node_name", "expected a string, got true"),
        ("controllers: tcp:198.18.0.1:6653", "controllers", "expected a list of string"),
        ("controllers: [5]", "controllers", "in the list: expected a string"),
        ("flow_wait_seconds: fast", "flow_wait_seconds", "expected a number"),
        ("state_dir: ''", "state_dir", "expected a path"),
        ("state_dir: {a: 1}", "state_dir", "expected a path, got a mapping"),
        ("log_level: loud", "log_level", "one of \\{debug, info, warning, error\\}"),
        ("interface_type: tap", "interface_type", "one of \\{internal, veth\\}"),
    ],
)
def test_wrong_type_is_named(text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(text)
    assert info.value.key == key
    assert str(info.value).startswith(f"key {key!r}")


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("pod_cidr_override: 100.64.1.0/33", "pod_cidr_override", "not a valid CIDR"),
        ("pod_cidr_override: 100.64.1.5/24", "pod_cidr_override", "host bits"),
        ("pod_cidr_override: 100.64.1.0/31", "pod_cidr_override", "too small"),
        ("pod_cidr_override: 'fd00::/64'", "pod_cidr_override", "only IPv4"),
        ("pod_cidr_override: pods", "pod_cidr_override", "not a valid CIDR"),
        ("tunnel_ip: 198.18.0.300", "tunnel_ip", "not an IP address"),
        ("tunnel_ip: 127.0.0.1", "tunnel_ip", "cannot be a tunnel endpoint"),
        ("tunnel_ip: 0.0.0.0", "tunnel_ip", "cannot be a tunnel endpoint"),
        ("controllers: [198.18.0.1:6653]", "controllers", "expected tcp:HOST:PORT"),
        ("controllers: ['tcp:198.18.0.1:99999']", "controllers", "port '99999'"),
        ("controllers: ['tcp:bad host']", "controllers", "not an IP address or host name"),
        ("controllers: [tcp:198.18.0.1, tcp:198.18.0.1]", "controllers", "listed twice"),
        ("ovsdb: db.sock", "ovsdb", "expected tcp:HOST:PORT"),
        ("ovsdb: tcp:198.18.0.1", "ovsdb", "a port is required"),
        ("ovsdb: unix:db.sock", "ovsdb", "absolute socket path"),
        ("inactivity_probe_ms: 1000", "inactivity_probe_ms", "from 5000"),
        ("inactivity_probe_ms: 5500", "inactivity_probe_ms", "whole number of seconds"),
        ("inactivity_probe_ms: -1", "inactivity_probe_ms", "0 \\(no probes\\)"),
        ("controller_max_backoff_ms: 500", "controller_max_backoff_ms", "from 1000"),
        ("controller_max_backoff_ms: 1500", "controller_max_backoff_ms", "whole number of seconds"),
        ("controller_max_backoff_ms: 0", "controller_max_backoff_ms", "from 1000"),
        ("of_protocols: [OpenFlow10]", "of_protocols", "OpenFlow13 or later"),
        ("of_protocols: [OpenFlow13, OpenFlow13]", "of_protocols", "listed twice"),
        ("mtu: 575", "mtu", "576 to 9216"),
        ("mtu: 9217", "mtu", "576 to 9216"),
        ("tunnel_ofport: 0", "tunnel_ofport", "1 to 65279"),
        ("tunnel_ofport: 65280", "tunnel_ofport", "1 to 65279"),
        ("gateway_port: sluice-gateway-0", "gateway_port", "1 to 15 characters"),
        ("bridge: 'br/int'", "bridge", "no '/'"),
        ("underlay_interface: 'eth 0'", "underlay_interface", "whitespace"),
        ("flow_wait_seconds: 0", "flow_wait_seconds", "more than 0"),
        ("flow_wait_seconds: 301", "flow_wait_seconds", "at most 300"),
        ("metrics_address: localhost:9101", "metrics_address", "not IP:PORT"),
        ("metrics_address: '0.0.0.0:0'", "metrics_address", "port '0'"),
        ("node_name: Worker_1", "node_name", "not a valid Kubernetes node name"),
        ("state_dir: var/lib/sluice", "state_dir", "absolute path"),
        ("kubeconfig: kubeconfig", "kubeconfig", "absolute path"),
        ("cni_socket: cni.sock", "cni_socket", "absolute path"),
    ],
)
def test_invalid_value_is_named(text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(text)
    assert info.value.key == key
    assert str(info.value).startswith(f"key {key!r}")


@pytest.mark.parametrize(
    "text",
    [
        "metrics_address: '[::1]:9101'",
        "metrics_address: 127.0.0.1:9101",
        "inactivity_probe_ms: 30000",
        "controllers: ['tcp:controller.sluice.svc:6653']",
        "ovsdb: ssl:198.18.0.1:6640",
        "mtu: 576",
        "mtu: 9216",
        "tunnel_ofport: 65279",
        "pod_cidr_override: 100.64.0.0/30",
        "log_level: Warning",
    ],
)
def test_valid_edge_values_are_accepted(text: str) -> None:
    load(text)


def test_derived_value_that_is_invalid_says_so() -> None:
    with pytest.raises(ConfigError, match="key 'node_name' \\(from its default\\)"):
        load(NODE_NAME="Not_Valid")


def test_not_a_mapping_or_not_yaml() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load("- a\n- b\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load("mtu: 1400\n  bridge: [\n")


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="key 'mtu'"):
        AgentConfig(mtu=10)
    with pytest.raises(ConfigError, match="key 'tunnel_ip'"):
        dataclasses.replace(AgentConfig(), tunnel_ip="nope")


def test_effective_config_round_trips_through_yaml() -> None:
    cfg = load("datapath_type: netdev\ncontrollers: [tcp:198.18.0.1:6653]\nmtu: 1400\n", NODE_NAME="n1")
    dumped = yaml.safe_dump(config_to_dict(cfg))
    assert load(dumped) == cfg


# ------------------------------------------------------------------------------- generic loader


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """A config shape exercising every type the generic loader supports."""

    name: str = dataclasses.field(metadata=meta("required"))
    enabled: bool = dataclasses.field(default=False, metadata=meta("a flag"))
    ratio: float = dataclasses.field(default=1.0, metadata=meta("a number"))
    ports: list[int] = dataclasses.field(default_factory=list, metadata=meta("a list"))
    colors: tuple[Color, ...] = dataclasses.field(default=(), metadata=meta("enums"))
    limit: int | None = dataclasses.field(default=None, metadata=meta("optional"))


def test_generic_loader_types() -> None:
    got = load_config(
        Sample,
        {"name": "x", "ports": [1, 2], "ratio": 2, "colors": ["red"]},
        {"APP_ENABLED": "yes", "APP_LIMIT": "7", "APP_COLORS": "blue,RED"},
        "APP_",
    )
    assert got == Sample("x", True, 2.0, [1, 2], (Color.BLUE, Color.RED), 7)
    assert load_config(Sample, "name: y\nenabled: false", {"APP_ENABLED": "0"}, "APP_").enabled is False
    with pytest.raises(ConfigError, match=r"key 'enabled'.*boolean"):
        load_config(Sample, {"name": "x", "enabled": "maybe"})
    with pytest.raises(ConfigError, match=r"key 'enabled'.*APP_ENABLED.*boolean"):
        load_config(Sample, {"name": "x"}, {"APP_ENABLED": "maybe"}, "APP_")
    with pytest.raises(ConfigError, match=r"key 'ports'.*in the list: expected an integer"):
        load_config(Sample, {"name": "x", "ports": [1, "two"]})
    with pytest.raises(ConfigError, match=r"key 'name'.*required"):
        load_config(Sample, {})
    # without a prefix, the environment is not consulted at all
    assert load_config(Sample, {"name": "x"}, {"ENABLED": "yes"}).enabled is False


def test_markdown_table_lists_every_key_with_its_env_variable() -> None:
    table = markdown_table(AgentConfig, ENV_PREFIX)
    for f in dataclasses.fields(AgentConfig):
        assert f"| `{f.name}` |" in table
        assert f"`{ENV_PREFIX}{f.name.upper()}`" in table


def test_docs_embed_the_current_table() -> None:
    doc = (ROOT / "docs" / "agent.md").read_text()
    table = markdown_table(AgentConfig, ENV_PREFIX)
    assert table in doc, (
        "docs/agent.md's configuration table is out of date; paste the output of\n  .venv/bin/python -c "
        "'from ovsagent.config import *; print(markdown_table(AgentConfig, ENV_PREFIX))'"
    )


# --------------------------------------------------------------------------------- check-config CLI


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) and k != "NODE_NAME"}
    return subprocess.run(
        [str(SLUICE), "check-config", "agent", *args],
        env={**clean, "NODE_NAME": "cli-node", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_ok_prints_effective_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("datapath_type: netdev\ncontrollers: [tcp:198.18.0.1:6653]\n")
    result = run_check(str(path), env={"SLUICE_AGENT_MTU": "1400"})
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first == "ok"
    effective = yaml.safe_load(rest)
    assert effective["node_name"] == "cli-node"
    assert effective["interface_type"] == "veth"
    assert effective["mtu"] == 1400
    assert effective["controllers"] == ["tcp:198.18.0.1:6653"]
    assert set(effective) == {f.name for f in dataclasses.fields(AgentConfig)}
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("content", "env", "needle"),
    [
        ("mtu: abc\n", {}, "key 'mtu': expected an integer, got 'abc'"),
        ("bogus: 1\n", {}, "key 'bogus': unknown key"),
        ("pod_cidr_override: 100.64.1.0/99\n", {}, "key 'pod_cidr_override'"),
        ("mtu: [\n", {}, "not valid YAML"),
        ("", {"SLUICE_AGENT_MTU": "x"}, "key 'mtu' (from environment variable SLUICE_AGENT_MTU)"),
        ("", {"SLUICE_AGENT_NOPE": "x"}, "SLUICE_AGENT_NOPE: unknown variable"),
        ("\udcff\n", {}, "cannot read"),
    ],
)
def test_check_config_errors_name_the_key_without_traceback(
    tmp_path: Path, content: str, env: dict[str, str], needle: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    result = run_check(str(path), env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert needle in result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_missing_file_and_usage(tmp_path: Path) -> None:
    missing = run_check(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr and "No such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    directory = run_check(str(tmp_path))
    assert directory.returncode == 1 and "Traceback" not in directory.stderr
    usage = run_check()
    assert usage.returncode == 2 and "usage: sluice check-config agent FILE" in usage.stderr
    helped = run_check("--help")
    assert helped.returncode == 0 and "usage" in helped.stdout
