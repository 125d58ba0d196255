"""Sluice `Flow` values to OpenFlow flow-mods (os-ken) and back, bundle framing, and the fast path.

This is the one module (besides the os-ken app shim) that imports os-ken. It is pure: it builds
and parses bytes, it never talks to a switch.

Version: the controller speaks OpenFlow 1.5 to the bridges (they allow OpenFlow13,OpenFlow15).
Bundles (OFPT_BUNDLE_CONTROL / OFPT_BUNDLE_ADD_MESSAGE) are standard from OpenFlow 1.4 (the 1.3
ONF extension would also work with OVS, as an experimenter message). In 1.5 OVS refuses
NXAST_REG_LOAD and NXAST_REG_MOVE (OFPBAC_BAD_EXP_TYPE), so a register load is sent as a masked
set_field and a move as OFPAT_COPY_FIELD. Flow conversion works for 1.3 and 1.5 alike (both
round-trip in the tests, and against a real bridge); bundle framing needs 1.4 or later.

Reading back: in OpenFlow 1.5 a flow's instructions come in OFPMP_FLOW_DESC replies
(`OFPFlowDesc`); OFPMP_FLOW_STATS carries statistics only. OVS writes register matches back as
64-bit packet registers (xregN) in 1.5, a load as a masked set_field (NXAST_REG_LOAD in 1.3) and
a move as OFPAT_COPY_FIELD (NXAST_REG_MOVE in 1.3); `flow_from_entry` understands every form, so
a read-back compares equal to what was compiled. Importing this module also fixes os-ken's
OFPAT_COPY_FIELD parser, without which a 1.5 flow-desc reply holding a move does not parse.

Speed: building and serializing an os-ken OFPFlowMod costs ~70-200 microseconds. `FlowModEncoder`
produces the same bytes an order of magnitude faster (per-field codecs for the common match and
set_field values, memoized os-ken pieces for the rest), and `FlowModCache` keeps the bytes of
each distinct (command, flow), so a flow repeated across nodes or pushes is encoded once;
`bundle_add` wraps cached bytes in a bundle-add without re-serializing them, and `BundlePlan`
encodes a bundle slice by slice so that sending and the switch's work overlap with encoding.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import socket
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from os_ken.lib import type_desc
from os_ken.ofproto import (
    nicira_ext,
    ofproto_parser,
    ofproto_v1_3,
    ofproto_v1_3_parser,
    ofproto_v1_5,
    ofproto_v1_5_parser,
)

from flows.fields import RegField, field_by_bits
from flows.flowset import FlowSet
from flows.model import (
    CT_FLAGS,
    Action,
    Ct,
    Flow,
    FlowKey,
    FlowValueError,
    GotoTable,
    InPort,
    LoadReg,
    Match,
    Move,
    Output,
    OutputReg,
    RawAction,
    SetField,
)
from flows.tables import Table, table, table_by_number

log = logging.getLogger(__name__)

OF13 = ofproto_v1_3.OFP_VERSION
OF15 = ofproto_v1_5.OFP_VERSION
SUPPORTED_VERSIONS = (OF13, OF15)

_MODULES: dict[int, tuple[ModuleType, ModuleType]] = {
    OF13: (ofproto_v1_3, ofproto_v1_3_parser),
    OF15: (ofproto_v1_5, ofproto_v1_5_parser),
}

_HEADER = struct.Struct("!BBHI")  # ofp_header: version, type, length, xid
_XID = struct.Struct("!I")
# ofp_bundle_add_msg (OF1.4+): header, bundle_id, pad(2), flags; then the inner message.
_BUNDLE_ADD = struct.Struct("!BBHIIHH")
# ofp_bundle_ctrl_msg (OF1.4+): header, bundle_id, type, flags.
_BUNDLE_CTRL = struct.Struct("!BBHIIHH")
OFPT_BUNDLE_CONTROL = 33
OFPT_BUNDLE_ADD_MESSAGE = 34
OFPT_BARRIER_REQUEST = 20
NX_CT_F_COMMIT = 1
NX_CT_RECIRC_NONE = 0xFF


class _CopyField(ofproto_v1_5_parser.OFPActionCopyField):  # type: ignore[misc]
    """OFPAT_COPY_FIELD with a working parser.

    os-ken 4.2's parser reads `len` bytes starting *after* the 12-byte action header, so it
    runs into the padding and the next action, finds more than two OXM ids and fails an
    assertion (and its `len` is the header size, not the action's), which loses the whole
    flow-desc reply. OVS writes every move back as this action in OpenFlow 1.5, so the
    read-back depends on this fix. It parses exactly the two OXM ids the action holds.
    """

    @classmethod
    def parser(cls, buf: bytes, offset: int) -> _CopyField:
        ofp = ofproto_v1_5
        type_, len_, n_bits, src_ofs, dst_ofs = struct.unpack_from(
            ofp.OFP_ACTION_COPY_FIELD_PACK_STR, buf, offset
        )
        rest = buf[offset + ofp.OFP_ACTION_COPY_FIELD_SIZE : offset + len_]
        src, rest = ofproto_v1_5_parser.OFPOxmId.parse(rest)
        dst, _ = ofproto_v1_5_parser.OFPOxmId.parse(rest)
        action = cls(n_bits, src_ofs, dst_ofs, [src, dst], type_, len_)
        action.len = len_  # the constructor sets the fixed header size; the caller skips by len
        return action


ofproto_v1_5_parser.OFPAction.register_action_type(
    ofproto_v1_5.OFPAT_COPY_FIELD, ofproto_v1_5.OFP_ACTION_COPY_FIELD_SIZE
)(_CopyField)


class OfMsgError(ValueError):
    """A flow cannot be expressed as an OpenFlow message (or a message as a flow)."""


class Command(enum.Enum):
    """The flow-mod commands Sluice sends: ADD (also replaces a flow on the same key) and
    DELETE_STRICT (exactly one key; never a wildcard delete)."""

    ADD = "add"
    DELETE_STRICT = "delete_strict"


class DatapathLike(Protocol):
    """What os-ken needs to build a message: an os-ken `Datapath`, or `OfProto` without a switch."""

    ofproto: Any
    ofproto_parser: Any


class OfProto:
    """A datapath stand-in for one OpenFlow version, so messages serialize without a switch."""

    __slots__ = ("ofproto", "ofproto_parser")

    def __init__(self, version: int = OF15) -> None:
        if version not in _MODULES:
            raise OfMsgError(f"unsupported OpenFlow version {version:#x}")
        self.ofproto, self.ofproto_parser = _MODULES[version]

    @property
    def version(self) -> int:
        """Return the OpenFlow wire version (4 for 1.3, 6 for 1.5)."""
        return int(self.ofproto.OFP_VERSION)

    def __repr__(self) -> str:
        return f"OfProto({self.version:#x})"


# ---- field names ---------------------------------------------------------------------------

_ETH_TYPES = {"ip": 0x0800, "arp": 0x0806, "ipv6": 0x86DD}
_ETH_TYPE_NAMES = {v: k for k, v in _ETH_TYPES.items()}
_L4_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}
_IP_PROTOS = {**_L4_PROTOS, "icmp": 1}
_IP_PROTO_NAMES = {v: k for k, v in _IP_PROTOS.items()}

# Our match names (as OVS prints them) -> os-ken OXM/NXM names, for fields with a plain value.
_MATCH_MAC = {
    "dl_src": "eth_src",
    "dl_dst": "eth_dst",
    "eth_src": "eth_src",
    "eth_dst": "eth_dst",
    "arp_sha": "arp_sha",
    "arp_tha": "arp_tha",
}
_MATCH_IP = {"arp_spa": "arp_spa", "arp_tpa": "arp_tpa", "tun_src": "tun_ipv4_src", "tun_dst": "tun_ipv4_dst"}
_MATCH_INT = {"in_port": "in_port", "arp_op": "arp_op", "conj_id": "conj_id"}
_MATCH_HEX = {"ct_mark": "ct_mark", "metadata": "metadata", "tun_id": "tunnel_id"} | {
    f"reg{i}": f"reg{i}" for i in range(16)
}
# os-ken name -> our name, for reading matches back (the NXM-only spellings included).
_MATCH_BACK = {
    "eth_src": "dl_src",
    "eth_dst": "dl_dst",
    "eth_src_nxm": "dl_src",
    "eth_dst_nxm": "dl_dst",
    "arp_sha": "arp_sha",
    "arp_tha": "arp_tha",
    "arp_sha_nxm": "arp_sha",
    "arp_tha_nxm": "arp_tha",
    "arp_spa": "arp_spa",
    "arp_tpa": "arp_tpa",
    "arp_spa_nxm": "arp_spa",
    "arp_tpa_nxm": "arp_tpa",
    "tun_ipv4_src": "tun_src",
    "tun_ipv4_dst": "tun_dst",
    "in_port": "in_port",
    "arp_op": "arp_op",
    "arp_op_nxm": "arp_op",
    "conj_id": "conj_id",
    "ct_mark": "ct_mark",
    "metadata": "metadata",
    "tunnel_id": "tun_id",
    "tunnel_id_nxm": "tun_id",
}
_MATCH_BACK |= {f"reg{i}": f"reg{i}" for i in range(16)}
# Fields not modelled by Sluice travel under this prefix with the os-ken name, so a flow read
# from a switch (a hand-added one, say) keeps its exact match and can be deleted strictly.
FOREIGN_PREFIX = "oxm:"

# Our set_field names (as OVS prints them) -> os-ken names.
_SET_FIELD = {
    "eth_src": "eth_src",
    "eth_dst": "eth_dst",
    "arp_op": "arp_op",
    "arp_sha": "arp_sha",
    "arp_tha": "arp_tha",
    "arp_spa": "arp_spa",
    "arp_tpa": "arp_tpa",
    "tun_dst": "tun_ipv4_dst",
    "tun_src": "tun_ipv4_src",
    "ip_src": "ipv4_src",
    "ip_dst": "ipv4_dst",
    "tun_id": "tunnel_id",
}
_SET_FIELD_BACK = {v: k for k, v in _SET_FIELD.items()} | {
    "eth_src_nxm": "eth_src",
    "eth_dst_nxm": "eth_dst",
    "arp_op_nxm": "arp_op",
    "arp_sha_nxm": "arp_sha",
    "arp_tha_nxm": "arp_tha",
    "arp_spa_nxm": "arp_spa",
    "arp_tpa_nxm": "arp_tpa",
    "ipv4_src_nxm": "ip_src",
    "ipv4_dst_nxm": "ip_dst",
    "tunnel_id_nxm": "tun_id",
}
_SET_FIELD_INT = frozenset({"arp_op", "tun_id"})


@dataclass(frozen=True, slots=True)
class _NxmField:
    nxm: str
    osken: str
    width: int


# NXM names (as OVS prints move actions) <-> os-ken field names, with widths in bits.
_NXM_FIELDS: tuple[_NxmField, ...] = (
    _NxmField("NXM_OF_ETH_DST", "eth_dst", 48),
    _NxmField("NXM_OF_ETH_SRC", "eth_src", 48),
    _NxmField("NXM_OF_ETH_TYPE", "eth_type", 16),
    _NxmField("NXM_OF_IP_PROTO", "ip_proto", 8),
    _NxmField("NXM_OF_IP_SRC", "ipv4_src", 32),
    _NxmField("NXM_OF_IP_DST", "ipv4_dst", 32),
    _NxmField("NXM_OF_TCP_SRC", "tcp_src", 16),
    _NxmField("NXM_OF_TCP_DST", "tcp_dst", 16),
    _NxmField("NXM_OF_UDP_SRC", "udp_src", 16),
    _NxmField("NXM_OF_UDP_DST", "udp_dst", 16),
    _NxmField("NXM_OF_ARP_OP", "arp_op", 16),
    _NxmField("NXM_OF_ARP_SPA", "arp_spa", 32),
    _NxmField("NXM_OF_ARP_TPA", "arp_tpa", 32),
    _NxmField("NXM_NX_ARP_SHA", "arp_sha", 48),
    _NxmField("NXM_NX_ARP_THA", "arp_tha", 48),
    _NxmField("NXM_NX_TUN_ID", "tunnel_id", 64),
    _NxmField("NXM_NX_TUN_IPV4_SRC", "tun_ipv4_src", 32),
    _NxmField("NXM_NX_TUN_IPV4_DST", "tun_ipv4_dst", 32),
    _NxmField("NXM_NX_CT_STATE", "ct_state", 32),
    _NxmField("NXM_NX_CT_ZONE", "ct_zone", 16),
    _NxmField("NXM_NX_CT_MARK", "ct_mark", 32),
    _NxmField("NXM_NX_PKT_MARK", "pkt_mark", 32),
    _NxmField("OXM_OF_METADATA", "metadata", 64),
    *(_NxmField(f"NXM_NX_REG{i}", f"reg{i}", 32) for i in range(16)),
)
_BY_NXM = {f.nxm: f for f in _NXM_FIELDS}
_BY_OSKEN = {f.osken: f for f in _NXM_FIELDS} | {
    f"{f.osken}_nxm": f
    for f in _NXM_FIELDS
    if f.osken
    in (
        "eth_dst",
        "eth_src",
        "eth_type",
        "ip_proto",
        "ipv4_src",
        "ipv4_dst",
        "tcp_src",
        "tcp_dst",
        "udp_src",
        "udp_dst",
        "arp_op",
        "arp_spa",
        "arp_tpa",
        "arp_sha",
        "arp_tha",
        "tunnel_id",
    )
}


def _int(text: str) -> int:
    return int(text, 0)


def _hex_value(text: str) -> int | tuple[int, int]:
    value, _, mask = text.partition("/")
    return (_int(value), _int(mask)) if mask else _int(value)


def _ip_value(text: str) -> str | tuple[str, str]:
    if "/" not in text and text.count(".") == 3:
        return text  # a plain address, already canonical in a Match
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise OfMsgError(f"bad IP address or CIDR {text!r}") from None
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return (str(net.network_address), str(net.netmask))


def _ct_state_value(text: str) -> tuple[int, int]:
    value = mask = 0
    rest = text
    while rest:
        sign, rest = rest[0], rest[1:]
        end = min((i for i in (rest.find("+"), rest.find("-")) if i >= 0), default=len(rest))
        name, rest = rest[:end], rest[end:]
        bit = 1 << CT_FLAGS.index(name)
        mask |= bit
        if sign == "+":
            value |= bit
    return value, mask


def _foreign_value(text: str) -> object:
    value, slash, mask = text.partition("/")

    def one(part: str) -> object:
        try:
            return int(part, 0)
        except ValueError:
            return part

    return (one(value), one(mask)) if slash else one(value)


def match_to_oxm(match: Match) -> dict[str, object]:
    """Return os-ken OFPMatch keyword arguments for `match`. Raises OfMsgError.

    `proto` becomes eth_type (+ ip_proto); `tp_src`/`tp_dst` become tcp_/udp_/sctp_ by protocol;
    CIDRs become (address, netmask); `ct_state` flags become (value, mask) as OVS defines them
    (`+flag` sets the bit in value and mask, `-flag` in the mask only).
    """
    out: dict[str, object] = {}
    proto = match.get("proto")
    l4: str | None = None
    if proto is not None:
        if proto in _ETH_TYPES:
            out["eth_type"] = _ETH_TYPES[proto]
        elif proto in _IP_PROTOS:
            out["eth_type"] = _ETH_TYPES["ip"]
            out["ip_proto"] = _IP_PROTOS[proto]
            l4 = proto if proto in _L4_PROTOS else None
        else:
            raise OfMsgError(f"unknown protocol {proto!r}")
    for name, value in match.fields:
        try:
            if name == "proto":
                continue
            if name in _MATCH_MAC:
                out[_MATCH_MAC[name]] = value
            elif name in _MATCH_IP:
                out[_MATCH_IP[name]] = _ip_value(value)
            elif name in ("nw_src", "nw_dst"):
                ip = _ip_value(value)
                v6 = ":" in (ip if isinstance(ip, str) else ip[0])
                out[("ipv6_" if v6 else "ipv4_") + name[3:]] = ip
            elif name in _MATCH_INT:
                out[_MATCH_INT[name]] = _int(value)
            elif name in _MATCH_HEX:
                out[_MATCH_HEX[name]] = _hex_value(value)
            elif name == "ct_state":
                out["ct_state"] = _ct_state_value(value)
            elif name == "nw_proto":
                if out.get("ip_proto", _int(value)) != _int(value):
                    raise OfMsgError(f"nw_proto={value} contradicts proto={proto}")
                out["ip_proto"] = _int(value)
            elif name in ("tp_src", "tp_dst"):
                if l4 is None:
                    raise OfMsgError(f"{name} needs proto tcp, udp or sctp (have {proto})")
                out[f"{l4}_{name[3:]}"] = _int(value)
            elif name.startswith(FOREIGN_PREFIX):
                out[name[len(FOREIGN_PREFIX) :]] = _foreign_value(value)
            else:
                raise OfMsgError(f"match field {name!r} has no OpenFlow equivalent here")
        except (ValueError, IndexError) as exc:
            if isinstance(exc, OfMsgError):
                raise
            raise OfMsgError(f"bad value {value!r} for match field {name}") from None
    return out


def _mask_len(mask: str) -> int | None:
    try:
        return ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        return None


def _foreign(name: str, value: object) -> tuple[str, str]:
    if isinstance(value, tuple):
        return f"{FOREIGN_PREFIX}{name}", f"{_text(value[0])}/{_text(value[1])}"
    return f"{FOREIGN_PREFIX}{name}", _text(value)


def _text(value: object) -> str:
    return hex(value) if isinstance(value, int) else str(value)


def _ct_state_text(value: int, mask: int) -> str | None:
    if mask & ~0xFF or not mask:
        return None
    return "".join(
        ("+" if value & (1 << i) else "-") + flag for i, flag in enumerate(CT_FLAGS) if mask & (1 << i)
    )


def _xreg_halves(name: str, value: object) -> list[tuple[str, object]] | None:
    """Return xregN's halves as (regM, (value, mask)) pairs, or None if `name` is no xreg.

    In OpenFlow 1.5 OVS writes register matches back as 64-bit packet registers (OXM class
    OFPXMC_PACKET_REGS): xregN holds reg(2N) in its upper and reg(2N+1) in its lower 32 bits.
    """
    if not (name.startswith("xreg") and name[4:].isdigit()):
        return None
    n = int(name[4:])
    val, mask = value if isinstance(value, tuple) else (value, (1 << 64) - 1)
    if not isinstance(val, int) or not isinstance(mask, int):
        return None
    halves: list[tuple[str, object]] = []
    for reg, shift in ((2 * n, 32), (2 * n + 1, 0)):
        half_mask = (mask >> shift) & 0xFFFFFFFF
        if half_mask:
            half_val = (val >> shift) & 0xFFFFFFFF
            halves.append((f"reg{reg}", half_val if half_mask == 0xFFFFFFFF else (half_val, half_mask)))
    return halves


def _split_xregs(given: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in given.items():
        halves = _xreg_halves(name, value)
        if halves is None or any(reg in given or reg in out for reg, _ in halves):
            out[name] = value
        else:
            out.update(halves)
    return out


def match_from_oxm(pairs: Iterable[tuple[str, object]]) -> Match:
    """Return our Match for os-ken match fields (`OFPMatch._fields2`, or `.items()`).

    The inverse of `match_to_oxm`. Fields Sluice does not model are kept as `oxm:<name>`.
    """
    fields: dict[str, str] = {}
    given = _split_xregs(dict(pairs))
    eth_type = given.pop("eth_type", given.pop("eth_type_nxm", None))
    ip_proto = given.pop("ip_proto", given.pop("ip_proto_nxm", None))
    l4 = None
    if isinstance(eth_type, int) and eth_type in _ETH_TYPE_NAMES:
        fields["proto"] = _ETH_TYPE_NAMES[eth_type]
        if ip_proto is not None:
            if eth_type == _ETH_TYPES["ip"] and ip_proto in _IP_PROTO_NAMES:
                fields["proto"] = _IP_PROTO_NAMES[ip_proto]
                l4 = fields["proto"] if fields["proto"] in _L4_PROTOS else None
            else:
                fields["nw_proto"] = str(ip_proto)
    else:
        if eth_type is not None:
            fields.update([_foreign("eth_type", eth_type)])
        if ip_proto is not None:
            fields.update([_foreign("ip_proto", ip_proto)])
    for name, value in given.items():
        ours = _MATCH_BACK.get(name)
        if name in ("ipv4_src", "ipv4_dst", "ipv4_src_nxm", "ipv4_dst_nxm"):
            ours = "nw_" + name[5:8]
            if isinstance(value, tuple):
                length = _mask_len(str(value[1]))
                if length is None:
                    fields.update([_foreign(name, value)])
                    continue
                value = f"{value[0]}/{length}"
        elif name == "ct_state":
            val, mask = value if isinstance(value, tuple) else (value, 0xFF)
            text = _ct_state_text(int(val), int(mask))
            if text is None:
                fields.update([_foreign(name, value)])
            else:
                fields["ct_state"] = text
            continue
        elif l4 is not None and name.split("_nxm")[0] in (f"{l4}_src", f"{l4}_dst"):
            fields["tp_" + name.split("_nxm")[0][len(l4) + 1 :]] = str(value)
            continue
        if ours is None:
            fields.update([_foreign(name, value)])
            continue
        if isinstance(value, tuple):
            if ours in ("arp_spa", "arp_tpa", "tun_src", "tun_dst"):
                length = _mask_len(str(value[1]))
                if length is None:
                    fields.update([_foreign(name, value)])
                    continue
                fields[ours] = f"{value[0]}/{length}"
            elif isinstance(value[0], int) and ours in _MATCH_HEX:
                fields[ours] = f"{value[0]:#x}/{value[1]:#x}"
            else:
                fields.update([_foreign(name, value)])
            continue
        fields[ours] = hex(value) if ours in _MATCH_HEX and isinstance(value, int) else str(value)
    try:
        return Match.of(fields)
    except FlowValueError as exc:
        raise OfMsgError(f"cannot represent match {given}: {exc}") from None


# ---- actions -------------------------------------------------------------------------------


def _subfield(text: str) -> tuple[_NxmField, int, int]:
    """Return (field, offset, n_bits) of NXM subfield syntax `NAME[]`, `NAME[a..b]` or `NAME[a]`."""
    name, bracket, rest = text.partition("[")
    field = _BY_NXM.get(name)
    if field is None or not bracket or not rest.endswith("]"):
        raise OfMsgError(f"unsupported field in {text!r}")
    bits = rest[:-1]
    if not bits:
        return field, 0, field.width
    lo, dots, hi = bits.partition("..")
    start, end = int(lo), int(hi) if dots else int(lo)
    if not 0 <= start <= end < field.width:
        raise OfMsgError(f"bad bit range in {text!r}")
    return field, start, end - start + 1


def _subfield_text(field: _NxmField, ofs: int, n_bits: int) -> str:
    if ofs == 0 and n_bits == field.width:
        return f"{field.nxm}[]"
    if n_bits == 1:
        return f"{field.nxm}[{ofs}]"
    return f"{field.nxm}[{ofs}..{ofs + n_bits - 1}]"


def _set_field_value(name: str, value: str) -> object:
    return _int(value) if name in _SET_FIELD_INT else value


def _action_to_osken(dp: DatapathLike, action: Action) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    of15 = ofp.OFP_VERSION >= OF15
    if isinstance(action, Output):
        return parser.OFPActionOutput(action.port, 0)
    if isinstance(action, InPort):
        return parser.OFPActionOutput(ofp.OFPP_IN_PORT, 0)
    if isinstance(action, OutputReg):
        f = action.reg_field
        return parser.NXActionOutputReg(
            ofs_nbits=nicira_ext.ofs_nbits(f.start, f.end), src=f.ovs_name, max_len=0
        )
    if isinstance(action, SetField):
        name = _SET_FIELD.get(action.name)
        if name is None:
            raise OfMsgError(f"set_field to {action.name!r} is not supported")
        return parser.OFPActionSetField(**{name: _set_field_value(action.name, action.value)})
    if isinstance(action, LoadReg):
        f = action.reg_field
        if of15:
            # OVS accepts NXAST_REG_LOAD only up to OpenFlow 1.4 (OFPBAC_BAD_EXP_TYPE in 1.5);
            # 1.5's set_field may carry a mask, and that is what OVS itself sends.
            shifted = action.value << f.start
            value: object = shifted if f.width == 32 else (shifted, f.mask)
            return parser.OFPActionSetField(**{f.ovs_name: value})
        return parser.NXActionRegLoad(
            ofs_nbits=nicira_ext.ofs_nbits(f.start, f.end), dst=f.ovs_name, value=action.value
        )
    if isinstance(action, Move):
        src, src_ofs, n_bits = _subfield(action.src)
        dst, dst_ofs, dst_bits = _subfield(action.dst)
        if n_bits != dst_bits:
            raise OfMsgError(f"move {action.src}->{action.dst}: widths differ")
        if of15:
            # Likewise NXAST_REG_MOVE is OpenFlow 1.0-1.4 in OVS; 1.5 has OFPAT_COPY_FIELD.
            return parser.OFPActionCopyField(
                n_bits=n_bits,
                src_offset=src_ofs,
                dst_offset=dst_ofs,
                oxm_ids=[src.osken, dst.osken],
            )
        return parser.NXActionRegMove(
            src_field=src.osken,
            dst_field=dst.osken,
            n_bits=n_bits,
            src_ofs=src_ofs,
            dst_ofs=dst_ofs,
        )
    if isinstance(action, Ct):
        recirc = NX_CT_RECIRC_NONE if action.table is None else table(action.table).number
        return parser.NXActionCT(
            flags=NX_CT_F_COMMIT if action.commit else 0,
            zone_src="",
            zone_ofs_nbits=action.zone,
            recirc_table=recirc,
            alg=0,
            actions=[],
        )
    raise OfMsgError(f"action {action.render()!r} cannot be sent to a switch")


def actions_to_instructions(dp: DatapathLike, actions: tuple[Action, ...]) -> list[Any]:
    """Return os-ken instructions for our actions: apply-actions, then goto_table if any.

    Raises OfMsgError for a RawAction (only flows read from a switch hold those, and Sluice
    never adds them), a goto_table that is not last, or anything else without an OpenFlow form.
    """
    ofp, parser = dp.ofproto, dp.ofproto_parser
    apply: list[Any] = []
    goto: int | None = None
    for action in actions:
        if goto is not None:
            raise OfMsgError("goto_table must be the last action")
        if isinstance(action, GotoTable):
            goto = table(action.table).number
        else:
            apply.append(_action_to_osken(dp, action))
    instructions: list[Any] = []
    if apply:
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, apply))
    if goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(goto))
    return instructions


def _reg_number(name: str) -> int | None:
    if name.startswith("reg") and name[3:].isdigit() and 0 <= int(name[3:]) <= 15:
        return int(name[3:])
    return None


def _load(reg: int, value: int, mask: int) -> LoadReg | None:
    if mask == 0 or mask & ~0xFFFFFFFF:
        return None
    start = (mask & -mask).bit_length() - 1
    end = mask.bit_length() - 1
    if mask != ((1 << (end - start + 1)) - 1) << start:
        return None
    reg_field: RegField | None = field_by_bits(reg, start, end)
    if reg_field is None:
        return None
    return LoadReg(reg_field, (value & mask) >> start)


def _raw(kind: str, obj: object) -> RawAction:
    return RawAction(f"{kind}:{obj}")


def _action_from_osken(dp: DatapathLike, action: Any) -> Action:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(action, parser.OFPActionOutput):
        if action.port == ofp.OFPP_IN_PORT:
            return InPort()
        if action.port <= ofp.OFPP_MAX:
            return Output(action.port)
        return _raw("output", f"{action.port:#x}")
    if isinstance(action, parser.OFPActionSetField):
        key, value = action.key, action.value
        halves = _xreg_halves(key, value)
        if halves is not None and len(halves) == 1:
            key, value = halves[0]
        reg = _reg_number(key)
        if reg is not None:
            val, mask = value if isinstance(value, tuple) else (value, 0xFFFFFFFF)
            return _load(reg, val, mask) or _raw("set_field", f"{value}->{key}")
        if key in _SET_FIELD_BACK and not isinstance(value, tuple):
            try:
                return SetField(_SET_FIELD_BACK[key], str(value))
            except FlowValueError:
                pass
        return _raw("set_field", f"{value}->{key}")
    if isinstance(action, parser.NXActionRegLoad):
        start = action.ofs_nbits >> 6
        n_bits = (action.ofs_nbits & 0x3F) + 1
        reg = _reg_number(action.dst)
        if reg is not None:
            mask = ((1 << n_bits) - 1) << start
            loaded = _load(reg, action.value << start, mask)
            if loaded is not None:
                return loaded
        field = _BY_OSKEN.get(action.dst)
        if field is not None and start == 0 and n_bits == field.width and action.dst in _SET_FIELD_BACK:
            return _action_from_osken(
                dp, parser.OFPActionSetField(**{field.osken: _load_value(field, action.value)})
            )
        return _raw("load", f"{action.value:#x}->{action.dst}[{start}+{n_bits}]")
    if isinstance(action, parser.NXActionRegLoad2):
        if action.mask is None:
            return _action_from_osken(dp, parser.OFPActionSetField(**{action.dst: action.value}))
        return _action_from_osken(dp, parser.OFPActionSetField(**{action.dst: (action.value, action.mask)}))
    if isinstance(action, parser.NXActionRegMove):
        return _move(action.src_field, action.src_ofs, action.dst_field, action.dst_ofs, action.n_bits)
    copy_field = getattr(parser, "OFPActionCopyField", None)
    if copy_field is not None and isinstance(action, copy_field) and len(action.oxm_ids) >= 2:
        return _move(
            action.oxm_ids[0].type,
            action.src_offset,
            action.oxm_ids[1].type,
            action.dst_offset,
            action.n_bits,
        )
    if isinstance(action, parser.NXActionOutputReg | parser.NXActionOutputReg2):
        reg = _reg_number(action.src)
        start = action.ofs_nbits >> 6
        end = start + (action.ofs_nbits & 0x3F)
        reg_field = field_by_bits(reg, start, end) if reg is not None else None
        return OutputReg(reg_field) if reg_field else _raw("output_reg", action)
    if isinstance(action, parser.NXActionCT):
        if action.zone_src or action.alg or action.actions or action.flags & ~NX_CT_F_COMMIT:
            return _raw("ct", action)
        target: str | None = None
        if action.recirc_table != NX_CT_RECIRC_NONE:
            try:
                target = table_by_number(action.recirc_table).name
            except KeyError:
                return _raw("ct", action)
        return Ct(zone=action.zone_ofs_nbits, commit=bool(action.flags & NX_CT_F_COMMIT), table=target)
    return _raw(type(action).__name__, action)


def _load_value(field: _NxmField, value: int) -> object:
    if field.width == 48:
        return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))
    if field.osken.startswith(("ipv4", "arp_spa", "arp_tpa", "tun_ipv4")):
        return str(ipaddress.IPv4Address(value))
    return value


def _move(src: str, src_ofs: int, dst: str, dst_ofs: int, n_bits: int) -> Action:
    s, d = _BY_OSKEN.get(src), _BY_OSKEN.get(dst)
    if s is None or d is None or src_ofs + n_bits > s.width or dst_ofs + n_bits > d.width:
        return RawAction(f"move:{src}[{src_ofs}+{n_bits}]->{dst}[{dst_ofs}+{n_bits}]")
    return Move(_subfield_text(s, src_ofs, n_bits), _subfield_text(d, dst_ofs, n_bits))


def actions_from_instructions(dp: DatapathLike, instructions: Iterable[Any]) -> tuple[Action, ...]:
    """Return our actions for os-ken instructions (the inverse of `actions_to_instructions`).

    Instructions Sluice does not build (write-actions, meters, ...) become RawActions, so such
    a flow differs from anything compiled and the diff replaces or removes it.
    """
    ofp, parser = dp.ofproto, dp.ofproto_parser
    actions: list[Action] = []
    goto: list[Action] = []
    for inst in instructions:
        if isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions.extend(_action_from_osken(dp, a) for a in inst.actions)
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            try:
                goto.append(GotoTable(table_by_number(inst.table_id).name))
            except KeyError:
                goto.append(RawAction(f"goto_table:{inst.table_id}"))
        else:
            actions.append(_raw(type(inst).__name__, inst))
    return (*actions, *goto)


# ---- flows ---------------------------------------------------------------------------------

_FOREIGN_TABLES: dict[int, Table] = {}


def foreign_table(number: int) -> Table:
    """Return a Table value for a table number outside the pipeline (named `table<N>`).

    A switch may hold flows in tables Sluice does not declare (left by an older version or a
    human); they must still be representable, so the diff can delete them strictly.
    """
    known = _FOREIGN_TABLES.get(number)
    if known is None:
        known = Table(f"table{number}", number, "not a Sluice table", frozenset(), frozenset(), "")
        _FOREIGN_TABLES[number] = known
    return known


def _table_for(number: int) -> Table:
    try:
        return table_by_number(number)
    except KeyError:
        return foreign_table(number)


def flow_mod(dp: DatapathLike, flow: Flow, command: Command) -> Any:
    """Return the os-ken OFPFlowMod for `flow`: ADD, or DELETE_STRICT of exactly its key.

    ADD also replaces the flow on the same (table, priority, match), which is how a modify is
    sent. DELETE_STRICT carries table, priority and match with out_port/out_group ANY and no
    cookie mask, so it removes exactly that one flow. Raises OfMsgError.
    """
    ofp, parser = dp.ofproto, dp.ofproto_parser
    match = parser.OFPMatch(**match_to_oxm(flow.match))
    if command is Command.ADD:
        return parser.OFPFlowMod(
            dp,
            cookie=flow.cookie,
            cookie_mask=0,
            table_id=flow.table.number,
            command=ofp.OFPFC_ADD,
            priority=flow.priority,
            buffer_id=ofp.OFP_NO_BUFFER,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            flags=0,
            match=match,
            instructions=actions_to_instructions(dp, flow.actions),
        )
    return parser.OFPFlowMod(
        dp,
        cookie=0,
        cookie_mask=0,
        table_id=flow.table.number,
        command=ofp.OFPFC_DELETE_STRICT,
        priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        flags=0,
        match=match,
        instructions=[],
    )


def flow_from_entry(dp: DatapathLike, entry: Any) -> Flow:
    """Return the Flow (checked=False) of a flow read back from a switch.

    `entry` is an OF1.5 `OFPFlowDesc` (flow-desc reply), an OF1.3 `OFPFlowStats` (flow-stats
    reply) or an `OFPFlowMod`: anything with table_id, priority, cookie, match, instructions.
    Raises OfMsgError if the match cannot be represented at all.
    """
    try:
        return Flow(
            _table_for(entry.table_id),
            entry.priority,
            match_from_oxm(entry.match._fields2),
            actions_from_instructions(dp, entry.instructions or ()),
            entry.cookie,
            checked=False,
        )
    except (ValueError, KeyError) as exc:
        if isinstance(exc, OfMsgError):
            raise
        raise OfMsgError(f"cannot read flow back: {exc}") from None


def installed_flowset(dp: DatapathLike, entries: Iterable[Any]) -> FlowSet:
    """Return the FlowSet of flows read back from a switch (all multipart reply bodies).

    An entry that cannot be represented is logged and left out.
    """
    by_key: dict[FlowKey, Flow] = {}
    for entry in entries:
        try:
            flow = flow_from_entry(dp, entry)
        except OfMsgError as exc:
            log.warning("ignoring a flow read back from the switch: %s", exc)
            continue
        by_key[flow.key] = flow
    return FlowSet(by_key)


def flow_desc_request(dp: DatapathLike) -> Any:
    """Return the request that reads every flow back: OF1.5 flow-desc, or OF1.3 flow-stats."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    cls = getattr(parser, "OFPFlowDescStatsRequest", None) or parser.OFPFlowStatsRequest
    return cls(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch())


# ---- fast encoding -------------------------------------------------------------------------

_MEMO_LIMIT = 100_000
_MATCH_HEAD = struct.Struct("!HH")
_PAD = tuple(bytes(i) for i in range(8))
_NO_CODEC: Any = object()
_SET_FIELD_HEAD = struct.Struct("!HH")  # OFPAT_SET_FIELD type, length


class FlowModEncoder:
    """Builds flow-mod bytes identical to os-ken's, several times faster, from memoized pieces.

    Building an os-ken OFPFlowMod and serializing it costs ~70-150 microseconds. This encoder
    asks os-ken only for the pieces it has not seen (one match field with one value, one
    action) and assembles the message itself: the fixed flow-mod fields, the OXM match (fields
    in os-ken's order, padded to 8 bytes) and the instructions. Pieces repeat a lot within
    and across nodes (protocols, ports, gateway MACs, goto_table), so a cold flow costs a
    fraction of the os-ken path. Byte equality with os-ken is tested for every compiled flow.
    The memos are bounded (cleared when full); safe to share between threads (a race only
    computes a piece twice).
    """

    def __init__(self, dp: DatapathLike) -> None:
        self._dp = dp
        ofp = dp.ofproto
        self._version = int(ofp.OFP_VERSION)
        self._fixed = struct.Struct("!BBHI" + ofp.OFP_FLOW_MOD_PACK_STR0[1:])
        self._importance = self._version >= OF15  # OF1.5 has `importance` where 1.3 has a pad
        self._tlvs: dict[tuple[str, object, bool], tuple[int, bytes]] = {}
        self._actions: dict[Action, bytes] = {}
        self._field_info: dict[str, tuple[Any, Any] | None] = {}
        self._codecs: dict[str, Callable[[str], tuple[int, bytes] | None] | None] = {}
        self._proto_pieces: dict[str, tuple[tuple[int, bytes], ...]] = {}
        self._add = int(ofp.OFPFC_ADD)
        self._delete_strict = int(ofp.OFPFC_DELETE_STRICT)

    def _tlv(self, name: str, value: object, *, normalize: bool = True) -> tuple[int, bytes]:
        """Return (os-ken's sort key, TLV bytes) of one OXM field with its (value[, mask])."""
        key = (name, value, normalize)
        piece = self._tlvs.get(key)
        if piece is None:
            piece = self._own_tlv(name, value) or self._os_ken_tlv(name, value, normalize)
            if len(self._tlvs) >= _MEMO_LIMIT:
                self._tlvs.clear()
            self._tlvs[key] = piece
        return piece

    def _own_tlv(self, name: str, value: object) -> tuple[int, bytes] | None:
        # The common field types, encoded here; None sends anything else to os-ken.
        info = self._info(name)
        if info is None:
            return None
        n, desc = info
        if isinstance(n, tuple):  # experimenter OXM: let os-ken frame it
            return None
        raw, mask = value if isinstance(value, tuple) else (value, None)
        v = _encode_value(desc, raw)
        m = _encode_value(desc, mask) if mask is not None else b""
        if v is None or m is None:
            return None
        if m:
            v = bytes(a & b for a, b in zip(v, m, strict=True))  # as OFPMatch normalizes
            return n, struct.pack("!I", (n << 9) | (1 << 8) | (2 * len(v))) + v + m
        return n, struct.pack("!I", (n << 9) | len(v)) + v

    def _os_ken_tlv(self, name: str, value: object, normalize: bool) -> tuple[int, bytes]:
        ofp = self._dp.ofproto
        # The same steps as OFPMatch: normalize (apply the mask), encode, serialize.
        k, uv = ofp.oxm_normalize_user(name, value) if normalize else (name, value)
        n, v, m = ofp.oxm_from_user(k, uv)
        buf = bytearray()
        ofp.oxm_serialize(n, v, m, buf, 0)
        return (n[0] if isinstance(n, tuple) else n), bytes(buf)

    def match(self, match: Match) -> bytes:
        """Return the ofp_match bytes (OXM, padded to 8) of `match`. Raises OfMsgError.

        Fast path: each field through a codec made once per field name (MACs, IPv4 addresses
        and prefixes, integers, registers), the proto's eth_type/ip_proto memoized. A field
        without a codec (L4 ports, whose OXM depends on the proto; masked MACs; foreign
        fields) sends the whole match down the general path below.
        """
        pieces: list[tuple[int, bytes]] = []
        codecs = self._codecs
        for name, value in match.fields:
            if name == "proto":
                got = self._proto_pieces.get(value)
                if got is None:
                    got = tuple(self._oxm_pieces(Match((("proto", value),))))
                    self._proto_pieces[value] = got
                pieces.extend(got)
                continue
            codec = codecs.get(name, _NO_CODEC)
            if codec is _NO_CODEC:
                codec = codecs[name] = self._codec(name)
            piece = codec(value) if codec is not None else None
            if piece is None:
                return self._match_slow(match)
            pieces.append(piece)
        pieces.sort()
        body = b"".join([tlv for _, tlv in pieces])
        length = 4 + len(body)
        return _MATCH_HEAD.pack(1, length) + body + _PAD[-length % 8]

    def _codec(self, name: str) -> Callable[[str], tuple[int, bytes] | None] | None:
        """Return a function encoding our match field `name`'s value as (sort key, TLV), or None.

        The function returns None for a value it does not handle (the general path does).
        """
        if name in _MATCH_MAC:
            osken, kind = _MATCH_MAC[name], "mac"
        elif name in _MATCH_IP:
            osken, kind = _MATCH_IP[name], "ipv4"
        elif name in ("nw_src", "nw_dst"):
            osken, kind = "ipv4_" + name[3:], "ipv4"
        elif name in _MATCH_INT:
            osken, kind = _MATCH_INT[name], "int"
        elif name in _MATCH_HEX:
            osken, kind = _MATCH_HEX[name], "hex"
        else:
            return None
        info = self._info(osken)
        if info is None or isinstance(info[0], tuple):
            return None
        n, desc = info
        if kind == "mac" and desc is type_desc.MacAddr:
            head = struct.pack("!I", (n << 9) | 6)

            def mac(value: str) -> tuple[int, bytes] | None:
                if len(value) != 17:
                    return None  # masked, or not a plain MAC
                try:
                    return n, head + bytes.fromhex(value.replace(":", ""))
                except ValueError:
                    return None

            return mac
        if kind == "ipv4" and desc is type_desc.IPv4Addr:
            head = struct.pack("!I", (n << 9) | 4)
            head_masked = struct.pack("!I", (n << 9) | (1 << 8) | 8)
            inet_pton, af_inet = socket.inet_pton, socket.AF_INET

            def ipv4(value: str) -> tuple[int, bytes] | None:
                address, slash, prefix = value.partition("/")
                try:
                    packed = inet_pton(af_inet, address)
                    if not slash:
                        return n, head + packed
                    bits = int(prefix) if prefix.isdigit() else -1
                except (OSError, ValueError):
                    return None
                if not 0 <= bits <= 32:
                    return None
                if bits == 32:
                    return n, head + packed
                mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
                network = int.from_bytes(packed, "big") & mask
                return n, head_masked + network.to_bytes(4, "big") + mask.to_bytes(4, "big")

            return ipv4
        if kind in ("int", "hex") and isinstance(desc, type_desc.IntDescr):
            size: int = desc.size
            full = (1 << (8 * size)) - 1
            head = struct.pack("!I", (n << 9) | size)
            head_masked = struct.pack("!I", (n << 9) | (1 << 8) | (2 * size))

            def integer(value: str) -> tuple[int, bytes] | None:
                text, slash, mask_text = value.partition("/")
                try:
                    number = int(text, 0)
                    if not slash:
                        return n, head + (number & full).to_bytes(size, "big")
                    if kind != "hex":
                        return None
                    mask = int(mask_text, 0) & full
                except ValueError:
                    return None
                return n, head_masked + (number & mask).to_bytes(size, "big") + mask.to_bytes(size, "big")

            return integer
        return None

    def _info(self, name: str) -> tuple[Any, Any] | None:
        if name in self._field_info:
            return self._field_info[name]
        try:
            info: tuple[Any, Any] | None = self._dp.ofproto.oxm_get_field_info_by_name(name)
        except KeyError:
            info = None
        self._field_info[name] = info
        return info

    def _oxm_pieces(self, match: Match) -> list[tuple[int, bytes]]:
        try:
            return sorted(self._tlv(k, _hashable(v)) for k, v in match_to_oxm(match).items())
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, OfMsgError):
                raise
            raise OfMsgError(f"cannot encode match {match.render()!r}: {exc}") from None

    def _match_slow(self, match: Match) -> bytes:
        try:
            pieces = sorted(self._tlv(k, _hashable(v)) for k, v in match_to_oxm(match).items())
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, OfMsgError):
                raise
            raise OfMsgError(f"cannot encode match {match.render()!r}: {exc}") from None
        body = b"".join(tlv for _, tlv in pieces)
        length = 4 + len(body)
        return struct.pack("!HH", 1, length) + body + bytes(-length % 8)  # OFPMT_OXM

    def _action(self, action: Action) -> bytes:
        data = self._actions.get(action)
        if data is None:
            data = self._own_action(action)
            if data is None:
                buf = bytearray()
                _action_to_osken(self._dp, action).serialize(buf, 0)
                data = bytes(buf)
            if len(self._actions) >= _MEMO_LIMIT:
                self._actions.clear()
            self._actions[action] = data
        return data

    def _own_action(self, action: Action) -> bytes | None:
        # The per-pod actions (set_field of MACs and IPs, register loads, output) are encoded
        # here; the rest (shared pipeline actions) is memoized from os-ken.
        if isinstance(action, Output):
            return struct.pack("!HHIH6x", 0, 16, action.port, 0)  # OFPAT_OUTPUT, max_len 0
        if isinstance(action, SetField) and action.name in _SET_FIELD:
            field_value = _set_field_value(action.name, action.value)
            return self._set_field(_SET_FIELD[action.name], field_value)
        if isinstance(action, LoadReg) and self._version >= OF15:
            f = action.reg_field
            shifted = action.value << f.start
            return self._set_field(f.ovs_name, shifted if f.width == 32 else (shifted, f.mask))
        return None

    def _set_field(self, name: str, value: object) -> bytes:
        # OFPAT_SET_FIELD: type, len, one OXM TLV (os-ken does not normalize it), zero-padded to 8.
        # The whole action is memoized by `_action`; its TLV need not be memoized again.
        _, tlv = self._own_tlv(name, value) or self._os_ken_tlv(name, value, False)
        length = 4 + len(tlv)
        return struct.pack("!HH", 25, length + (-length % 8)) + tlv + bytes(-length % 8)

    def instructions(self, actions: tuple[Action, ...]) -> bytes:
        """Return the instruction bytes: apply-actions (if any), then goto_table (if any)."""
        apply: list[bytes] = []
        goto = b""
        codecs = self._codecs
        for action in actions:
            if goto:
                raise OfMsgError("goto_table must be the last action")
            kind = type(action)
            if kind is GotoTable:
                assert isinstance(action, GotoTable)
                goto = struct.pack("!HHB3x", 1, 8, table(action.table).number)  # OFPIT_GOTO_TABLE
                continue
            if kind is SetField:
                # Per-pod values (MACs, addresses): straight through the field's codec, not
                # through a memo that would only ever miss for them.
                assert isinstance(action, SetField)
                name, value = action.name, action.value
                if name in _SET_FIELD and name not in _SET_FIELD_INT and "/" not in value:
                    codec = codecs.get(name, _NO_CODEC)
                    if codec is _NO_CODEC:
                        codec = codecs[name] = self._codec(name)
                    piece = codec(value) if codec is not None else None
                    if piece is not None:
                        tlv = piece[1]
                        pad = -(4 + len(tlv)) % 8
                        apply.append(_SET_FIELD_HEAD.pack(25, 4 + len(tlv) + pad) + tlv + _PAD[pad])
                        continue
            apply.append(self._action(action))
        if not apply:
            return goto
        body = b"".join(apply)
        return struct.pack("!HH4x", 4, 8 + len(body)) + body + goto  # OFPIT_APPLY_ACTIONS

    def encode(self, flow: Flow, command: Command, xid: int = 0) -> bytes:
        """Return the flow-mod bytes `serialize(flow_mod(dp, flow, command))` would give."""
        match = self.match(flow.match)
        if command is Command.ADD:
            tail = match + self.instructions(flow.actions)
            cookie, ofpfc = flow.cookie, self._add
        else:
            tail, cookie, ofpfc = match, 0, self._delete_strict
        fields = [
            self._version, 14, self._fixed.size + len(tail), xid,  # OFPT_FLOW_MOD
            cookie, 0, flow.table.number, ofpfc, 0, 0, flow.priority,
            0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0,  # no buffer, out_port/out_group ANY, flags
        ]  # fmt: skip
        if self._importance:
            fields.append(0)
        return self._fixed.pack(*fields) + tail


