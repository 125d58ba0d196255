"""The CNI spec's rules as pure functions: names, ids, CNI_ARGS, and result shapes per version.

Standard library only and no heavy imports (no `re`, `json`, `dataclasses`): the plugin imports this
on every forwarded call. The regular expressions of the spec are implemented as character sets.
"""

# No `from __future__ import annotations` (see cni/plugin.py): annotations that name typing-only
# names are quoted.

from cni.errors import CniError, ErrorCode
from cni.versions import CURRENT_VERSION

# `typing` costs milliseconds at start-up; annotations are strings (PEP 563), so import it for mypy only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

#: Commands the plugin forwards to the agent; VERSION is answered locally.
FORWARDED_COMMANDS: tuple[str, ...] = ("ADD", "DEL", "CHECK", "STATUS", "GC")
COMMANDS: tuple[str, ...] = (*FORWARDED_COMMANDS, "VERSION")

#: Environment variables that must be set and non-empty, per command (libcni's skel table, plus
#: STATUS and GC from spec 1.1). DEL may have an empty CNI_NETNS: the namespace may be gone.
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": ("CNI_PATH",),
    "GC": ("CNI_PATH",),
    "VERSION": (),
}

#: Commands that carry a container attachment (container id, ifname, netns).
ATTACHMENT_COMMANDS: tuple[str, ...] = ("ADD", "DEL", "CHECK")

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _ALNUM | frozenset("_.-")
_IFNAME_MAX_BYTES = 15  # IFNAMSIZ (16) minus the terminating NUL

# CNI_ARGS keys the plugin understands, mapped to their wire names in cni.wire.
CNI_ARGS_KEYS: dict[str, str] = {
    "K8S_POD_NAMESPACE": "podNamespace",
    "K8S_POD_NAME": "podName",
    "K8S_POD_INFRA_CONTAINER_ID": "podInfraContainerId",
    "K8S_POD_UID": "podUid",
    "IP": "ip",
}


def _matches_name_rule(value: str) -> bool:
    # The spec's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, without importing `re`.
    return bool(value) and value[0] in _ALNUM and all(c in _NAME_REST for c in value[1:])


def container_id_problem(container_id: str) -> str | None:
    """Return why `container_id` breaks the spec's rule, or None when it is valid."""
    if not container_id:
        return "CNI_CONTAINERID is empty"
    if not _matches_name_rule(container_id):
        return (
            f"CNI_CONTAINERID {container_id!r} is invalid: it must start with a letter or digit "
            "and contain only letters, digits, '_', '.' and '-'"
        )
    return None


def network_name_problem(name: object) -> str | None:
    """Return why a network config `name` breaks the spec's rule, or None when it is valid."""
    if name is None or name == "":
        return 'the network configuration has no "name"'
    if not isinstance(name, str):
        return f"network name must be a string, not {type(name).__name__}"
    if not _matches_name_rule(name):
        return (
            f"network name {name!r} is invalid: it must start with a letter or digit "
            "and contain only letters, digits, '_', '.' and '-'"
        )
    return None


def ifname_problem(ifname: str) -> str | None:
    """Return why `ifname` is not a valid Linux interface name per the spec, or None when it is."""
    if not ifname:
        return "CNI_IFNAME is empty"
    if len(ifname.encode("utf-8", "surrogateescape")) > _IFNAME_MAX_BYTES:
        return f"CNI_IFNAME {ifname!r} is longer than {_IFNAME_MAX_BYTES} bytes"
    if ifname in (".", ".."):
        return f"CNI_IFNAME {ifname!r} is not allowed"
    for char in ifname:
        if char in "/:" or char.isspace():
            return f"CNI_IFNAME {ifname!r} contains {char!r}: '/', ':' and whitespace are not allowed"
    return None


def _parse_bool(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    return None


def parse_cni_args(text: str) -> "dict[str, Any]":
    """Parse CNI_ARGS (`K=V;K=V`) into its wire form (see `cni.wire`); raise CniError code 4.

    Known keys: IgnoreUnknown, K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID,
    K8S_POD_UID and IP. An unknown key is an error unless IgnoreUnknown is `1`/`true` (as in
    libcni's LoadArgs); ignored keys are passed on in "extra" for the agent's information.
    A value may contain `=` (split at the first one); empty segments (`a=b;`) are skipped;
    a later duplicate key wins. Empty values are treated as absent.
    """
    parsed: dict[str, Any] = {"ignoreUnknown": False}
    unknown: dict[str, str] = {}
    ignore_unknown: bool | None = False
    for segment in text.split(";"):
        if not segment:
            continue
        key, sep, value = segment.partition("=")
        if not sep or not key:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                f"CNI_ARGS is malformed: {segment!r} is not a KEY=VALUE pair",
                f"CNI_ARGS={text}",
            )
        if key == "IgnoreUnknown":
            ignore_unknown = _parse_bool(value)
            if ignore_unknown is None:
                raise CniError(
                    ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                    f"CNI_ARGS: IgnoreUnknown={value!r} is not a boolean (1, true, 0, false)",
                    f"CNI_ARGS={text}",
                )
        elif key in CNI_ARGS_KEYS:
            parsed[CNI_ARGS_KEYS[key]] = value or None
        else:
            unknown[key] = value
    if unknown and not ignore_unknown:
        names = ", ".join(sorted(unknown))
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
            f"CNI_ARGS has unknown keys: {names} (set IgnoreUnknown=1 to ignore them)",
            f"CNI_ARGS={text}",
        )
    parsed["ignoreUnknown"] = bool(ignore_unknown)
    if unknown:
        parsed["extra"] = [[key, value] for key, value in sorted(unknown.items())]
    return parsed


