"""DirtySet: marks coalesce, a node is never worked on twice at once, a mark during work is not lost."""

from __future__ import annotations

import random
import threading
import time

import pytest

from controller.dirty import DirtySet


def test_marks_coalesce_and_come_out_in_marking_order() -> None:
    dirty = DirtySet()
    dirty.mark(["b", "a"])
    dirty.mark(["b", "c"])
    assert len(dirty) == 3
    taken = [dirty.take(timeout=0), dirty.take(timeout=0), dirty.take(timeout=0)]
    assert taken == ["b", "a", "c"]
    assert dirty.take(timeout=0) is None
    assert dirty.in_flight() == {"a", "b", "c"}


def test_a_node_marked_while_in_flight_comes_back_only_after_done() -> None:
    dirty = DirtySet()
    dirty.mark(["n1"])
    assert dirty.take(timeout=0) == "n1"
    dirty.mark(["n1"])
    assert dirty.pending() == {"n1"}
    assert dirty.take(timeout=0) is None  # not handed to a second worker while in flight
    dirty.done("n1")
    assert dirty.take(timeout=0) == "n1"
    dirty.done("n1")
    assert dirty.take(timeout=0) is None
    assert len(dirty) == 0


def test_done_without_take_is_an_error() -> None:
    with pytest.raises(ValueError, match="not in flight"):
        DirtySet().done("x")


def test_take_times_out_and_close_wakes_waiters() -> None:
    dirty = DirtySet()
    started = time.monotonic()
    assert dirty.take(timeout=0.05) is None
    assert time.monotonic() - started >= 0.04
    results: list[str | None] = []
    waiter = threading.Thread(target=lambda: results.append(dirty.take()))
    waiter.start()
    time.sleep(0.05)
    dirty.close()
    waiter.join(timeout=2)
    assert not waiter.is_alive()
    assert results == [None]


def test_take_wakes_up_on_mark() -> None:
    dirty = DirtySet()
    results: list[str | None] = []
    waiter = threading.Thread(target=lambda: results.append(dirty.take(timeout=5)))
    waiter.start()
    time.sleep(0.02)
    dirty.mark(["n7"])
    waiter.join(timeout=5)
    assert results == ["n7"]


def test_workers_never_share_a_node_and_every_last_mark_is_processed() -> None:
    """Level-triggered guarantee: for every node, some processing starts after its last mark."""
    dirty = DirtySet()
    nodes = [f"node-{i}" for i in range(12)]
    lock = threading.Lock()
    busy: set[str] = set()
    overlaps: list[str] = []
    last_mark: dict[str, int] = {}
    last_start: dict[str, int] = {}
    clock = iter(range(10**9))

    def worker() -> None:
        while (node := dirty.take(timeout=1)) is not None:
            with lock:
                if node in busy:
                    overlaps.append(node)
                busy.add(node)
                last_start[node] = next(clock)
            time.sleep(random.random() / 2000)
            with lock:
                busy.discard(node)
            dirty.done(node)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    rng = random.Random(5)
    for _ in range(2000):
        batch = rng.sample(nodes, rng.randint(1, 3))
        with lock:
            for n in batch:
                last_mark[n] = next(clock)
        dirty.mark(batch)
        if rng.random() < 0.1:
            time.sleep(0.0005)
    for w in workers:
        w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)
    assert overlaps == []
    assert all(last_start[n] > last_mark[n] for n in last_mark), "a mark was lost"
    assert len(dirty) == 0 and dirty.in_flight() == frozenset()
