"""Immutable flow values: Match, the actions Sluice uses, and Flow, checked against its table's contract."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from flows.fields import RegField
from flows.tables import Table, table


class ContractError(ValueError):
    """A flow breaks its table's declared contract (a match it does not accept, a bad goto)."""


class FlowValueError(ValueError):
    """A match or action value is malformed."""


PROTOCOLS = ("ip", "arp", "tcp", "udp", "sctp", "icmp", "ipv6")

# The order OVS prints ct_state flags in (their bit order), so normalized text matches dumps.
CT_FLAGS = ("new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat")

_INT_FIELDS = frozenset({"in_port", "arp_op", "tp_src", "tp_dst", "nw_proto", "conj_id"})
_MAC_FIELDS = frozenset({"dl_src", "dl_dst", "arp_sha", "arp_tha", "eth_src", "eth_dst"})
_IP_FIELDS = frozenset({"nw_src", "nw_dst", "arp_spa", "arp_tpa", "tun_dst", "tun_src"})
_HEX_FIELDS = frozenset({"ct_mark", "metadata", "tun_id"} | {f"reg{i}" for i in range(16)})
_HEX_WIDTH = {"ct_mark": 32, "metadata": 64, "tun_id": 64} | {f"reg{i}": 32 for i in range(16)}

# Canonical order of match fields in rendered text: protocol first, then as OVS tends to print.
_FIELD_ORDER = (
    "proto",
    "ct_state",
    "ct_mark",
    "metadata",
    "tun_id",
    "tun_src",
    "tun_dst",
    *(f"reg{i}" for i in range(16)),
    "in_port",
    "dl_src",
    "dl_dst",
    "nw_src",
    "nw_dst",
    "nw_proto",
    "arp_spa",
    "arp_tpa",
    "arp_sha",
    "arp_tha",
    "arp_op",
    "tp_src",
    "tp_dst",
    "conj_id",
)
_FIELD_RANK = {name: i for i, name in enumerate(_FIELD_ORDER)}


def _parse_int(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text)


_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def _normalize_mac(value: str) -> str:
    lowered = value.lower()
    if _CANONICAL_MAC.fullmatch(lowered):
        return lowered  # the common case, without the general checks below
    parts = lowered.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise FlowValueError(f"bad MAC address {value!r}")
    try:
        for p in parts:
            int(p, 16)
    except ValueError:
        raise FlowValueError(f"bad MAC address {value!r}") from None
    return ":".join(parts)


def _normalize_ip(value: str) -> str:
    try:
        # A plain IPv4 address already in canonical form (it prints back identically): the
        # common case, at C speed. Anything else takes the general path.
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value)) == value:
            return value
    except (OSError, ValueError):
        pass
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise FlowValueError(f"bad IP address or CIDR {value!r}") from None
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def _normalize_hex(name: str, value: str) -> str:
    width = _HEX_WIDTH[name]
    full = (1 << width) - 1
    val_text, _, mask_text = value.partition("/")
    try:
        val = _parse_int(val_text)
        mask = _parse_int(mask_text) if mask_text else full
    except ValueError:
        raise FlowValueError(f"bad value {value!r} for {name}") from None
    if not (0 <= val <= full and 0 <= mask <= full) or val & ~mask:
        raise FlowValueError(f"bad value {value!r} for {name}")
    return hex(val) if mask == full else f"{hex(val)}/{hex(mask)}"


def _normalize_ct_state(value: str) -> str:
    flags: dict[str, str] = {}
    rest = value
    while rest:
        sign = rest[0]
        if sign not in "+-":
            raise FlowValueError(f"bad ct_state {value!r}")
        end = 1
        while end < len(rest) and rest[end] not in "+-":
            end += 1
        name = rest[1:end]
        if name not in CT_FLAGS:
            raise FlowValueError(f"bad ct_state flag {name!r} in {value!r}")
        flags[name] = sign
        rest = rest[end:]
    if not flags:
        raise FlowValueError("empty ct_state")
    return "".join(f"{flags[f]}{f}" for f in CT_FLAGS if f in flags)


