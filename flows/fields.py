"""Named register fields, conntrack zones and the values they carry: the one place they are defined."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegField:
    """Bits `start..end` (inclusive) of NXM register `reg` (reg0..reg15), with a stable name."""

    name: str
    reg: int
    start: int
    end: int
    description: str

    def __post_init__(self) -> None:
        if not 0 <= self.reg <= 15:
            raise ValueError(f"register field {self.name}: reg{self.reg} does not exist")
        if not 0 <= self.start <= self.end <= 31:
            raise ValueError(f"register field {self.name}: bad bit range {self.start}..{self.end}")

    @property
    def width(self) -> int:
        """Return the number of bits in the field."""
        return self.end - self.start + 1

    @property
    def mask(self) -> int:
        """Return the mask of the field's bits within its 32-bit register."""
        return ((1 << self.width) - 1) << self.start

    @property
    def ovs_name(self) -> str:
        """Return the register's name as OVS prints it in matches and set_field (`reg0`)."""
        return f"reg{self.reg}"

    @property
    def nxm(self) -> str:
        """Return the NXM subfield syntax (`NXM_NX_REG0[0..3]`, or `NXM_NX_REG1[]` when whole)."""
        if self.start == 0 and self.end == 31:
            return f"NXM_NX_REG{self.reg}[]"
        return f"NXM_NX_REG{self.reg}[{self.start}..{self.end}]"

    def check(self, value: int) -> int:
        """Return `value` if it fits the field; raise ValueError naming the field otherwise."""
        if not 0 <= value < (1 << self.width):
            raise ValueError(f"value {value} does not fit {self.name} ({self.width} bits)")
        return value


class PacketSource(enum.IntEnum):
    """Where a packet entered br-int; written by the classifier into PKT_SOURCE."""

    POD = 1
    GATEWAY = 2
    TUNNEL = 3


PKT_SOURCE = RegField(
    "pkt_source",
    0,
    0,
    3,
    "where the packet entered br-int (1 pod, 2 gateway, 3 tunnel); set by classifier",
)
OUT_PORT = RegField(
    "out_port",
    1,
    0,
    31,
    "the ofport the packet leaves by; set by l3_forwarding, used by output",
)

REG_FIELDS: tuple[RegField, ...] = (PKT_SOURCE, OUT_PORT)

# One conntrack zone for all pod traffic of a node. OVS's userspace and kernel datapaths keep
# separate connection tables per zone; one zone is enough while every node has one bridge, and a
# high number keeps clear of zones the host's own firewall may use (Antrea uses 65520 too).
POD_CT_ZONE = 65520


def field_by_bits(reg: int, start: int, end: int) -> RegField | None:
    """Return the declared field occupying exactly reg[start..end], or None."""
    for field in REG_FIELDS:
        if (field.reg, field.start, field.end) == (reg, start, end):
            return field
    return None


def _check_no_overlap() -> None:
    seen: dict[int, int] = {}
    for field in REG_FIELDS:
        used = seen.get(field.reg, 0)
        if used & field.mask:
            raise ValueError(f"register field {field.name} overlaps another field in reg{field.reg}")
        seen[field.reg] = used | field.mask


_check_no_overlap()
