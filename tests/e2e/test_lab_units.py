"""The lab's pure parts (no root needed): the state file, PID records, argument parsing, naming."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import kubelet
from lab.cluster import PingMatrix, UpOptions
from lab.components import LabError
from lab.podserve import Service, parse_services
from lab.state import LabState, LabStateError, NodeRecord, PodRecord, ProcessRecord, StateStore


def test_state_round_trips_through_the_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    server = ProcessRecord("server/default/a", 4242, 99, "python3", "lab-p-default-a", "/x.log")
    state = LabState(
        prefix="lab-",
        fabric_netns="lab-fabric",
        cp_netns="lab-cp",
        namespaces=("lab-fabric",),
        processes=(ProcessRecord("apiserver", 10, 20, "sluice", "lab-cp", "/l"),),
        nodes=(NodeRecord("node-1", 1, "lab-node1", "198.18.0.11", "100.64.1.0/24", "n1", "/d/node-1"),),
        pods=(
            PodRecord(
                "default",
                "a",
                "node-1",
                "lab-p-default-a",
                "c" * 64,
                "u",
                "100.64.1.2",
                ("TCP:80",),
                (server,),
            ),
        ),
    )
    store.save(state)
    assert store.load() == state
    assert store.update(lambda s: s.without_pod("default", "a")).pods == ()
    assert store.load().node("1").name == "node-1"
    with pytest.raises(LabStateError, match="no node"):
        store.load().node("node-7")


def test_missing_or_corrupt_state_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LabStateError, match="sluice lab up"):
        StateStore(tmp_path).load()
    (tmp_path / "lab.json").write_text("{not json")
    with pytest.raises(LabStateError, match="not valid JSON"):
        StateStore(tmp_path).load()
    (tmp_path / "lab.json").write_text('{"version": 99}')
    with pytest.raises(LabStateError, match="version"):
        StateStore(tmp_path).load()


def test_process_record_refuses_a_reused_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rec = ProcessRecord.of("x", proc.pid, os.path.basename(sys.executable), None, "/l")
        assert rec.alive()
        assert not ProcessRecord(rec.name, rec.pid, rec.start_time + 1, rec.exe, None, "/l").alive()
        assert not ProcessRecord(rec.name, rec.pid, rec.start_time, "ovs-vswitchd", None, "/l").alive()
    finally:
        proc.kill()
        proc.wait()
    assert not rec.alive()


def test_services_and_labels_parse_or_say_why() -> None:
    assert parse_services("tcp:80, UDP:53") == (Service("TCP", 80), Service("UDP", 53))
    for bad in ("TCP", "SCTP:1", "TCP:0", "TCP:80,TCP:80", "", "UDP:x"):
        with pytest.raises(ValueError):
            parse_services(bad)
    assert kubelet.parse_labels("app=web, tier=front") == {"app": "web", "tier": "front"}
    assert kubelet.parse_labels(None) == {}
    for bad in ("app", "app=we b", "=x"):
        with pytest.raises(LabError):
            kubelet.parse_labels(bad)


def test_pod_namespace_names_fit() -> None:
    assert kubelet.pod_netns_name("sluicelab-", "default", "web") == "sluicelab-p-default-web"
    long = kubelet.pod_netns_name("sluicelab-", "a-very-long-namespace-name", "x" * 60)
    assert len(long) <= 63
    assert long != kubelet.pod_netns_name("sluicelab-", "a-very-long-namespace-name", "x" * 59)


def test_up_options_are_validated() -> None:
    UpOptions().validate()
    for bad in (UpOptions(nodes=0), UpOptions(nodes=1, ha=True), UpOptions(prefix="bad/prefix"),
                UpOptions(pods_per_node=-1)):  # fmt: skip
        with pytest.raises(LabError):
            bad.validate()


def test_ping_matrix_renders_every_pair() -> None:
    pods = tuple(
        PodRecord("default", n, "node-1", f"lab-{n}", "c", "u", ip)
        for n, ip in (("a", "100.64.1.2"), ("b", "100.64.1.3"))
    )
    matrix = PingMatrix(pods, {("default/a", "default/b"): True, ("default/b", "default/a"): False})
    text = matrix.render()
    assert not matrix.ok
    assert "1/2 pairs reached" in text and "  ok" in text and "  --" in text