def normalize_field(name: str, value: str) -> str:
    """Return `value` for match or set_field `name` in the canonical text OVS prints.

    Raises FlowValueError when the value is malformed. Unknown fields are kept verbatim.
    """
    if name == "proto":
        if value not in PROTOCOLS:
            raise FlowValueError(f"unknown protocol {value!r}")
        return value
    if name in _INT_FIELDS:
        try:
            return str(_parse_int(value))
        except ValueError:
            raise FlowValueError(f"bad integer {value!r} for {name}") from None
    if name in _MAC_FIELDS:
        return _normalize_mac(value)
    if name in _IP_FIELDS:
        return _normalize_ip(value)
    if name in _HEX_FIELDS:
        return _normalize_hex(name, value)
    if name == "ct_state":
        return _normalize_ct_state(value)
    return value.strip()


@dataclass(frozen=True, slots=True)
class Match:
    """A set of match fields, normalized so that equal matches compare and hash equal."""

    fields: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def of(values: Mapping[str, object] | None = None, /, **kwargs: object) -> Match:
        """Return a Match from field names to values (ints, strings, IP objects)."""
        merged: dict[str, object] = dict(values or {})
        merged.update(kwargs)
        items = []
        for name, value in merged.items():
            if value is None:
                continue
            items.append((name, normalize_field(name, str(value))))
        return Match(_sorted(items))

    def with_reg(self, reg_field: RegField, value: int) -> Match:
        """Return this match plus `reg_field == value`, merged with other bits of the register."""
        reg_field.check(value)
        name = reg_field.ovs_name
        cur_val, cur_mask = 0, 0
        current = dict(self.fields)
        if name in current:
            val_text, _, mask_text = current[name].partition("/")
            cur_val = int(val_text, 16)
            cur_mask = int(mask_text, 16) if mask_text else 0xFFFFFFFF
            if cur_mask & reg_field.mask:
                raise FlowValueError(f"{reg_field.name} is matched twice")
        val = cur_val | (value << reg_field.start)
        mask = cur_mask | reg_field.mask
        current[name] = normalize_field(name, f"{hex(val)}/{hex(mask)}")
        return Match(_sorted(current.items()))

    def names(self) -> frozenset[str]:
        """Return the names of the matched fields."""
        return frozenset(name for name, _ in self.fields)

    def get(self, name: str) -> str | None:
        """Return the normalized value of field `name`, or None when it is not matched."""
        for n, v in self.fields:
            if n == name:
                return v
        return None

    def render(self) -> str:
        """Return the match in ovs-ofctl syntax (`ip,in_port=3,nw_src=100.64.1.2`)."""
        return ",".join(v if n == "proto" else f"{n}={v}" for n, v in self.fields)


def _sorted(items: object) -> tuple[tuple[str, str], ...]:
    pairs = list(items)  # type: ignore[call-overload]
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise FlowValueError(f"a field is matched twice in {names}")
    return tuple(sorted(pairs, key=lambda p: (_FIELD_RANK.get(p[0], len(_FIELD_RANK)), p[0])))


# ---- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """Output to a fixed ofport."""

    port: int

    def render(self) -> str:
        """Return the action in ovs-ofctl syntax."""
        return f"output:{self.port}"


@dataclass(frozen=True, slots=True)
class OutputReg:
    """Output to the ofport held in a register field."""

    reg_field: RegField

    def render(self) -> str:
        """Return the action in ovs-ofctl syntax."""
        return f"output:{self.reg_field.nxm}"


@dataclass(frozen=True, slots=True)
class InPort:
    """Send the packet back out of the port it came in on."""

    def render(self) -> str:
        """Return the action in ovs-ofctl syntax."""
        return "IN_PORT"


@dataclass(frozen=True, slots=True)
class GotoTable:
    """Continue processing in a later table (an instruction; always last)."""

    table: str

    def render(self) -> str:
        """Return the instruction in ovs-ofctl syntax."""
        return f"goto_table:{table(self.table).number}"


@dataclass(frozen=True, slots=True)
class SetField:
    """Set a packet or metadata field (eth_src, arp_op, tun_dst, ...) to a constant."""

    name: str
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", normalize_field(self.name, self.value))

    def render(self) -> str:
        """Return the action in ovs-ofctl syntax."""
        return f"set_field:{self.value}->{self.name}"