def _encode_value(desc: Any, value: object) -> bytes | None:
    """Return `value` as os-ken's type descriptor `desc` would encode it, or None to defer."""
    try:
        if isinstance(desc, type_desc.IntDescr) and isinstance(value, int):
            size: int = desc.size
            return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
        if desc is type_desc.MacAddr and isinstance(value, str):
            packed = bytes.fromhex(value.replace(":", ""))
            return packed if len(packed) == 6 else None
        if desc is type_desc.IPv4Addr and isinstance(value, str):
            return socket.inet_pton(socket.AF_INET, value)  # strict dotted quad, C speed
        if desc is type_desc.IPv6Addr and isinstance(value, str):
            return socket.inet_pton(socket.AF_INET6, value)
    except (ValueError, OSError):
        return None
    return None


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


# ---- bytes ---------------------------------------------------------------------------------


def serialize(msg: Any) -> bytes:
    """Return the wire bytes of an os-ken message (its xid, or 0 if it has none)."""
    msg.serialize()
    return bytes(msg.buf)


def parse(dp: DatapathLike, data: bytes) -> Any:
    """Return the os-ken message parsed from one OpenFlow message's bytes. Raises OfMsgError."""
    if len(data) < _HEADER.size:
        raise OfMsgError("truncated OpenFlow header")
    version, msg_type, length, xid = _HEADER.unpack_from(data)
    if length != len(data):
        raise OfMsgError(f"message length {length} but {len(data)} bytes")
    msg = ofproto_parser.msg(dp, version, msg_type, length, xid, data)
    if msg is None:
        raise OfMsgError(f"os-ken could not parse message type {msg_type}")
    return msg


