"""ovs-ofctl text: render flows and plans to it, and parse `dump-flows` output back into Flows.

The parser understands what OVS 3.x prints for OpenFlow 1.3 and 1.5 dumps (for example a
register write prints as `load:0x1->NXM_NX_REG0[0..3]` in 1.3 and `set_field:0x1/0xf->reg0` in
1.5) and normalizes both to the same value, so a bridge's real contents compare equal to what
was compiled. Anything it does not model is kept verbatim (RawAction, raw match fields), so a
hand-added flow parses too and shows up in a diff instead of breaking it.
"""

from __future__ import annotations

import re

from flows.diff import Plan
from flows.fields import field_by_bits
from flows.flowset import FlowSet
from flows.model import (
    PROTOCOLS,
    Action,
    Ct,
    Flow,
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
    normalize_field,
)
from flows.tables import Table, table, table_by_number


class ParseError(ValueError):
    """A dump-flows line could not be read; the message quotes the line."""


DEFAULT_PRIORITY = 32768

# Statistics and timers OVS prints before the match; they are not part of a flow's identity.
_STAT_KEYS = frozenset(
    {"duration", "n_packets", "n_bytes", "idle_age", "hard_age", "packet_count", "byte_count"}
)
_FLAG_WORDS = frozenset(
    {"reset_counts", "send_flow_rem", "check_overlap", "no_packet_counts", "no_byte_counts"}
)
_REG_SUBFIELD = re.compile(r"NXM_NX_REG(\d+)\[(?:(\d+)\.\.(\d+)|(\d+))?\]$")
_REG_NAME = re.compile(r"(?:reg|xreg)(\d+)$")


def render_flows(flows: FlowSet | list[Flow]) -> str:
    """Return the flows as an `ovs-ofctl add-flows` file, in pipeline order."""
    ordered = flows.sorted() if isinstance(flows, FlowSet) else flows
    return "".join(f"{f.render()}\n" for f in ordered)


def render_strict_key(flow: Flow) -> str:
    """Return `table=N,priority=P,MATCH`, the argument of a strict delete of exactly this flow."""
    match = flow.match.render()
    return f"table={flow.table.number},priority={flow.priority}" + (f",{match}" if match else "")