@dataclass(frozen=True, slots=True)
class LoadReg:
    """Write a constant into a named register field."""

    reg_field: RegField
    value: int

    def __post_init__(self) -> None:
        self.reg_field.check(self.value)

    def render(self) -> str:
        """Return the action in the syntax OVS prints for OpenFlow 1.5 dumps."""
        f = self.reg_field
        if f.width == 32:
            return f"set_field:{hex(self.value)}->{f.ovs_name}"
        return f"set_field:{hex(self.value << f.start)}/{hex(f.mask)}->{f.ovs_name}"


@dataclass(frozen=True, slots=True)
class Move:
    """Copy one field into another (`move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]`)."""

    src: str
    dst: str

    def render(self) -> str:
        """Return the action in ovs-ofctl syntax."""
        return f"move:{self.src}->{self.dst}"


@dataclass(frozen=True, slots=True)
class Ct:
    """Send through conntrack: commit, and/or recirculate to a table, in a zone."""

    zone: int
    commit: bool = False
    table: str | None = None

    def render(self) -> str:
        """Return the action in ovs-ofctl syntax, arguments in the order OVS prints them."""
        args = []
        if self.commit:
            args.append("commit")
        if self.table is not None:
            args.append(f"table={table(self.table).number}")
        args.append(f"zone={self.zone}")
        return f"ct({','.join(args)})"


@dataclass(frozen=True, slots=True)
class RawAction:
    """An action Sluice does not build, kept verbatim when parsed from a switch."""

    text: str

    def render(self) -> str:
        """Return the action text as it was read."""
        return self.text


Action = Output | OutputReg | InPort | GotoTable | SetField | LoadReg | Move | Ct | RawAction


def render_actions(actions: tuple[Action, ...]) -> str:
    """Return the actions in ovs-ofctl syntax; an empty list is `drop`."""
    if not actions:
        return "drop"
    return ",".join(a.render() for a in actions)


# ---- flows ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowKey:
    """What identifies a flow in a table: OpenFlow's strict (table, priority, match)."""

    table: str
    priority: int
    match: Match


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow entry. Construction checks it against its table's contract."""

    table: Table
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int = 0
    checked: bool = field(default=True, compare=False, repr=False)
    # Flows are dict keys on the push path (the controller's flow-mod cache): the hash of the
    # nested match and actions is computed once, here, not on every lookup.
    _hash: int = field(init=False, default=0, compare=False, repr=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        object.__setattr__(
            # The table by name: equal tables have equal names, and a Table's own hash is slow.
            self,
            "_hash",
            hash((self.table.name, self.priority, self.match, self.actions, self.cookie)),
        )
        if not 0 <= self.priority <= 0xFFFF:
            raise ContractError(f"priority {self.priority} out of range in table {self.table.name}")
        if not 0 <= self.cookie < (1 << 64):
            raise ContractError(f"cookie {self.cookie:#x} out of range")
        if not self.checked:
            return
        extra = self.match.names() - self.table.accepts
        if extra:
            raise ContractError(
                f"table {self.table.name} does not accept match on {', '.join(sorted(extra))}"
            )
        for i, action in enumerate(self.actions):
            target = None
            if isinstance(action, GotoTable):
                if i != len(self.actions) - 1:
                    raise ContractError(f"goto_table must be last in {self.table.name}")
                target = action.table
            elif isinstance(action, Ct):
                target = action.table
            if target is not None and target not in self.table.goes_to:
                raise ContractError(f"table {self.table.name} may not go to {target}")

    @property
    def key(self) -> FlowKey:
        """Return the (table, priority, match) key of this flow."""
        return FlowKey(self.table.name, self.priority, self.match)

    def render(self) -> str:
        """Return the flow in `ovs-ofctl add-flow` syntax."""
        match = self.match.render()
        head = f"table={self.table.number},priority={self.priority},cookie={self.cookie:#x}"
        if match:
            head += f",{match}"
        return f"{head},actions={render_actions(self.actions)}"