def with_xid(data: bytes, xid: int) -> bytes:
    """Return a copy of one message's bytes with its header xid replaced."""
    return data[:4] + struct.pack("!I", xid) + data[8:]


def bundle_add(data: bytes, *, xid: int, bundle_id: int, flags: int) -> bytes:
    """Return an OFPT_BUNDLE_ADD_MESSAGE wrapping one pre-serialized message `data`.

    Layout (OpenFlow 1.4+): ofp_header | bundle_id(4) | pad(2) | flags(2) | message, without
    properties. The inner message's xid is set to the outer `xid`: the spec requires it and OVS
    refuses a mismatch with OFPBFC_MSG_BAD_XID. `flags` must equal those the bundle was opened
    with (OVS answers OFPBFC_BAD_FLAGS otherwise). Raises OfMsgError for an OpenFlow 1.3 message.
    """
    version = data[0]
    if version < 5:
        raise OfMsgError("bundles need OpenFlow 1.4 or later")
    total = _BUNDLE_ADD.size + len(data)
    head = _BUNDLE_ADD.pack(version, OFPT_BUNDLE_ADD_MESSAGE, total, xid, bundle_id, 0, flags)
    return b"".join((head, data[:4], struct.pack("!I", xid), data[8:]))


class BundleCtrl(enum.IntEnum):
    """OFPBCT_* request types of OFPT_BUNDLE_CONTROL."""

    OPEN_REQUEST = 0
    OPEN_REPLY = 1
    CLOSE_REQUEST = 2
    CLOSE_REPLY = 3
    COMMIT_REQUEST = 4
    COMMIT_REPLY = 5
    DISCARD_REQUEST = 6
    DISCARD_REPLY = 7


