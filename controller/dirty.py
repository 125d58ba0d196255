"""DirtySet: the work queue of nodes whose flows must be recompiled (events mark, workers take).

Level-triggered: a mark says only "look at this node again"; the worker recompiles it from the
current snapshot, so any number of marks before a take cost one recompile. A node is never
handed to two workers at once: marked while being processed, it is handed out again after
`done` (the client-go workqueue discipline).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class DirtySet:
    """A thread-safe FIFO set of dirty node names with in-flight tracking."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: dict[str, None] = {}  # dirty and not in flight, in marking order
        self._in_flight: set[str] = set()
        self._again: set[str] = set()  # marked while in flight
        self._closed = False

    def mark(self, nodes: Iterable[str]) -> None:
        """Mark `nodes` dirty; a node already waiting keeps its place in the queue."""
        with self._cond:
            added = False
            for node in nodes:
                if node in self._in_flight:
                    self._again.add(node)
                elif node not in self._queue:
                    self._queue[node] = None
                    added = True
            if added:
                self._cond.notify_all()

    def take(self, timeout: float | None = None) -> str | None:
        """Return the longest-waiting dirty node and mark it in flight; call `done` after.

        Blocks until a node is dirty; returns None after `timeout` seconds (None: no limit)
        or once the set is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            node = next(iter(self._queue))
            del self._queue[node]
            self._in_flight.add(node)
            return node

    def done(self, node: str) -> None:
        """Finish `node`; if it was marked meanwhile, it is queued again. Raises ValueError
        if `node` was not taken."""
        with self._cond:
            if node not in self._in_flight:
                raise ValueError(f"node {node!r} is not in flight")
            self._in_flight.discard(node)
            if node in self._again:
                self._again.discard(node)
                self._queue[node] = None
                self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting `take` (they return None) and refuse further takes."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def pending(self) -> frozenset[str]:
        """Return the nodes waiting to be taken (including those to be redone after `done`)."""
        with self._cond:
            return frozenset(self._queue) | frozenset(self._again)

    def in_flight(self) -> frozenset[str]:
        """Return the nodes taken and not yet done."""
        with self._cond:
            return frozenset(self._in_flight)

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._again)