def render_plan(plan: Plan) -> str:
    """Return the plan as an `ovs-ofctl --bundle add-flows` file of add and delete_strict lines.

    Deletes come first so that a re-keyed flow never briefly coexists with its successor.
    A modify is an add: OpenFlow replaces the flow with the same table, priority and match.
    """
    lines = [f"delete_strict {render_strict_key(f)}\n" for f in plan.deletes]
    lines += [f"add {f.render()}\n" for f in (*plan.adds, *plan.modifies)]
    return "".join(lines)


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses or brackets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _int(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _parse_load_reg(value_text: str, reg: int, mask: int) -> Action | None:
    if mask == 0:
        return None
    start = (mask & -mask).bit_length() - 1
    end = mask.bit_length() - 1
    if mask != ((1 << (end - start + 1)) - 1) << start:
        return None
    reg_field = field_by_bits(reg, start, end)
    if reg_field is None:
        return None
    return LoadReg(reg_field, (_int(value_text) & mask) >> start)


def _parse_action(text: str) -> Action:
    kind, sep, arg = text.partition(":")
    try:
        if text in ("IN_PORT", "in_port"):
            return InPort()
        if kind == "goto_table" and sep:
            return GotoTable(_table_ref(arg).name)
        if kind == "output" and sep:
            sub = _REG_SUBFIELD.match(arg)
            if sub:
                reg = int(sub.group(1))
                start, end = _subfield_bits(sub)
                reg_field = field_by_bits(reg, start, end)
                return OutputReg(reg_field) if reg_field else RawAction(text)
            return Output(_int(arg))
        if kind == "set_field" and sep:
            value, _, name = arg.rpartition("->")
            reg_name = _REG_NAME.match(name)
            if reg_name:
                val_text, _, mask_text = value.partition("/")
                mask = _int(mask_text) if mask_text else 0xFFFFFFFF
                return _parse_load_reg(val_text, int(reg_name.group(1)), mask) or RawAction(text)
            return SetField(name, value)
        if kind == "load" and sep:
            value, _, dst = arg.rpartition("->")
            sub = _REG_SUBFIELD.match(dst)
            if sub:
                start, end = _subfield_bits(sub)
                mask = ((1 << (end - start + 1)) - 1) << start
                action = _parse_load_reg(hex(_int(value) << start), int(sub.group(1)), mask)
                return action or RawAction(text)
            return RawAction(text)
        if kind == "move" and sep:
            src, _, dst = arg.partition("->")
            return Move(src, dst)
        if kind.startswith("mod_dl_src") and sep:
            return SetField("eth_src", arg)
        if kind.startswith("mod_dl_dst") and sep:
            return SetField("eth_dst", arg)
        if text.startswith("ct(") and text.endswith(")"):
            return _parse_ct(text)
    except (ValueError, KeyError):
        return RawAction(text)
    return RawAction(text)


def _subfield_bits(sub: re.Match[str]) -> tuple[int, int]:
    if sub.group(2) is not None:
        return int(sub.group(2)), int(sub.group(3))
    if sub.group(4) is not None:
        bit = int(sub.group(4))
        return bit, bit
    return 0, 31


def _parse_ct(text: str) -> Action:
    commit = False
    zone: int | None = None
    target: str | None = None
    for arg in _split_top(text[3:-1]):
        if arg == "commit":
            commit = True
        elif arg.startswith("zone="):
            zone = _int(arg[5:])
        elif arg.startswith("table="):
            target = _table_ref(arg[6:]).name
        else:
            return RawAction(text)
    if zone is None:
        return RawAction(text)
    return Ct(zone=zone, commit=commit, table=target)


def _table_ref(text: str) -> Table:
    return table_by_number(int(text)) if text.isdigit() else table(text)


def parse_actions(text: str) -> tuple[Action, ...]:
    """Return the actions of an `actions=` clause (`drop` is the empty tuple)."""
    text = text.strip()
    if text in ("drop", ""):
        return ()
    return tuple(_parse_action(part) for part in _split_top(text))


def parse_flow(line: str) -> Flow:
    """Return the Flow printed on one dump-flows line. Raises ParseError quoting the line.

    The flow is not checked against its table's contract: a switch may hold flows Sluice
    would never build, and those must parse so the diff can remove them.
    """
    head, sep, actions_text = line.strip().partition(" actions=")
    if not sep:
        head, sep, actions_text = line.strip().partition(",actions=")
    if not sep:
        raise ParseError(f"no actions in flow line: {line.strip()!r}")
    cookie = 0
    table_no: Table | None = None
    priority = DEFAULT_PRIORITY
    fields: dict[str, str] = {}
    try:
        for token in _split_top(head.replace(", ", ",")):
            key, has_value, value = token.partition("=")
            if not has_value:
                if token in PROTOCOLS:
                    fields["proto"] = token
                elif token not in _FLAG_WORDS:
                    fields[token] = ""
                continue
            if key in _STAT_KEYS:
                continue
            if key == "cookie":
                cookie = _int(value.split("/")[0])
            elif key == "table":
                table_no = _table_ref(value)
            elif key == "priority":
                priority = int(value)
            else:
                fields[key] = normalize_field(key, value)
        actions = parse_actions(actions_text)
        return Flow(
            table_no if table_no is not None else table_by_number(0),
            priority,
            Match.of(fields),
            actions,
            cookie,
            checked=False,
        )
    except (ValueError, KeyError, FlowValueError) as exc:
        raise ParseError(f"cannot parse flow line {line.strip()!r}: {exc}") from None


def parse_dump(text: str) -> FlowSet:
    """Return the flows of `ovs-ofctl dump-flows` output (header and blank lines are skipped)."""
    flows = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("OFPST_FLOW", "NXST_FLOW")):
            continue
        flows.append(parse_flow(stripped))
    return FlowSet.of(flows)