OFPBF_ATOMIC = 1
OFPBF_ORDERED = 2


def bundle_ctrl(version: int, ctrl: BundleCtrl, *, xid: int, bundle_id: int, flags: int) -> bytes:
    """Return an OFPT_BUNDLE_CONTROL message (no properties). Raises OfMsgError below 1.4."""
    if version < 5:
        raise OfMsgError("bundles need OpenFlow 1.4 or later")
    return _BUNDLE_CTRL.pack(
        version, OFPT_BUNDLE_CONTROL, _BUNDLE_CTRL.size, xid, bundle_id, int(ctrl), flags
    )


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a FlowModCache."""

    hits: int
    misses: int
    size: int


class FlowModCache:
    """Serialized flow-mods keyed by (command, flow), least recently used evicted beyond `max_entries`.

    Flows repeat across nodes (pipeline defaults, remote gateway ARP) and across pushes
    (reconnects, failover, resyncs), so each distinct one is encoded once (by FlowModEncoder,
    itself much cheaper than os-ken). The bytes carry xid 0: `bundle_add` or
    `with_xid` set the real one. One cache serves one OpenFlow version. Thread-safe.

    A flow a switch no longer holds (its pod is gone, or it was replaced) is dropped with
    `forget` once the switch has committed the change; the LRU bound only catches what is
    never forgotten. Without that, every pod ever created kept its flows here, with their
    bytes (~7 kB per pod), until the bound (~700 bytes per entry: 140 MB at 200,000) was reached.
    """

    def __init__(self, dp: DatapathLike, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._dp = dp
        self._encoder = FlowModEncoder(dp)
        self._max = max_entries
        self._lock = threading.Lock()
        # Keyed by the flow itself for ADD (nearly every entry: no extra tuple per flow kept
        # alive for the garbage collector to walk), by (command, flow) for DELETE_STRICT.
        self._entries: OrderedDict[Flow | tuple[Command, Flow], bytes] = OrderedDict()
        self._hits = 0
        self._misses = 0

    @property
    def version(self) -> int:
        """Return the OpenFlow version the cached bytes are in."""
        return int(self._dp.ofproto.OFP_VERSION)

    def get(self, command: Command, flow: Flow) -> bytes:
        """Return the flow-mod bytes (xid 0) for `command` on `flow`. Raises OfMsgError."""
        key: Flow | tuple[Command, Flow] = flow if command is Command.ADD else (command, flow)
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return data
            self._misses += 1
        data = self._encoder.encode(flow, command)
        with self._lock:
            self._entries[key] = data
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return data

    def get_many(self, command: Command, flows: Sequence[Flow]) -> list[bytes]:
        """Return the flow-mod bytes (xid 0) of `command` on each flow, in order. Raises OfMsgError.

        The same as `get` for each, with the lock taken twice per call rather than per flow.
        """
        entries = self._entries
        keys: Sequence[Flow | tuple[Command, Flow]] = (
            flows if command is Command.ADD else [(command, f) for f in flows]
        )
        out: list[bytes] = []
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                data = entries.get(key)
                if data is None:
                    missing.append(i)
                    out.append(b"")
                else:
                    entries.move_to_end(key)
                    out.append(data)
            self._hits += len(keys) - len(missing)
            self._misses += len(missing)
        if missing:
            encode = self._encoder.encode
            made = [(i, encode(flows[i], command)) for i in missing]
            with self._lock:
                for i, data in made:
                    entries[keys[i]] = data
                    out[i] = data
                while len(entries) > self._max:
                    entries.popitem(last=False)
        return out

    def forget(self, flows: Iterable[Flow]) -> None:
        """Drop the cached flow-mods (both commands) of `flows`, which a switch no longer holds.

        A flow another switch still holds is encoded again the next time it is pushed there.
        """
        entries = self._entries
        with self._lock:
            for flow in flows:
                entries.pop(flow, None)
                entries.pop((Command.DELETE_STRICT, flow), None)

    def stats(self) -> CacheStats:
        """Return hit and miss counts and the number of cached flow-mods."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._entries))

    def clear(self) -> None:
        """Drop every cached flow-mod (counters are kept)."""
        with self._lock:
            self._entries.clear()


