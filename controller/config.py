"""The controller's configuration: one frozen dataclass, loaded from YAML then `SLUICE_CONTROLLER_*`.

An unknown key or a value of the wrong type is a ConfigError that names the key (or the
environment variable). `sluice check-config controller [FILE]` validates a file and prints the
effective configuration. Self-contained on purpose: the controller may not import the agent's
loader (ARCHITECTURE §1).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import socket
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

ENV_PREFIX = "SLUICE_CONTROLLER_"
# Not a setting: the path of the YAML file, for when no path is given on the command line.
ENV_CONFIG_FILE = ENV_PREFIX + "CONFIG"


class ConfigError(ValueError):
    """The configuration is invalid; the message starts with the offending key."""


class LogLevel(enum.StrEnum):
    """Log levels the controller accepts."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _check_address(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an IP address") from None


def _check_port(key: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{key}: {value} is not a TCP port (1..65535)")


def _check_positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: must be positive, got {value}")


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Everything the controller can be configured with; validated on construction."""

    openflow_address: str = "0.0.0.0"
    """Address to accept OpenFlow connections from the bridges on."""
    openflow_port: int = 6653
    """TCP port for OpenFlow (6653 is the IANA OpenFlow port)."""
    tls_key: str | None = None
    """Private key (PEM) for OpenFlow over TLS; tls_key, tls_cert and tls_ca go together."""
    tls_cert: str | None = None
    """Certificate (PEM) the controller presents to the switches."""
    tls_ca: str | None = None
    """CA certificate (PEM) the switches' certificates must be signed by."""
    kubeconfig: str | None = None
    """kubeconfig file; unset: the in-cluster service account."""
    lease_name: str = "sluice-controller"
    """Name of the coordination.k8s.io Lease used for leader election."""
    lease_namespace: str = "kube-system"
    """Namespace of that Lease."""
    lease_duration_seconds: int = 15
    """How long a leader's claim holds without renewal."""
    lease_renew_seconds: int = 10
    """How often the leader renews; must be shorter than lease_duration_seconds."""
    identity: str = field(default_factory=socket.gethostname)
    """This replica's identity in the Lease (default: the host name, i.e. the pod name)."""
    resync_seconds: int = 60
    """Period of the full resync: relist, recompile and read every switch back (repairs drift)."""
    metrics_address: str = "0.0.0.0"
    """Address of the HTTP server for /metrics, /healthz and /readyz."""
    metrics_port: int = 9102
    """TCP port of that server."""
    log_level: LogLevel = LogLevel.INFO
    """DEBUG, INFO, WARNING or ERROR."""

    def __post_init__(self) -> None:
        _check_address("openflow_address", self.openflow_address)
        _check_address("metrics_address", self.metrics_address)
        _check_port("openflow_port", self.openflow_port)
        _check_port("metrics_port", self.metrics_port)
        tls = {"tls_key": self.tls_key, "tls_cert": self.tls_cert, "tls_ca": self.tls_ca}
        given = [k for k, v in tls.items() if v]
        if given and len(given) != len(tls):
            missing = ", ".join(k for k in tls if k not in given)
            raise ConfigError(f"{missing}: TLS needs tls_key, tls_cert and tls_ca together")
        for key in ("lease_name", "lease_namespace", "identity"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        _check_positive("lease_duration_seconds", self.lease_duration_seconds)
        _check_positive("lease_renew_seconds", self.lease_renew_seconds)
        _check_positive("resync_seconds", self.resync_seconds)
        if self.lease_renew_seconds >= self.lease_duration_seconds:
            raise ConfigError(
                f"lease_renew_seconds: {self.lease_renew_seconds} must be less than "
                f"lease_duration_seconds ({self.lease_duration_seconds})"
            )

    @property
    def tls(self) -> bool:
        """Return True when OpenFlow is served over TLS."""
        return self.tls_key is not None

    def render(self) -> str:
        """Return the effective configuration as YAML lines (`key: value`)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain = {k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in values.items()}
        return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)


_HINTS: dict[str, Any] = typing.get_type_hints(ControllerConfig)
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ControllerConfig))


def _convert(key: str, hint: Any, value: object, *, from_env: bool) -> object:
    """Return `value` as the type `hint` of setting `key`; raise ConfigError naming `key`."""
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    if value is None or (from_env and optional and value == ""):
        if optional:
            return None
        raise ConfigError(f"{key}: must be set")
    if isinstance(base, type) and issubclass(base, enum.Enum):
        choices = ", ".join(m.value for m in base)
        if not isinstance(value, str) or value.upper() not in {m.value for m in base}:
            raise ConfigError(f"{key}: expected one of {choices}, got {value!r}")
        return base(value.upper())
    if base is int:
        if from_env and isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported setting type {hint}")  # a bug in this module


def _read_yaml(path: str) -> Mapping[str, object]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return data


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> ControllerConfig:
    """Return the configuration: defaults, then the YAML file `path`, then the environment.

    Environment variables are `SLUICE_CONTROLLER_<SETTING>` (upper case); an empty value
    unsets an optional setting. Raises ConfigError naming the offending key or variable.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    if path is not None:
        for key, value in _read_yaml(path).items():
            if not isinstance(key, str) or key not in _HINTS:
                raise ConfigError(f"{key}: unknown setting (known: {', '.join(FIELDS)})")
            values[key] = _convert(key, _HINTS[key], value, from_env=False)
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG_FILE:
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key not in _HINTS:
            raise ConfigError(f"{var}: unknown setting (known: {', '.join(FIELDS)})")
        try:
            values[key] = _convert(key, _HINTS[key], text, from_env=True)
        except ConfigError as exc:
            raise ConfigError(f"{var}: {str(exc).split(': ', 1)[1]}") from None
    return ControllerConfig(**values)  # type: ignore[arg-type]


def check_config_main(argv: list[str]) -> int:
    """`sluice check-config controller [FILE]`: print `ok` and the effective config, or the error.

    Returns 0 when valid, 1 when invalid, 2 for bad usage. FILE defaults to
    $SLUICE_CONTROLLER_CONFIG; without either, defaults and environment are checked.
    """
    if any(a in ("-h", "--help") for a in argv) or len(argv) > 1:
        print("usage: sluice check-config controller [FILE]", file=sys.stderr if argv else sys.stdout)
        return 0 if any(a in ("-h", "--help") for a in argv) else 2
    path = argv[0] if argv else os.environ.get(ENV_CONFIG_FILE) or None
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"invalid controller config: {exc}", file=sys.stderr)
        return 1
    print("ok")
    print(config.render(), end="")
    return 0