# ---- results -------------------------------------------------------------------------------------
# The agent answers with a 1.1.0-shaped result; the plugin prints it in the shape of the version the
# runtime asked for. Keys outside the version's schema are dropped, so a 1.0.0 runtime never sees
# 1.1-only fields and a 0.x runtime gets ips[].version, which 0.x requires and 1.x removed.

_INTERFACE_KEYS = {
    "0": ("name", "mac", "sandbox"),
    "1.0": ("name", "mac", "sandbox"),
    "1.1": ("name", "mac", "mtu", "sandbox", "socketPath", "pciID"),
}
_IP_KEYS = ("interface", "address", "gateway")
_ROUTE_KEYS = {
    "0": ("dst", "gw"),
    "1.0": ("dst", "gw"),
    "1.1": ("dst", "gw", "mtu", "advmss", "priority", "table", "scope"),
}
_DNS_KEYS = ("nameservers", "domain", "search", "options")
_INT_FIELDS = frozenset(("mtu", "advmss", "priority", "table", "scope", "interface"))


def _schema(version: str) -> str:
    if version.startswith("0."):
        return "0"
    return "1.0" if version == "1.0.0" else "1.1"


def _list_of_dicts(result: "Mapping[str, Any]", key: str) -> "list[Mapping[str, Any]]":
    value = result.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"result {key!r} must be a list of objects")
    return value


def _pick(item: "Mapping[str, Any]", keys: "Sequence[str]", where: str) -> "dict[str, Any]":
    out: dict[str, Any] = {}
    for key in keys:
        value = item.get(key)
        if value is None or value == "":
            continue
        if key in _INT_FIELDS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}.{key} must be a non-negative integer, not {value!r}")
        elif not isinstance(value, str):
            raise ValueError(f"{where}.{key} must be a string, not {value!r}")
        out[key] = value
    return out


def shape_result(result: "Mapping[str, Any]", version: str) -> "dict[str, Any]":
    """Return the agent's 1.1.0-shaped ADD result converted to the schema of `version`.

    Raises ValueError naming the field when the result is not a valid CNI result.
    """
    if not isinstance(result, dict):
        raise ValueError("result must be a JSON object")
    schema = _schema(version)
    interfaces = [
        _pick(item, _INTERFACE_KEYS[schema], f"interfaces[{i}]")
        for i, item in enumerate(_list_of_dicts(result, "interfaces"))
    ]
    for i, iface in enumerate(interfaces):
        if "name" not in iface:
            raise ValueError(f"interfaces[{i}] has no name")
    ips = []
    for i, item in enumerate(_list_of_dicts(result, "ips")):
        ip = _pick(item, _IP_KEYS, f"ips[{i}]")
        address = ip.get("address", "")
        if "/" not in address:
            raise ValueError(f"ips[{i}].address must be an address in CIDR notation, not {address!r}")
        if "interface" in ip and ip["interface"] >= len(interfaces):
            raise ValueError(f"ips[{i}].interface {ip['interface']} is not an index into interfaces")
        if schema == "0":
            # 0.x requires "version"; an IPv6 address always contains ':' and IPv4 never does.
            ip = {"version": "6" if ":" in address else "4", **ip}
        ips.append(ip)
    routes = []
    for i, item in enumerate(_list_of_dicts(result, "routes")):
        route = _pick(item, _ROUTE_KEYS[schema], f"routes[{i}]")
        if "dst" not in route:
            raise ValueError(f"routes[{i}] has no dst")
        routes.append(route)
    shaped: dict[str, Any] = {"cniVersion": version}
    if interfaces:
        shaped["interfaces"] = interfaces
    if ips:
        shaped["ips"] = ips
    if routes:
        shaped["routes"] = routes
    dns = result.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            raise ValueError("result 'dns' must be an object")
        shaped["dns"] = {key: dns[key] for key in _DNS_KEYS if dns.get(key) not in (None, "", [])}
    return shaped


def current_prev_result(prev_result: "Mapping[str, Any]") -> "dict[str, Any]":
    """Return a runtime-supplied prevResult in the 1.1.0 shape the agent reads.

    Lenient on purpose (a later plugin in the chain may have added entries): it only drops the
    0.x `ips[].version` field and sets cniVersion; everything else is kept as given.
    """
    normalized = dict(prev_result)
    ips = normalized.get("ips")
    if isinstance(ips, list):
        normalized["ips"] = [
            {k: v for k, v in ip.items() if k != "version"} if isinstance(ip, dict) else ip for ip in ips
        ]
    normalized["cniVersion"] = CURRENT_VERSION
    return normalized


#: GC's list of attachments to keep: the spec 1.1 key, and the earlier spelling libcni also sends.
GC_ATTACHMENT_KEYS: tuple[str, ...] = ("cni.dev/valid-attachments", "cni.dev/attachments")


def gc_attachments(config: "Mapping[str, Any]") -> list[tuple[str, str]] | None:
    """Return the (containerID, ifname) pairs a GC must keep, or None when the config names none.

    Reads `cni.dev/valid-attachments`, else the legacy `cni.dev/attachments`. A JSON null is an
    empty list (libcni marshals an empty Go slice as null). Raises ValueError naming the key when
    the value is not a list of objects with string "containerID" and "ifname".
    """
    for key in GC_ATTACHMENT_KEYS:
        if key in config:
            value = config[key]
            break
    else:
        return None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list of attachments, not {type(value).__name__}")
    pairs = []
    for i, item in enumerate(value):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("containerID"), str)
            and isinstance(item.get("ifname"), str)
        ):
            raise ValueError(f'{key!r}[{i}] must be an object with string "containerID" and "ifname"')
        pairs.append((item["containerID"], item["ifname"]))
    return pairs