def barrier_request(version: int, *, xid: int) -> bytes:
    """Return an OFPT_BARRIER_REQUEST (OpenFlow 1.3+: message type 20, header only)."""
    return _HEADER.pack(version, OFPT_BARRIER_REQUEST, _HEADER.size, xid)


@dataclass(frozen=True, slots=True)
class BundleMessages:
    """A plan as the messages of one atomic bundle, with the xid of each.

    Send `open` and wait for its reply; send `adds` and `barrier`, and wait for the barrier
    reply; then send `commit` if no error came back, `discard` otherwise, and wait for that
    reply. The barrier matters: OVS rejects a bad flow-mod when it is *added* to the bundle
    (the error quotes that bundle-add's xid) and would still commit the rest, so a commit must
    only follow a clean barrier. `flows_by_xid` maps each bundle-add's xid to the (command,
    flow) it carries, so an error names the flow that caused it.
    """

    bundle_id: int
    flags: int
    open: bytes
    adds: tuple[bytes, ...]
    barrier: bytes
    commit: bytes
    discard: bytes
    flows_by_xid: Mapping[int, tuple[Command, Flow]]
    open_xid: int
    barrier_xid: int
    commit_xid: int
    discard_xid: int


def bundle_messages(
    cache: FlowModCache,
    deletes: Iterable[Flow],
    adds: Iterable[Flow],
    *,
    bundle_id: int,
    first_xid: int,
    flags: int = OFPBF_ATOMIC | OFPBF_ORDERED,
) -> BundleMessages:
    """Return the bundle that deletes `deletes` (strictly) and then adds `adds`, in that order.

    Deletes go first so that a re-keyed flow never coexists with its successor (the same
    order as `flows.ofctl.render_plan`). Xids are consecutive from `first_xid`: open, one per
    flow-mod, barrier, commit, discard. Raises OfMsgError if a flow cannot be sent.
    """
    version = cache.version
    xids = _xids(first_xid)
    open_xid = next(xids)
    messages: list[bytes] = []
    by_xid: dict[int, tuple[Command, Flow]] = {}
    for command, flows in ((Command.DELETE_STRICT, deletes), (Command.ADD, adds)):
        for flow in flows:
            xid = next(xids)
            data = cache.get(command, flow)
            messages.append(bundle_add(data, xid=xid, bundle_id=bundle_id, flags=flags))
            by_xid[xid] = (command, flow)
    barrier_xid, commit_xid, discard_xid = next(xids), next(xids), next(xids)

    def ctrl(kind: BundleCtrl, xid: int) -> bytes:
        return bundle_ctrl(version, kind, xid=xid, bundle_id=bundle_id, flags=flags)

    return BundleMessages(
        bundle_id=bundle_id,
        flags=flags,
        open=ctrl(BundleCtrl.OPEN_REQUEST, open_xid),
        adds=tuple(messages),
        barrier=barrier_request(version, xid=barrier_xid),
        commit=ctrl(BundleCtrl.COMMIT_REQUEST, commit_xid),
        discard=ctrl(BundleCtrl.DISCARD_REQUEST, discard_xid),
        flows_by_xid=by_xid,
        open_xid=open_xid,
        barrier_xid=barrier_xid,
        commit_xid=commit_xid,
        discard_xid=discard_xid,
    )


