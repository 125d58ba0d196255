"""FlowSet: a node's flows keyed by (table, priority, match); two different flows on one key is an error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from flows.model import Flow, FlowKey


class FlowConflictError(ValueError):
    """Two different flows were given the same (table, priority, match)."""


@dataclass(frozen=True, slots=True)
class FlowSet:
    """An immutable set of flows with unique keys. Build it with `FlowSet.of(flows)`."""

    by_key: dict[FlowKey, Flow] = field(default_factory=dict)

    @staticmethod
    def of(flows: Iterable[Flow]) -> FlowSet:
        """Return a FlowSet of `flows`; an exact duplicate is kept once.

        Raises FlowConflictError when two flows share a key but differ (actions or cookie):
        OpenFlow would keep only one of them, silently.
        """
        by_key: dict[FlowKey, Flow] = {}
        for flow in flows:
            existing = by_key.get(flow.key)
            if existing is not None and existing != flow:
                raise FlowConflictError(
                    f"two flows for table={flow.table.name} priority={flow.priority} "
                    f"match={flow.match.render() or '(any)'}:\n  {existing.render()}\n  {flow.render()}"
                )
            by_key[flow.key] = flow
        return FlowSet(by_key)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.by_key.values())

    def __len__(self) -> int:
        return len(self.by_key)

    def __contains__(self, flow: object) -> bool:
        return isinstance(flow, Flow) and self.by_key.get(flow.key) == flow

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlowSet) and self.by_key == other.by_key

    def __hash__(self) -> int:
        return hash(frozenset(self.by_key.values()))

    def sorted(self) -> list[Flow]:
        """Return the flows in pipeline order: table, then descending priority, then match text."""
        return sorted(self, key=lambda f: (f.table.number, -f.priority, f.match.render()))

    def with_cookie(self, cookie: int) -> list[Flow]:
        """Return the flows whose cookie is `cookie`, in pipeline order."""
        return [f for f in self.sorted() if f.cookie == cookie]
