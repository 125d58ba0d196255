"""The agent's configuration: one frozen dataclass from YAML then `SLUICE_AGENT_*`, validated at start.

The first half of this module is a small generic loader (`load_config`) over dataclass fields, so the
controller's config can reuse it; it belongs in a package both may import and will move there. Each
field declares its documentation, an optional validity check and an optional derived default in
`dataclasses.field(metadata=meta(...))`. The loader checks types strictly (an unknown key, or
`mtu: "1400"` for an integer, is an error naming the key), applies environment overrides and computes
derived defaults; the dataclass's `__post_init__` runs the checks, so a config built in code is
validated too.

Supported field types: str, int, float, bool, pathlib.Path, enum.Enum subclasses, `X | None`, and
`list[X]` / `tuple[X, ...]` of those scalars. Environment values are text: lists are comma-separated,
an empty value sets an optional field to null, booleans are true/false/yes/no/on/off/1/0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import ipaddress
import logging
import math
import os
import re
import socket
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import yaml

from ovsagent.ipam import MAX_IPV4_PREFIX

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------- generic loader


class ConfigError(Exception):
    """A configuration value is wrong; the message names the key (and the variable it came from)."""

    def __init__(self, key: str | None, message: str, origin: str | None = None) -> None:
        self.key = key
        self.message = message
        self.origin = origin
        where = "" if key is None else f"key {key!r}"
        if origin:
            where += f" (from {origin})" if where else f"{origin}"
        super().__init__(f"{where}: {message}" if where else message)


class _Dataclass(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


T = TypeVar("T", bound=_Dataclass)
Check = Callable[[Any], str | None]
Derive = Callable[[Mapping[str, Any], Mapping[str, str]], Any]


def meta(
    doc: str,
    *,
    check: Check | None = None,
    derive: Derive | None = None,
    default_doc: str | None = None,
) -> dict[str, Any]:
    """Return a config field's `dataclasses.field` metadata: its doc, check and derived default.

    `check(value)` returns an error text or None. `derive(values, env)` computes the field when
    neither the YAML nor the environment sets it, from the other fields' final values (fields are
    derived in declaration order); the field's own default is then only what code constructing the
    dataclass directly gets. `default_doc` replaces the default's rendering in documentation.
    """
    return {"doc": doc, "check": check, "derive": derive, "default_doc": default_doc}


class _Mismatch(Exception):
    """A value does not have the field's type; the text says what was expected."""


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _optional_inner(tp: Any) -> Any | None:
    """Return X for `X | None` (or Optional[X]), else None."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"unsupported config field type {tp!r}: only `X | None` unions")
        return args[0]
    return None


def _sequence_item(tp: Any) -> Any | None:
    """Return X for `list[X]` or `tuple[X, ...]`, else None."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def describe_type(tp: Any) -> str:
    """Return a reader's name for a field type, used in errors and docs ("integer or null")."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{describe_type(inner)} or null"
    item = _sequence_item(tp)
    if item is not None:
        return f"list of {describe_type(item)}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "{" + ", ".join(str(m.value) for m in tp) + "}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if tp in names:
        return names[tp]
    raise TypeError(f"unsupported config field type {tp!r}")


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | dict):
        return f"a {'list' if isinstance(value, list) else 'mapping'}"
    return f"{value!r} ({type(value).__name__})"


def _coerce(tp: Any, value: object, from_env: bool) -> Any:
    """Return `value` as type `tp`; raise _Mismatch saying what was expected."""
    inner = _optional_inner(tp)
    if inner is not None:
        if value is None or (from_env and value == ""):
            return None
        return _coerce(inner, value, from_env)
    item = _sequence_item(tp)
    if item is not None:
        if from_env and isinstance(value, str):
            parts: list[object] = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, list):
            parts = list(value)
        else:
            raise _Mismatch(f"expected a {describe_type(tp)}, got {_shown(value)}")
        try:
            converted = [_coerce(item, p, from_env) for p in parts]
        except _Mismatch as exc:
            raise _Mismatch(f"in the list: {exc}") from None
        return converted if typing.get_origin(tp) is list else tuple(converted)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, str):
            for member in tp:
                if value == member.value or value.lower() == str(member.value).lower():
                    return member
        raise _Mismatch(f"expected one of {describe_type(tp)}, got {_shown(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Mismatch(f"expected a boolean (true or false), got {_shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                pass
        raise _Mismatch(f"expected an integer, got {_shown(value)}")
    if tp is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif from_env and isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value.strip())
        if number is None or not math.isfinite(number):
            raise _Mismatch(f"expected a number, got {_shown(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(f"expected a string, got {_shown(value)} (quote it in YAML)")
    if tp is Path:
        if isinstance(value, str) and value.strip():
            return Path(value.strip())
        raise _Mismatch(f"expected a path, got {_shown(value)}")
    raise TypeError(f"unsupported config field type {tp!r}")


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[object, object]:
    loader.flatten_mapping(node)
    result: dict[object, object] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in result
        except TypeError:  # an unhashable key (a list as key): reported as unknown later
            duplicate = False
            key = str(key)
        if duplicate:
            line = key_node.start_mark.line + 1
            raise ConfigError(str(key), f"given twice (again at line {line})")
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> dict[str, object]:
    """Parse config YAML into a mapping (an empty document is an empty mapping); raise ConfigError."""
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(None, f"not valid YAML{at}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(None, f"not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(None, f"the config must be a mapping of keys to values, got {_shown(doc)}")
    return {str(k) if not isinstance(k, str) else k: v for k, v in doc.items()}


def env_name(prefix: str, field_name: str) -> str:
    """Return the environment variable overriding a field: prefix + upper-case name."""
    return prefix + field_name.upper()


def load_config(
    cls: type[T],
    source: str | Mapping[str, object] | None,
    env: Mapping[str, str] | None = None,
    prefix: str = "",
) -> T:
    """Build `cls` from YAML text (or an already parsed mapping), then `env` overrides, validated.

    Every key of the source must be a field; every variable of `env` starting with `prefix` must
    name a field (`prefix` + FIELD in upper case). Raises ConfigError naming the key.
    """
    raw = parse_yaml(source) if isinstance(source, str) else dict(source or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(str(key), f"unknown key (known keys: {', '.join(fields)})")
        try:
            values[key] = _coerce(hints[key], value, from_env=False)
        except _Mismatch as exc:
            raise ConfigError(key, str(exc)) from None
    environment = env if env is not None else {}
    if prefix:
        for var in sorted(environment):
            if not var.startswith(prefix):
                continue
            name = var[len(prefix) :].lower()
            if name not in fields or env_name(prefix, name) != var:
                raise ConfigError(
                    None, f"unknown variable (known: {', '.join(env_name(prefix, n) for n in fields)})", var
                )
            try:
                values[name] = _coerce(hints[name], environment[var], from_env=True)
            except _Mismatch as exc:
                raise ConfigError(name, str(exc), f"environment variable {var}") from None
            origins[name] = f"environment variable {var}"
    derived = []
    for name, f in fields.items():
        if name in values:
            continue
        if f.metadata.get("derive") is not None:
            derived.append(f)
        elif f.default is not dataclasses.MISSING:
            values[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[name] = f.default_factory()
        else:
            raise ConfigError(name, "required key is missing")
    for f in derived:
        values[f.name] = f.metadata["derive"](values, environment)
        origins[f.name] = "its default"
    try:
        return cls(**values)
    except ConfigError as exc:
        if exc.key in origins and exc.origin is None:
            raise ConfigError(exc.key, exc.message, origins[exc.key]) from None
        raise


def check_fields(obj: _Dataclass) -> None:
    """Run every field's check on `obj` (skipping null optional fields); raise ConfigError."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        value = getattr(obj, f.name)
        if check is None or value is None:
            continue
        problem = check(value)
        if problem:
            raise ConfigError(f.name, problem)