class _XidMap(Mapping[int, tuple[Command, Flow]]):
    """xid -> (command, flow) of a bundle's flow-mods, computed from the position (no dict)."""

    def __init__(self, first: int, deletes: tuple[Flow, ...], adds: tuple[Flow, ...]) -> None:
        self._first, self._deletes, self._adds = first, deletes, adds

    def __getitem__(self, xid: int) -> tuple[Command, Flow]:
        if not isinstance(xid, int):
            raise KeyError(xid)
        i = (xid - self._first) & 0xFFFFFFFF
        if i < len(self._deletes):
            return Command.DELETE_STRICT, self._deletes[i]
        if i < len(self._deletes) + len(self._adds):
            return Command.ADD, self._adds[i - len(self._deletes)]
        raise KeyError(xid)

    def __iter__(self) -> Iterator[int]:
        for i in range(len(self)):
            yield (self._first + i) & 0xFFFFFFFF

    def __len__(self) -> int:
        return len(self._deletes) + len(self._adds)

    def __contains__(self, xid: object) -> bool:
        return isinstance(xid, int) and (xid - self._first) & 0xFFFFFFFF < len(self)


@dataclass(frozen=True, slots=True)
class BundlePlan:
    """A plan as one atomic bundle whose flow-mods are encoded slice by slice, while sending.

    The same messages and xids as `bundle_messages`, but the bundle-adds are not built up
    front: `encode(cache, start, stop)` returns those of flow-mods [start, stop) (deletes
    first, then adds) joined, so a session can hand one slice to the socket (and the switch
    can start applying it) while it encodes the next. The protocol is the one
    `BundleMessages` describes; the flow-mods' xids are consecutive from `first_mod_xid`.
    """

    bundle_id: int
    flags: int
    deletes: tuple[Flow, ...]
    adds: tuple[Flow, ...]
    first_mod_xid: int
    open: bytes
    barrier: bytes
    commit: bytes
    discard: bytes
    flows_by_xid: Mapping[int, tuple[Command, Flow]]
    open_xid: int
    barrier_xid: int
    commit_xid: int
    discard_xid: int

    @property
    def count(self) -> int:
        """Return the number of flow-mods."""
        return len(self.deletes) + len(self.adds)

    def encode(self, cache: FlowModCache, start: int, stop: int) -> bytes:
        """Return the bundle-add messages of flow-mods [start, stop), joined. Raises OfMsgError."""
        version = cache.version
        if version < 5:
            raise OfMsgError("bundles need OpenFlow 1.4 or later")
        split = len(self.deletes)
        stop = min(stop, self.count)
        datas: list[bytes] = []
        if start < split:
            datas += cache.get_many(Command.DELETE_STRICT, self.deletes[start : min(stop, split)])
        if stop > split:
            datas += cache.get_many(Command.ADD, self.adds[max(start, split) - split : stop - split])
        xid = self.first_mod_xid + start
        out: list[bytes] = []
        pack_head, pack_xid = _BUNDLE_ADD.pack, _XID.pack
        bundle_id, flags = self.bundle_id, self.flags
        for data in datas:
            # bundle_add(), inlined: this loop runs once per flow-mod of every push.
            xid &= 0xFFFFFFFF
            size = _BUNDLE_ADD.size + len(data)
            out += (
                pack_head(version, OFPT_BUNDLE_ADD_MESSAGE, size, xid, bundle_id, 0, flags),
                data[:4],
                pack_xid(xid),
                data[8:],
            )
            xid += 1
        return b"".join(out)


