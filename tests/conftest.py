"""Shared real-OVS fixtures: network namespaces and per-node ovsdb-server + ovs-vswitchd.

Every fixture removes what it made (daemons by PID, namespaces, temp dirs) at teardown, even when
the test fails. Namespaces are named `slt<pid-token>-<n>` and recorded in lab.netns's registry, so
the session start also removes leftovers of earlier runs that crashed (only those whose owning
process is gone: concurrent runs are left alone).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from lab import netns as netns_lib
from lab.ovs import OvsNode
from tests.support import require_root_and_ovs

log = logging.getLogger(__name__)

NETNS_PREFIX = "slt"
OVS_PREFIX = "slo"

NetnsFactory = Callable[..., netns_lib.Netns]
OvsNodeFactory = Callable[..., OvsNode]


@pytest.fixture(scope="session")
def _clean_leftovers() -> None:
    """Remove namespaces (and their dirs and processes) left by crashed earlier test runs."""
    if os.geteuid() != 0:  # the fixtures using this skip (or fail in CI) for want of root
        return
    for prefix in (NETNS_PREFIX, OVS_PREFIX):
        try:
            removed = netns_lib.cleanup_leftovers(prefix)
        except (OSError, netns_lib.NetnsError) as exc:  # never fail the session over this
            log.warning("leftover cleanup for %s failed: %s", prefix, exc)
            continue
        if removed:
            log.warning("removed leftovers of crashed runs: %s", removed)


@pytest.fixture
def netns(_clean_leftovers: None) -> Iterator[NetnsFactory]:
    """Yield a factory `netns(prefix="slt") -> Netns` making uniquely named fresh namespaces.

    Each has loopback up; all are deleted (with any process left inside) at teardown.
    """
    require_root_and_ovs()
    made: list[str] = []

    def make(prefix: str = NETNS_PREFIX) -> netns_lib.Netns:
        ns = netns_lib.create_netns(netns_lib.unique_name(prefix))
        made.append(ns.name)
        return ns

    try:
        yield make
    finally:
        _teardown([partial(netns_lib.delete_netns, name) for name in reversed(made)])


@pytest.fixture
def ovs_node_factory(_clean_leftovers: None) -> Iterator[OvsNodeFactory]:
    """Yield a factory `make(name=None, bridge="br-int") -> OvsNode` of started nodes.

    Each node gets its own fresh namespace and run dir, running ovsdb-server + ovs-vswitchd, and
    (unless bridge=None) a userspace bridge: datapath_type=netdev, fail_mode=secure, protocols
    OpenFlow13,OpenFlow15. Teardown stops the daemons by PID and removes namespace and dir.
    """
    require_root_and_ovs()
    made: list[OvsNode] = []

    def make(name: str | None = None, bridge: str | None = "br-int") -> OvsNode:
        node = OvsNode.create(OVS_PREFIX, name=name)
        made.append(node)
        node.start()
        if bridge is not None:
            node.add_bridge(bridge)
        return node

    try:
        yield make
    finally:
        _teardown([node.close for node in reversed(made)])


@pytest.fixture
def ovs_node(ovs_node_factory: OvsNodeFactory) -> OvsNode:
    """A started OvsNode in its own namespace with a netdev `br-int` (see ovs_node_factory)."""
    return ovs_node_factory()


def _teardown(steps: list[Callable[[], None]]) -> None:
    """Run every cleanup step even if some fail; then raise the first failure."""
    errors: list[BaseException] = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            log.error("teardown step failed: %s", exc)
            errors.append(exc)
    if errors:
        raise errors[0]
