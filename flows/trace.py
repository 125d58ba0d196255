"""Reads `ovs-appctl ofproto/trace` output: which tables a packet visited, where it went, how it left."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flows.tables import table_by_number

_STEP = re.compile(r"^\s*(\d+)\.\s+(?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$")
_OUTPUT = re.compile(r"-> output port is (\d+)")


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One flow the packet hit: its table, priority, cookie and the actions printed under it."""

    table: str
    priority: int
    cookie: int
    match: str
    actions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Trace:
    """A parsed trace, across conntrack recirculations (steps of every pass, in order)."""

    steps: tuple[TraceStep, ...]
    output_ports: tuple[int, ...]
    final_flow: dict[str, str]
    datapath_actions: str

    @property
    def tables(self) -> tuple[str, ...]:
        """Return the names of the tables visited, in order."""
        return tuple(s.table for s in self.steps)

    @property
    def dropped(self) -> bool:
        """Return True when the packet left by no port."""
        return self.datapath_actions == "drop"

    @property
    def answered_in_place(self) -> bool:
        """Return True when the last flow sent the packet back out of its in_port."""
        return bool(self.steps) and bool(self.steps[-1].actions) and self.steps[-1].actions[-1] == "IN_PORT"


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for token in text.split(","):
        key, sep, value = token.partition("=")
        out[key.strip()] = value.strip() if sep else ""
    return out


def parse_trace(text: str) -> Trace:
    """Return the Trace of ofproto/trace output; the final flow and actions are the last pass's."""
    steps: list[TraceStep] = []
    outputs: list[int] = []
    final: dict[str, str] = {}
    datapath = ""
    current: TraceStep | None = None
    actions: list[str] = []

    def close() -> None:
        nonlocal current, actions
        if current is not None:
            steps.append(
                TraceStep(current.table, current.priority, current.cookie, current.match, tuple(actions))
            )
        current, actions = None, []

    for line in text.splitlines():
        step = _STEP.match(line)
        if step:
            close()
            number = int(step.group(1))
            try:
                name = table_by_number(number).name
            except KeyError:
                name = f"table{number}"
            current = TraceStep(
                name, int(step.group(3)), int(step.group(4) or "0", 16), step.group(2) or "", ()
            )
            continue
        stripped = line.strip()
        out = _OUTPUT.search(stripped)
        if out:
            outputs.append(int(out.group(1)))
        if stripped.startswith("Final flow:"):
            close()
            rest = stripped[len("Final flow:") :].strip()
            if rest != "unchanged":
                final = _fields(rest)
        elif stripped.startswith("Datapath actions:"):
            datapath = stripped[len("Datapath actions:") :].strip()
        elif (
            current is not None
            and stripped
            and not stripped.startswith("->")
            and not stripped.startswith(">>")
        ):
            actions.append(stripped)
    close()
    return Trace(tuple(steps), tuple(outputs), final, datapath)