def bundle_plan(
    version: int,
    deletes: Iterable[Flow],
    adds: Iterable[Flow],
    *,
    bundle_id: int,
    first_xid: int,
    flags: int = OFPBF_ATOMIC | OFPBF_ORDERED,
) -> BundlePlan:
    """Return the BundlePlan deleting `deletes` (strictly) and then adding `adds`.

    Xids are consecutive from `first_xid` (modulo 2**32): open, one per flow-mod, barrier,
    commit, discard, exactly as `bundle_messages` numbers them. Raises OfMsgError below 1.4.
    """
    dels, news = tuple(deletes), tuple(adds)
    first = first_xid & 0xFFFFFFFF
    first_mod = (first + 1) & 0xFFFFFFFF
    after = first + 1 + len(dels) + len(news)
    barrier_xid, commit_xid, discard_xid = (x & 0xFFFFFFFF for x in (after, after + 1, after + 2))

    def ctrl(kind: BundleCtrl, xid: int) -> bytes:
        return bundle_ctrl(version, kind, xid=xid, bundle_id=bundle_id, flags=flags)

    return BundlePlan(
        bundle_id=bundle_id,
        flags=flags,
        deletes=dels,
        adds=news,
        first_mod_xid=first_mod,
        open=ctrl(BundleCtrl.OPEN_REQUEST, first),
        barrier=barrier_request(version, xid=barrier_xid),
        commit=ctrl(BundleCtrl.COMMIT_REQUEST, commit_xid),
        discard=ctrl(BundleCtrl.DISCARD_REQUEST, discard_xid),
        flows_by_xid=_XidMap(first_mod, dels, news),
        open_xid=first,
        barrier_xid=barrier_xid,
        commit_xid=commit_xid,
        discard_xid=discard_xid,
    )


def _xids(first: int) -> Iterator[int]:
    xid = first & 0xFFFFFFFF
    while True:
        yield xid
        xid = (xid + 1) & 0xFFFFFFFF
