"""Named network namespaces for the lab and tests: create, run commands in, plumb veths, clean up.

Every namespace this module creates is recorded in a registry directory (one JSON file per
namespace, naming the owning process and any directories to remove with it). Deletion and
leftover cleanup only ever act on namespaces found in that registry, so nothing this module did
not create is touched. Links are driven through `ip -n NS ...` (iproute2), which is fast and
needs no mount namespace; tools that read /sys or /proc/net (ethtool, daemons) run under
`ip netns exec NS ...`, which remounts /sys for the namespace.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.procs import (
    DEFAULT_TIMEOUT,
    CommandError,
    CommandResult,
    pid_alive,
    process_start_time,
    run,
    stop_pids,
)

log = logging.getLogger(__name__)

REGISTRY_ENV = "SLUICE_NETNS_REGISTRY"
DEFAULT_REGISTRY = Path("/run/sluice/netns-registry")
NETNS_DIR = Path("/run/netns")

_NETNS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

_counter = itertools.count()
_token: tuple[int, str] | None = None


class NetnsError(CommandError):
    """A namespace or link operation failed; carries the command, exit code and stderr."""


class NotOursError(Exception):
    """The named namespace is not in this library's registry, so it will not be touched."""


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that owns a namespace: its PID and start time (so PID reuse is detected)."""

    pid: int
    start_time: int

    @staticmethod
    def current() -> Owner:
        """Return the owner record for this process."""
        pid = os.getpid()
        start = process_start_time(pid)
        if start is None:  # pragma: no cover - /proc is always there on Linux
            raise RuntimeError("cannot read /proc/self/stat")
        return Owner(pid, start)

    def alive(self) -> bool:
        """Return True while the owning process (the same one, not a PID reuse) is running."""
        return pid_alive(self.pid) and process_start_time(self.pid) == self.start_time


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One namespace this library created: its owner (None = persistent) and dirs to remove."""

    name: str
    owner: Owner | None
    dirs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored in the registry file."""
        owner = None if self.owner is None else {"pid": self.owner.pid, "start": self.owner.start_time}
        return {"name": self.name, "owner": owner, "dirs": list(self.dirs)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> RegistryEntry:
        """Parse the registry-file form; raises ValueError on a malformed entry."""
        try:
            raw_owner = data["owner"]
            owner = None if raw_owner is None else Owner(int(raw_owner["pid"]), int(raw_owner["start"]))
            return RegistryEntry(str(data["name"]), owner, tuple(str(d) for d in data["dirs"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed registry entry: {data!r}") from exc


@dataclass(frozen=True, slots=True)
class Netns:
    """A named network namespace; commands run inside it through `ip netns exec`."""

    name: str

    @property
    def path(self) -> Path:
        """Return the bind-mount path of the namespace (/run/netns/NAME)."""
        return NETNS_DIR / self.name

    def exec(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        input_text: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run `cmd` inside the namespace and return its result; raises NetnsError on failure."""
        return run(
            ["ip", "netns", "exec", self.name, *cmd],
            check=check,
            timeout=timeout,
            input_text=input_text,
            env=env,
            error=NetnsError,
        )

    def popen(
        self,
        *cmd: str,
        env: Mapping[str, str] | None = None,
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        stdin: int | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[str]:
        """Start `cmd` inside the namespace without waiting; the caller must stop it by its PID.

        `ip netns exec` execs the command in place, so the Popen PID is the command's PID.
        """
        argv = ["ip", "netns", "exec", self.name, *cmd]
        log.debug("popen: %s", " ".join(argv))
        return subprocess.Popen(
            argv,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            text=True,
            env=dict(env) if env is not None else None,
        )

    def ip(self, *args: str, check: bool = True) -> CommandResult:
        """Run `ip -n NAME ARGS...` and return its result; raises NetnsError on failure."""
        return run(["ip", "-n", self.name, *args], check=check, error=NetnsError)

    def pids(self) -> list[int]:
        """Return the PIDs of the processes running in the namespace."""
        out = run(["ip", "netns", "pids", self.name], error=NetnsError).stdout
        return [int(tok) for tok in out.split()]


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """A link as `ip -j link show` reports it."""

    netns: str
    name: str
    ifindex: int
    mac: str
    mtu: int
    up: bool


@dataclass(frozen=True, slots=True)
class VethPair:
    """Both ends of a veth pair: (namespace, interface name) for each side."""

    a_netns: str
    a_name: str
    b_netns: str
    b_name: str
    mtu: int | None = field(default=None)


# ---------------------------------------------------------------------------------------------
# Names and the registry


def _process_token() -> str:
    """Return a token unique to this process (PID plus randomness), stable for its lifetime."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:
        _token = (pid, f"{pid:x}{secrets.token_hex(2)}")
    return _token[1]


def unique_name(prefix: str) -> str:
    """Return a namespace name `PREFIX<token>-<n>` that no other process will generate."""
    name = f"{prefix}{_process_token()}-{next(_counter)}"
    validate_netns_name(name)
    return name


def validate_netns_name(name: str) -> None:
    """Raise ValueError unless `name` is a safe namespace name (letters, digits, `_.-`)."""
    if not _NETNS_NAME.match(name):
        raise ValueError(f"invalid network namespace name {name!r}: use [A-Za-z0-9_.-], max 63")


def validate_ifname(name: str) -> None:
    """Raise ValueError unless `name` is a valid Linux interface name (max 15 characters)."""
    if not _IFNAME.match(name):
        raise ValueError(f"invalid interface name {name!r}: use [A-Za-z0-9_.-], max 15 characters")


def registry_dir() -> Path:
    """Return the registry directory ($SLUICE_NETNS_REGISTRY or /run/sluice/netns-registry)."""
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def _entry_path(name: str) -> Path:
    return registry_dir() / f"{name}.json"


def _write_entry(entry: RegistryEntry) -> None:
    path = _entry_path(entry.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(entry.to_json()))
    tmp.replace(path)


def read_entry(name: str) -> RegistryEntry | None:
    """Return the registry entry for namespace `name`, or None if this library did not create it."""
    try:
        return RegistryEntry.from_json(json.loads(_entry_path(name).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable registry entry %s: %s", name, exc)
        return None


def registered(prefix: str = "") -> list[RegistryEntry]:
    """Return the registry entries whose namespace name starts with `prefix`."""
    base = registry_dir()
    if not base.is_dir():
        return []
    entries = []
    for path in sorted(base.glob("*.json")):
        entry = read_entry(path.stem)
        if entry is not None and entry.name.startswith(prefix):
            entries.append(entry)
    return entries


def register_dir(name: str, directory: Path | str) -> None:
    """Record `directory` to be removed together with our namespace `name`.

    Raises NotOursError if `name` is not in the registry.
    """
    entry = read_entry(name)
    if entry is None:
        raise NotOursError(f"network namespace {name!r} was not created by sluice's lab.netns")
    path = str(Path(directory).resolve())
    if path not in entry.dirs:
        _write_entry(RegistryEntry(entry.name, entry.owner, (*entry.dirs, path)))


# ---------------------------------------------------------------------------------------------
# Namespaces


def netns_exists(name: str) -> bool:
    """Return True if /run/netns/NAME exists."""
    return (NETNS_DIR / name).exists()


def create_netns(name: str, *, persistent: bool = False, lo_up: bool = True) -> Netns:
    """Create namespace `name`, record it in the registry, and bring its loopback up.

    `persistent=False` ties it to this process: `cleanup_leftovers` removes it once this process
    is gone. `persistent=True` (the lab) leaves it until deleted explicitly or force-cleaned.
    Raises ValueError for a bad name and NetnsError if it exists or `ip netns add` fails.
    """
    validate_netns_name(name)
    if netns_exists(name):
        raise NetnsError(["ip", "netns", "add", name], 1, f"network namespace {name!r} exists")
    owner = None if persistent else Owner.current()
    # Registry first: if we die between the two steps, cleanup still finds the namespace.
    _write_entry(RegistryEntry(name, owner))
    try:
        run(["ip", "netns", "add", name], error=NetnsError)
        ns = Netns(name)
        if lo_up:
            # A fresh namespace has lo DOWN; anything using 127.0.0.1 inside it needs it up.
            ns.ip("link", "set", "dev", "lo", "up")
    except BaseException:
        _remove_netns(name, kill_timeout=2.0)
        raise
    log.debug("created netns %s", name)
    return ns


def delete_netns(name: str, *, kill_timeout: float = 5.0) -> None:
    """Delete our namespace `name`: stop every process in it (by PID), remove it and its dirs.

    Succeeds if it is already gone. Raises NotOursError if `name` is not in the registry.
    """
    if read_entry(name) is None:
        raise NotOursError(f"network namespace {name!r} was not created by sluice's lab.netns")
    _remove_netns(name, kill_timeout=kill_timeout)


def _remove_netns(name: str, *, kill_timeout: float) -> None:
    entry = read_entry(name)
    if netns_exists(name):
        # Deleting a namespace does not stop processes inside it; they would keep it alive
        # (anonymous) and keep running. Every process in our namespace is ours.
        try:
            pids = Netns(name).pids()
        except NetnsError as exc:
            log.warning("cannot list processes in %s: %s", name, exc)
            pids = []
        if pids:
            log.debug("stopping pids %s in netns %s", pids, name)
            stop_pids(pids, timeout=kill_timeout)
        result = run(["ip", "netns", "del", name], check=False, error=NetnsError)
        if result.returncode != 0 and netns_exists(name):
            raise NetnsError(result.cmd, result.returncode, result.stderr)
    if entry is not None:
        for directory in entry.dirs:
            shutil.rmtree(directory, ignore_errors=True)
    _entry_path(name).unlink(missing_ok=True)
    log.debug("deleted netns %s", name)


def cleanup_leftovers(prefix: str, *, include_live: bool = False) -> list[str]:
    """Remove our namespaces named `prefix*` whose owning process is gone; return their names.

    With include_live=True also remove persistent ones and those of live owners (`lab down`).
    Namespaces not in the registry are never touched. Raises ValueError for an empty prefix
    combined with include_live (that would wipe every lab and test run on the machine).
    """
    if include_live and not prefix:
        raise ValueError("cleanup_leftovers(include_live=True) needs a non-empty prefix")
    removed = []
    for entry in registered(prefix):
        if not include_live and (entry.owner is None or entry.owner.alive()):
            continue
        log.info("removing leftover netns %s", entry.name)
        _remove_netns(entry.name, kill_timeout=2.0)
        removed.append(entry.name)
    return removed


# ---------------------------------------------------------------------------------------------
# Links


def create_veth(a_netns: str, a_name: str, b_netns: str, b_name: str, *, mtu: int | None = None) -> VethPair:
    """Create a veth pair with end `a_name` in `a_netns` and `b_name` in `b_netns`.

    Both ends are created directly in their namespaces, so names only need to be unique within
    each namespace. The ends are left down. Raises NetnsError (e.g. a name is taken).
    """
    validate_ifname(a_name)
    validate_ifname(b_name)
    args = ["ip", "link", "add", a_name, "netns", a_netns]
    if mtu is not None:
        args += ["mtu", str(mtu)]
    args += ["type", "veth", "peer", "name", b_name, "netns", b_netns]
    if mtu is not None:
        args += ["mtu", str(mtu)]
    run(args, error=NetnsError)
    return VethPair(a_netns, a_name, b_netns, b_name, mtu)


def configure_link(
    netns: str,
    ifname: str,
    *,
    mac: str | None = None,
    mtu: int | None = None,
    up: bool | None = True,
) -> None:
    """Set the MAC and/or MTU of `ifname` in `netns` and bring it up (or down) in one call."""
    args = ["link", "set", "dev", ifname]
    if mac is not None:
        if not _MAC.match(mac):
            raise ValueError(f"invalid MAC address {mac!r}")
        args += ["address", mac.lower()]
    if mtu is not None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"invalid MTU {mtu}: must be 68..65535")
        args += ["mtu", str(mtu)]
    if up is not None:
        args.append("up" if up else "down")
    Netns(netns).ip(*args)


def add_address(netns: str, ifname: str, address: ipaddress.IPv4Interface | str) -> None:
    """Add `address` (CIDR form, e.g. 100.64.1.2/24) to `ifname` in `netns`."""
    iface = ipaddress.ip_interface(address)
    Netns(netns).ip("addr", "add", str(iface), "dev", ifname)


def add_route(
    netns: str,
    destination: str,
    *,
    via: ipaddress.IPv4Address | str | None = None,
    dev: str | None = None,
    onlink: bool = False,
) -> None:
    """Add a route to `destination` ("default" or a CIDR) in `netns` via a gateway and/or device."""
    if via is None and dev is None:
        raise ValueError("add_route needs via= or dev=")
    args = ["route", "add", destination]
    if via is not None:
        args += ["via", str(ipaddress.ip_address(via))]
    if dev is not None:
        args += ["dev", dev]
    if onlink:
        args.append("onlink")
    Netns(netns).ip(*args)


def disable_tx_offload(netns: str, ifname: str) -> None:
    """Turn TX checksum offload off on `ifname` (`ethtool -K IF tx off`) inside `netns`.

    With the OVS userspace datapath a veth left with TX offload on hands OVS packets whose TCP/UDP
    checksum was never filled in; OVS forwards them as is and the receiver drops them.
    """
    Netns(netns).exec("ethtool", "-K", ifname, "tx", "off")


def link_info(netns: str, ifname: str) -> LinkInfo:
    """Return the state of `ifname` in `netns`; raises NetnsError if it does not exist."""
    out = Netns(netns).ip("-j", "link", "show", "dev", ifname).stdout
    data = json.loads(out)[0]
    return LinkInfo(
        netns=netns,
        name=str(data["ifname"]),
        ifindex=int(data["ifindex"]),
        mac=str(data.get("address", "")),
        mtu=int(data["mtu"]),
        up="UP" in data.get("flags", []),
    )


def link_exists(netns: str, ifname: str) -> bool:
    """Return True if `ifname` exists in `netns`."""
    return Netns(netns).ip("link", "show", "dev", ifname, check=False).returncode == 0


def delete_link(netns: str, ifname: str) -> None:
    """Delete `ifname` in `netns` (a veth takes its peer with it); no error if it is gone."""
    if link_exists(netns, ifname):
        Netns(netns).ip("link", "del", "dev", ifname)