def config_to_dict(obj: _Dataclass) -> dict[str, object]:
    """Return the config as plain YAML-able values (paths and enums as text, tuples as lists)."""

    def plain(value: object) -> object:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


@dataclasses.dataclass(frozen=True, slots=True)
class FieldDoc:
    """One row of a config reference table."""

    key: str
    type: str
    default: str
    env: str
    doc: str


def field_docs(cls: type[_Dataclass], prefix: str) -> list[FieldDoc]:
    """Return the reference rows (key, type, default, env variable, doc) for every field of `cls`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.metadata.get("default_doc")
        if default is None:
            default = _doc_value(f.default) if f.default is not dataclasses.MISSING else "required"
        rows.append(
            FieldDoc(
                f.name, describe_type(hints[f.name]), default, env_name(prefix, f.name), f.metadata["doc"]
            )
        )
    return rows


def _doc_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, list | tuple):
        return (
            f"`{','.join(str(v.value if isinstance(v, enum.Enum) else v) for v in value)}`"
            if value
            else "empty"
        )
    if isinstance(value, str) and not value:
        return '`""`'
    return f"`{value}`"


def markdown_table(cls: type[_Dataclass], prefix: str) -> str:
    """Return the Markdown reference table of `cls`'s fields (the one docs/agent.md embeds)."""
    lines = ["| Key | Type | Default | Environment | Meaning |", "|---|---|---|---|---|"]
    for row in field_docs(cls, prefix):
        cells = (f"`{row.key}`", row.type, row.default, f"`{row.env}`", row.doc)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- the agent's config

