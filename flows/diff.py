"""The difference between what a switch holds and what it should hold, as a plan of strict flow-mods."""

from __future__ import annotations

from dataclasses import dataclass

from flows.flowset import FlowSet
from flows.model import Flow


@dataclass(frozen=True, slots=True)
class Plan:
    """Flow-mods that turn one FlowSet into another.

    `adds` are new keys; `modifies` replace the flow at an existing key (new actions or cookie);
    `deletes` remove exactly one key each (a strict delete: never a wildcard).
    """

    adds: tuple[Flow, ...]
    modifies: tuple[Flow, ...]
    deletes: tuple[Flow, ...]

    def __len__(self) -> int:
        return len(self.adds) + len(self.modifies) + len(self.deletes)

    @property
    def empty(self) -> bool:
        """Return True when the plan changes nothing."""
        return len(self) == 0

    def summary(self) -> str:
        """Return `+adds ~modifies -deletes`, for log lines."""
        return f"+{len(self.adds)} ~{len(self.modifies)} -{len(self.deletes)}"


def _order(flows: list[Flow]) -> tuple[Flow, ...]:
    return tuple(sorted(flows, key=lambda f: (f.table.number, -f.priority, f.match.render())))


def diff(installed: FlowSet, desired: FlowSet) -> Plan:
    """Return the plan that turns `installed` into `desired` (keys compared, then contents)."""
    adds: list[Flow] = []
    modifies: list[Flow] = []
    for key, flow in desired.by_key.items():
        have = installed.by_key.get(key)
        if have is None:
            adds.append(flow)
        elif have != flow:
            modifies.append(flow)
    deletes = [f for k, f in installed.by_key.items() if k not in desired.by_key]
    return Plan(_order(adds), _order(modifies), _order(deletes))


def apply(installed: FlowSet, plan: Plan) -> FlowSet:
    """Return what a switch holding `installed` holds after executing `plan`.

    This is the model the diff is tested against: OpenFlow's strict delete removes one key,
    and an add or modify on an existing key replaces that flow.
    """
    by_key = dict(installed.by_key)
    for flow in plan.deletes:
        by_key.pop(flow.key, None)
    for flow in (*plan.adds, *plan.modifies):
        by_key[flow.key] = flow
    return FlowSet(by_key)
