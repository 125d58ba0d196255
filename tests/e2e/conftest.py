"""Fixtures for the end-to-end tests: whole labs (`lab.cluster.up`) with their own state directory
and namespace prefix, so they never clash with a user's lab or with each other, and always taken
down (`lab.cluster.down`) at teardown, even when the test fails."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import cluster
from lab.components import LabPaths
from lab.state import LabState, StateStore
from tests.support import require_root_and_ovs

LabFactory = Callable[..., tuple[StateStore, LabState]]


def unique_prefix() -> str:
    """A namespace prefix no other test or lab uses: `sle<6 hex>-`."""
    return f"sle{secrets.token_hex(3)}-"


def log_tails(store: StateStore) -> str:
    """The last lines of every component log (for failure messages)."""
    from lab.components import tail

    logs = LabPaths(store.dir).logs
    parts = []
    for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        parts.append(f"--- {path.name} ---\n{tail(path, 20)}")
    return "\n".join(parts)


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Yield `make(nodes=2, pods_per_node=2, ha=False, serve=...) -> (store, state)`; every lab
    made is taken down at teardown (processes by PID, namespaces, state directory)."""
    require_root_and_ovs()
    made: list[StateStore] = []

    def make(**kwargs: object) -> tuple[StateStore, LabState]:
        directory = Path(tempfile.mkdtemp(prefix="sle-", dir="/tmp"))
        store = StateStore(directory)
        made.append(store)
        options = cluster.UpOptions(prefix=unique_prefix(), **kwargs)  # type: ignore[arg-type]
        return store, cluster.up(store, options)

    try:
        yield make
    finally:
        for store in made:
            if store.exists():
                cluster.down(store)
            shutil.rmtree(store.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab3x2() -> Iterator[tuple[StateStore, LabState]]:
    """One lab for a whole test module: 3 nodes, 2 pods each, every pod serving TCP:80 and UDP:53."""
    require_root_and_ovs()
    directory = Path(tempfile.mkdtemp(prefix="sle-", dir="/tmp"))
    store = StateStore(directory)
    try:
        state = cluster.up(store, cluster.UpOptions(nodes=3, pods_per_node=2, prefix=unique_prefix()))
        yield store, state
    finally:
        if store.exists():
            cluster.down(store)
        shutil.rmtree(directory, ignore_errors=True)