ENV_PREFIX = "SLUICE_AGENT_"


class DatapathType(enum.Enum):
    """OVS datapath of br-int: the kernel module, or userspace where the kernel has none."""

    SYSTEM = "system"
    NETDEV = "netdev"


class InterfaceType(enum.Enum):
    """How a pod is attached: an OVS internal port moved into the pod, or a veth pair."""

    INTERNAL = "internal"
    VETH = "veth"


class OpenFlowVersion(enum.Enum):
    """OpenFlow versions as OVS names them in `Bridge.protocols`."""

    OF10 = "OpenFlow10"
    OF11 = "OpenFlow11"
    OF12 = "OpenFlow12"
    OF13 = "OpenFlow13"
    OF14 = "OpenFlow14"
    OF15 = "OpenFlow15"


class LogLevel(enum.Enum):
    """The agent's log threshold."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def level(self) -> int:
        """Return the `logging` level number."""
        return {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}.get(
            self.value, logging.ERROR
        )


# Kubernetes node names are DNS-1123 subdomains.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$")
IFNAME_MAX = 15  # Linux IFNAMSIZ - 1
OFPORT_MAX = 65279  # OVS accepts ofport_request 1..65279 (0xfeff; above are reserved ports)


def _check_node_name(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return (
            f"{value!r} is not a valid Kubernetes node name (lower-case DNS subdomain: a-z, 0-9, '-', '.'; "
            "at most 253 characters)"
        )
    return None


def _check_absolute(value: Path) -> str | None:
    return None if value.is_absolute() else f"must be an absolute path, got {str(value)!r}"


def check_ifname(value: str) -> str | None:
    """Return why `value` cannot be a Linux interface name, or None when it can."""
    if not 1 <= len(value) <= IFNAME_MAX:
        return f"{value!r} is not a valid interface name: 1 to {IFNAME_MAX} characters"
    if value in (".", "..") or any(c in value for c in "/:") or any(c.isspace() for c in value):
        return f"{value!r} is not a valid interface name: no '/', ':' or whitespace, not '.' or '..'"
    return None


def _parse_host_port(text: str, default_port: int | None) -> str | None:
    """Return why `HOST[:PORT]` (HOST an IPv4 address, [IPv6] or a DNS name) is invalid, or None."""
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return "unterminated '[' in the address"
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        if rest:
            if not rest.startswith(":"):
                return "expected ':PORT' after ']'"
            port = rest[1:]
    else:
        if ":" in text:
            host, port = text.rsplit(":", 1)
        if not host or not _HOSTNAME.match(host):
            return f"{host!r} is not an IP address or host name"
    if port is None:
        return None if default_port is not None else "a port is required (HOST:PORT)"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a number from 1 to 65535"
    return None


def _check_connection_target(value: str, default_port: int | None, what: str) -> str | None:
    method, _, rest = value.partition(":")
    if method == "unix":
        if not rest.startswith("/"):
            return f"{what} {value!r}: unix: needs an absolute socket path"
        return None
    if method in ("tcp", "ssl"):
        problem = _parse_host_port(rest, default_port)
        return None if problem is None else f"{what} {value!r}: {problem}"
    return f"{what} {value!r}: expected tcp:HOST:PORT, ssl:HOST:PORT or unix:PATH"


def _check_ovsdb(value: str) -> str | None:
    return _check_connection_target(value, None, "OVSDB remote")


def _check_controllers(value: tuple[str, ...]) -> str | None:
    for target in value:
        problem = _check_connection_target(target, 6653, "controller target")
        if problem:
            return problem
    if len(set(value)) != len(value):
        return "a controller target is listed twice"
    return None


def _check_inactivity_probe(value: int) -> str | None:
    # vswitchd turns the milliseconds into whole seconds (bridge.c: inactivity_probe / 1000) and
    # rconn raises anything but 0 to at least 5 s: refuse values OVS would silently change.
    if value == 0 or (5000 <= value <= 3_600_000 and value % 1000 == 0):
        return None
    return f"{value} is not 0 (no probes) or a whole number of seconds from 5000 to 3600000 ms (OVS limits)"


def _check_max_backoff(value: int) -> str | None:
    # rconn uses whole seconds (bridge.c: max_backoff / 1000, at least 1 s): refuse values OVS
    # would silently change.
    if 1000 <= value <= 3_600_000 and value % 1000 == 0:
        return None
    return f"{value} is not a whole number of seconds from 1000 to 3600000 ms (OVS limits)"


def _check_of_protocols(value: tuple[OpenFlowVersion, ...]) -> str | None:
    if len(set(value)) != len(value):
        return "a version is listed twice"
    if not any(v in (OpenFlowVersion.OF13, OpenFlowVersion.OF14, OpenFlowVersion.OF15) for v in value):
        return "must include OpenFlow13 or later (the controller speaks OpenFlow 1.3 and up)"
    return None


def _check_pod_cidr(value: str) -> str | None:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        return f"{value!r} is not a valid CIDR: {exc}"
    if network.version != 4:
        return f"{value!r}: only IPv4 pod CIDRs are supported"
    if network.prefixlen > MAX_IPV4_PREFIX:
        return f"{value!r} is too small: at most /{MAX_IPV4_PREFIX} (network, gateway, a pod, broadcast)"
    return None


def _check_tunnel_ip(value: str) -> str | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    if ip.version != 4:
        return f"{value!r}: only IPv4 tunnel endpoints are supported"
    if (
        ip.is_unspecified
        or ip.is_loopback
        or ip.is_multicast
        or ip == ipaddress.IPv4Address("255.255.255.255")
    ):
        return f"{value!r} cannot be a tunnel endpoint (unspecified, loopback, multicast or broadcast)"
    return None


def _check_range(low: float, high: float, unit: str = "") -> Check:
    def check(value: float) -> str | None:
        if low <= value <= high:
            return None
        return f"{value}{unit} is out of range: {low:g} to {high:g}{unit}"

    return check


def _check_flow_wait(value: float) -> str | None:
    if 0 < value <= 300:
        return None
    return f"{value} is out of range: more than 0 and at most 300 seconds"


def _check_metrics_address(value: str) -> str | None:
    if value == "":
        return None
    if value.startswith("["):
        problem = _parse_host_port(value, None)
        return None if problem is None else f"{value!r}: {problem}"
    host, sep, _ = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return f"{value!r} is not IP:PORT (an IPv4 address or [IPv6], then a port), or empty to disable"
    problem = _parse_host_port(value, None) if sep else "a port is required"
    return None if problem is None else f"{value!r}: {problem}"


def _derive_node_name(values: Mapping[str, Any], env: Mapping[str, str]) -> str:
    # The kubelet registers the lower-cased hostname unless told otherwise; the DaemonSet sets
    # NODE_NAME from the downward API (spec.nodeName), which is the reliable source.
    return env.get("NODE_NAME") or socket.gethostname().lower()


def _derive_ipam_dir(values: Mapping[str, Any], env: Mapping[str, str]) -> Path:
    state_dir: Path = values["state_dir"]
    return state_dir / "ipam"


def _derive_ovsdb(values: Mapping[str, Any], env: Mapping[str, str]) -> str:
    rundir: Path = values["ovs_rundir"]
    return f"unix:{rundir / 'db.sock'}"


def _derive_interface_type(values: Mapping[str, Any], env: Mapping[str, str]) -> InterfaceType:
    # Internal ports do not survive a userspace vswitchd restart (their tap lives in the daemon);
    # veth pairs do, so they are the default with the netdev datapath.
    if values["datapath_type"] is DatapathType.NETDEV:
        return InterfaceType.VETH
    return InterfaceType.INTERNAL


@dataclasses.dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the node agent is configured with; see docs/agent.md#configuration."""

    node_name: str = field(
        default_factory=lambda: socket.gethostname().lower(),
        metadata=meta(
            "This node's Kubernetes name (the Node object the agent reads and annotates).",
            check=_check_node_name,
            derive=_derive_node_name,
            default_doc="env `NODE_NAME`, else the lower-cased hostname",
        ),
    )
    kubeconfig: Path | None = field(
        default=None,
        metadata=meta(
            "Kubeconfig file for the API server; null: in-cluster service-account credentials.",
            check=_check_absolute,
        ),
    )
    cni_socket: Path = field(
        default=Path("/var/run/sluice/cni.sock"),
        metadata=meta(
            "Unix socket the agent serves CNI requests on (the plugin's `agentSocket`).",
            check=_check_absolute,
        ),
    )
    state_dir: Path = field(
        default=Path("/var/lib/sluice"),
        metadata=meta("Directory for the agent's durable state.", check=_check_absolute),
    )
    ipam_dir: Path = field(
        default=Path("/var/lib/sluice/ipam"),
        metadata=meta(
            "IPAM store directory (see [IPAM](#ipam)).",
            check=_check_absolute,
            derive=_derive_ipam_dir,
            default_doc="`<state_dir>/ipam`",
        ),
    )
    bridge: str = field(
        default="br-int",
        metadata=meta("Integration bridge the pods attach to.", check=check_ifname),
    )
    datapath_type: DatapathType = field(
        default=DatapathType.SYSTEM,
        metadata=meta("OVS datapath: `system` (kernel module) or `netdev` (userspace, no module needed)."),
    )
    interface_type: InterfaceType = field(
        default=InterfaceType.INTERNAL,
        metadata=meta(
            "Pod attachment: `internal` (an OVS internal port moved into the pod) or `veth`.",
            derive=_derive_interface_type,
            default_doc="`internal` for `system`, `veth` for `netdev`",
        ),
    )
    ovs_rundir: Path = field(
        default=Path("/var/run/openvswitch"),
        metadata=meta(
            "OVS run directory, where the bridge's management socket `<bridge>.mgmt` lives.",
            check=_check_absolute,
        ),
    )
    ovsdb: str = field(
        default="unix:/var/run/openvswitch/db.sock",
        metadata=meta(
            "OVSDB remote: `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`.",
            check=_check_ovsdb,
            derive=_derive_ovsdb,
            default_doc="`unix:<ovs_rundir>/db.sock`",
        ),
    )
    controllers: tuple[str, ...] = field(
        default=(),
        metadata=meta(
            "OpenFlow controller targets, e.g. `tcp:198.18.0.1:6653` (`tcp:`/`ssl:` port defaults to "
            "6653). Empty: no controller, and with `fail_mode=secure` no pod traffic flows.",
            check=_check_controllers,
        ),
    )
    inactivity_probe_ms: int = field(
        default=5000,
        metadata=meta(
            "Controller inactivity probe in ms: 0 (off) or whole seconds from 5000 (OVS rounds "
            "down to seconds and raises anything shorter to 5 s).",
            check=_check_inactivity_probe,
        ),
    )
    controller_max_backoff_ms: int = field(
        default=1000,
        metadata=meta(
            "Longest wait in ms between the bridge's attempts to reach a controller (the Controller "
            "rows' `max_backoff`; OVS default 8000): whole seconds from 1000.",
            check=_check_max_backoff,
        ),
    )
    of_protocols: tuple[OpenFlowVersion, ...] = field(
        default=(OpenFlowVersion.OF13, OpenFlowVersion.OF15),
        metadata=meta(
            "OpenFlow versions the bridge allows (`OpenFlow10` to `OpenFlow15`); must include 1.3 or later.",
            check=_check_of_protocols,
        ),
    )
    pod_cidr_override: str | None = field(
        default=None,
        metadata=meta(
            f"Pod CIDR used instead of the Node's `spec.podCIDR` (IPv4, at most /{MAX_IPV4_PREFIX}).",
            check=_check_pod_cidr,
        ),
    )
    tunnel_ip: str | None = field(
        default=None,
        metadata=meta(
            "This node's underlay IPv4 address for Geneve; null: the address of the underlay interface.",
            check=_check_tunnel_ip,
        ),
    )
    underlay_interface: str | None = field(
        default=None,
        metadata=meta(
            "Underlay interface (source of the tunnel address and MTU); null: the default route's.",
            check=check_ifname,
        ),
    )
    mtu: int | None = field(
        default=None,
        metadata=meta(
            "Pod MTU, 576 to 9216; null: underlay MTU minus 58 (Geneve with an option; OVS never fragments).",
            check=_check_range(576, 9216),
        ),
    )
    tunnel_ofport: int = field(
        default=10,
        metadata=meta(
            f"Fixed OpenFlow port number of the Geneve port, 1 to {OFPORT_MAX} (the flows name it).",
            check=_check_range(1, OFPORT_MAX),
        ),
    )
    gateway_port: str = field(
        default="sluice-gw0",
        metadata=meta(
            "Name of the gateway internal port (holds the podCIDR's first address).", check=check_ifname
        ),
    )
    flow_wait_seconds: float = field(
        default=10.0,
        metadata=meta(
            "How long ADD waits for the pod's flows before failing with CNI code 11 (over 0, at most 300).",
            check=_check_flow_wait,
        ),
    )
    resync_seconds: float = field(
        default=60.0,
        metadata=meta(
            "Period of the resync while running (the restart reconciliation again: stale ports, orphan "
            "veths and addresses of nothing removed, broken `internal` pods re-attached); 0 disables it, "
            "at most 86400. A lost br-int, gateway or Geneve port is rebuilt at once in any case.",
            check=_check_range(0, 86400, " seconds"),
        ),
    )
    metrics_address: str = field(
        default="0.0.0.0:9101",
        metadata=meta(
            "Prometheus metrics listen address `IP:PORT`; empty disables the endpoint.",
            check=_check_metrics_address,
        ),
    )
    log_level: LogLevel = field(
        default=LogLevel.INFO,
        metadata=meta("Log threshold: `debug`, `info`, `warning` or `error`."),
    )

    def __post_init__(self) -> None:
        check_fields(self)


def load_agent_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> AgentConfig:
    """Load the agent config from the YAML file at `path` (None: defaults), then `env` (default:
    the process environment) `SLUICE_AGENT_*` overrides. Raises ConfigError naming the key."""
    text = ""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(None, f"cannot read {path}: {reason}") from None
    return load_config(AgentConfig, text, os.environ if env is None else env, ENV_PREFIX)


_USAGE = """usage: sluice check-config agent FILE

Validate the agent config FILE (YAML) with the SLUICE_AGENT_* environment overrides applied;
print "ok" and the effective config, or the error naming the key (exit 1)."""


def check_config_main(argv: list[str]) -> int:
    """`sluice check-config agent FILE`: print "ok" and the effective config, or the error; exit 0/1."""
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        config = load_agent_config(argv[0])
        text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    except ConfigError as exc:
        print(f"sluice check-config agent: {argv[0]}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback for the user; the detail is in the debug log
        log.debug("check-config failed", exc_info=True)
        print(f"sluice check-config agent: {argv[0]}: internal error: {exc}", file=sys.stderr)
        return 1
    print("ok")
    print(text, end="")
    return 0
