"""Lease leader election against the lab API server: acquire, renew, expiry takeover, release, generations."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from controller.leader import KubeLeaseApi, LeaderElector, Leadership
from lab.apiserver import ApiServer


@pytest.fixture
def server() -> Iterator[ApiServer]:
    srv = ApiServer("127.0.0.1", 0).start()
    try:
        yield srv
    finally:
        srv.stop()


def elector(
    server: ApiServer, identity: str, changes: list[Leadership], duration: float = 1.0
) -> LeaderElector:
    return LeaderElector(
        KubeLeaseApi(server.api_client(), "kube-system", "sluice-controller"),
        name="sluice-controller",
        namespace="kube-system",
        identity=identity,
        lease_duration=duration,
        renew_period=0.2,
        on_change=changes.append,
    )


def test_the_first_replica_leads_and_the_second_follows(server: ApiServer) -> None:
    a_changes: list[Leadership] = []
    b_changes: list[Leadership] = []
    a, b = elector(server, "a", a_changes), elector(server, "b", b_changes)
    assert a.try_acquire_or_renew() == Leadership(True, 0)
    assert b.try_acquire_or_renew() == Leadership(False, 0)
    assert a.try_acquire_or_renew() == Leadership(True, 0)  # renewed
    assert b.try_acquire_or_renew() == Leadership(False, 0)  # the renewal keeps b out
    assert a_changes == [Leadership(True, 0)]
    assert b_changes == [Leadership(False, 0)]


def test_an_expired_lease_is_taken_over_with_a_new_generation(server: ApiServer) -> None:
    a_changes: list[Leadership] = []
    b_changes: list[Leadership] = []
    a, b = elector(server, "a", a_changes), elector(server, "b", b_changes)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    time.sleep(1.3)  # a stops renewing for longer than the 1s lease
    assert b.try_acquire_or_renew() == Leadership(True, 1)
    assert a.try_acquire_or_renew() == Leadership(False, 1)  # a sees b's fresh claim
    assert a_changes == [Leadership(True, 0), Leadership(False, 1)]


def test_a_stopping_leader_releases_the_lease_for_an_immediate_takeover(server: ApiServer) -> None:
    a_changes: list[Leadership] = []
    b = elector(server, "b", [], duration=30)
    a = elector(server, "a", a_changes, duration=30)
    a.start()
    deadline = time.monotonic() + 5
    while not a.leader:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert b.try_acquire_or_renew() == Leadership(False, 0)
    a.stop()
    assert a_changes[-1] == Leadership(False, 0)
    assert b.try_acquire_or_renew() == Leadership(True, 1)  # no 30s wait: the lease was released
