"""IPAM: allocation rules, durability on disk, concurrency across threads and processes, crash safety."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ovsagent.ipam import (
    ALLOCATIONS_DIR,
    Allocation,
    Attachment,
    AttachmentHoldsOtherIp,
    InvalidIp,
    InvalidOwner,
    InvalidRange,
    Ipam,
    IpamError,
    IpInUse,
    IpNotInRange,
    IpReserved,
    Owner,
    PodCidrChanged,
    RangeExhausted,
    StaticIpRefused,
)

ROOT = Path(__file__).resolve().parents[2]
CIDR = "100.64.1.0/24"
SMALL = "100.64.1.0/29"  # network .0, gateway .1, pods .2-.6, broadcast .7


def owner(n: int | str, ifname: str = "eth0") -> Owner:
    return Owner(f"c{n}", ifname, "default", f"pod-{n}", f"uid-{n}", f"/run/netns/cni-{n}")


def on_disk(store: Path) -> dict[str, dict[str, Any]]:
    """Read the store's records directly (not through Ipam): file name -> parsed JSON."""
    records = {}
    for path in (store / ALLOCATIONS_DIR).iterdir():
        records[path.name] = json.loads(path.read_text())
    return records


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "ipam"


@pytest.fixture
def ipam(store: Path) -> Ipam:
    return Ipam(store, CIDR)


# ------------------------------------------------------------------------------------------- basics


def test_allocate_gives_first_usable_address_and_records_it(ipam: Ipam, store: Path) -> None:
    alloc = ipam.allocate(owner(1))
    assert alloc.ip == ipaddress.IPv4Address("100.64.1.2")  # .1 is the gateway
    assert alloc.gateway == ipaddress.IPv4Address("100.64.1.1") == ipam.gateway
    assert str(alloc.network) == CIDR
    assert str(alloc.interface) == "100.64.1.2/24"
    assert alloc.owner == owner(1)
    assert on_disk(store) == {
        "100.64.1.2": {
            "version": 1,
            "ip": "100.64.1.2",
            "container_id": "c1",
            "ifname": "eth0",
            "pod_namespace": "default",
            "pod_name": "pod-1",
            "pod_uid": "uid-1",
            "netns": "/run/netns/cni-1",
        }
    }
    assert json.loads((store / "range").read_text())["cidr"] == CIDR


def test_update_rewrites_the_record_durably(store: Path) -> None:
    with Ipam(store, CIDR) as ipam:
        alloc = ipam.allocate(Owner("c1", "eth0", "default", "web", "u"))  # no netns, as of old
        assert ipam.update(owner(9)) is None  # holds nothing
        moved = Owner("c1", "eth0", "default", "web", "u", "/run/netns/cni-1")
        assert ipam.update(moved) == Allocation(alloc.ip, alloc.network, alloc.gateway, moved)
        assert ipam.update(moved) == ipam.lookup(moved)  # the same again: nothing to write
    assert on_disk(store)[str(alloc.ip)]["netns"] == "/run/netns/cni-1"
    assert [p.name for p in (store / ALLOCATIONS_DIR).iterdir()] == [str(alloc.ip)]  # no temporary file
    with Ipam(store, CIDR) as again:
        (kept,) = again.allocations()
    assert kept.owner == moved


def test_record_without_a_netns_is_read_with_an_empty_one(store: Path) -> None:
    # records written before the sandbox's namespace was recorded
    Ipam(store, CIDR).close()
    legacy = {"version": 1, "ip": "100.64.1.9", "container_id": "old", "ifname": "eth0",
              "pod_namespace": "default", "pod_name": "web", "pod_uid": "u"}  # fmt: skip
    (store / ALLOCATIONS_DIR / "100.64.1.9").write_text(json.dumps(legacy))
    with Ipam(store, CIDR) as ipam:
        (alloc,) = ipam.allocations()
    assert alloc.owner == Owner("old", "eth0", "default", "web", "u", "")


def test_allocate_is_idempotent_per_attachment(ipam: Ipam, store: Path) -> None:
    first = ipam.allocate(owner(1))
    # A retried ADD (even with different pod details) gets the same allocation back, unchanged.
    again = ipam.allocate(Owner("c1", "eth0", "other", "other", "other"))
    assert again == first
    assert len(on_disk(store)) == 1
    # Another interface of the same container is another attachment.
    second = ipam.allocate(owner(1, "net1"))
    assert second.ip != first.ip
    assert ipam.lookup(Attachment("c1", "net1")) == second
    assert ipam.lookup(owner(1)) == first


def test_release_frees_and_is_idempotent(ipam: Ipam, store: Path) -> None:
    alloc = ipam.allocate(owner(1))
    assert ipam.release(Attachment("c1", "eth0")) == [alloc]
    assert on_disk(store) == {}
    assert ipam.lookup(owner(1)) is None
    assert ipam.release(owner(1)) == []  # twice: fine
    assert ipam.release(owner(99)) == []  # never allocated: fine


def test_release_ip(ipam: Ipam, store: Path) -> None:
    alloc = ipam.allocate(owner(1))
    assert ipam.release_ip("100.64.1.2") == alloc
    assert ipam.release_ip(ipaddress.IPv4Address("100.64.1.2")) is None
    assert on_disk(store) == {}
    with pytest.raises(InvalidIp, match="nonsense"):
        ipam.release_ip("nonsense")


def test_allocations_lists_everything_sorted(ipam: Ipam) -> None:
    for n in range(5):
        ipam.allocate(owner(n))
    ipam.release(owner(2))
    assert [str(a.ip) for a in ipam.allocations()] == ["100.64.1.2", "100.64.1.3", "100.64.1.5", "100.64.1.6"]
    assert [a.owner for a in ipam.allocations()] == [owner(0), owner(1), owner(3), owner(4)]
    assert ipam.count() == 4
    with Ipam(ipam.store_dir, CIDR) as other:
        assert other.count() == 4  # another object on the store reads it too


def test_owner_without_identity_is_refused(ipam: Ipam) -> None:
    with pytest.raises(InvalidOwner):
        ipam.allocate(Owner("", "eth0"))
    with pytest.raises(InvalidOwner):
        ipam.allocate(Owner("c1", ""))


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("100.64.1.0/31", "too small"),
        ("100.64.1.5/24", "host bits"),
        ("fd00::/64", "only IPv4"),
        ("garbage", "invalid"),
    ],
)
def test_bad_range_is_refused(store: Path, cidr: str, message: str) -> None:
    with pytest.raises(InvalidRange, match=message):
        Ipam(store, cidr)


def test_smallest_range_has_one_pod_address(store: Path) -> None:
    ipam = Ipam(store, "100.64.1.0/30")
    assert str(ipam.allocate(owner(1)).ip) == "100.64.1.2"
    with pytest.raises(RangeExhausted):
        ipam.allocate(owner(2))


# --------------------------------------------------------------------------------------- static IPs


def test_static_ip_in_range_is_honoured(ipam: Ipam, store: Path) -> None:
    alloc = ipam.allocate(owner(1), "100.64.1.77")
    assert str(alloc.ip) == "100.64.1.77"
    assert "100.64.1.77" in on_disk(store)
    # the CNI `ips` capability sends CIDR notation
    assert str(ipam.allocate(owner(2), "100.64.1.78/24").ip) == "100.64.1.78"
    assert str(ipam.allocate(owner(3), ipaddress.IPv4Address("100.64.1.79")).ip) == "100.64.1.79"
    # a retried ADD with the same request gets the same allocation
    assert ipam.allocate(owner(1), "100.64.1.77") == alloc


def test_static_ip_out_of_range_is_refused(ipam: Ipam) -> None:
    with pytest.raises(IpNotInRange, match=r"100\.64\.2\.5.*100\.64\.1\.0/24"):
        ipam.allocate(owner(1), "100.64.2.5")
    with pytest.raises(IpNotInRange):
        ipam.allocate(owner(1), "fd00::5")
    with pytest.raises(StaticIpRefused, match="prefix length /16"):
        ipam.allocate(owner(1), "100.64.1.5/16")
    assert ipam.allocations() == []


def test_static_ip_taken_is_refused_naming_the_holder(ipam: Ipam) -> None:
    ipam.allocate(owner(1), "100.64.1.9")
    with pytest.raises(IpInUse, match=r"100\.64\.1\.9.*c1/eth0") as info:
        ipam.allocate(owner(2), "100.64.1.9")
    assert info.value.holder == owner(1)
    assert ipam.lookup(owner(2)) is None


@pytest.mark.parametrize(
    ("ip", "what"),
    [("100.64.1.0", "network"), ("100.64.1.1", "gateway"), ("100.64.1.255", "broadcast")],
)
def test_static_reserved_address_is_refused(ipam: Ipam, ip: str, what: str) -> None:
    with pytest.raises(IpReserved, match=rf"{ip}.*{what}"):
        ipam.allocate(owner(1), ip)
    assert ipam.allocations() == []


def test_static_ip_garbage_is_refused(ipam: Ipam) -> None:
    with pytest.raises(InvalidIp, match=r"100\.64\.1\.300"):
        ipam.allocate(owner(1), "100.64.1.300")
    with pytest.raises(InvalidIp):
        ipam.allocate(owner(1), "100.64.1.3/99")


def test_attachment_holding_another_ip_is_refused(ipam: Ipam) -> None:
    ipam.allocate(owner(1), "100.64.1.20")
    with pytest.raises(AttachmentHoldsOtherIp, match=r"100\.64\.1\.21.*already holds 100\.64\.1\.20"):
        ipam.allocate(owner(1), "100.64.1.21")


def test_next_free_skips_static_allocations(ipam: Ipam) -> None:
    ipam.allocate(owner(1), "100.64.1.2")
    ipam.allocate(owner(2), "100.64.1.3")
    assert str(ipam.allocate(owner(3)).ip) == "100.64.1.4"


# --------------------------------------------------------------------------- exhaustion and rotation


def test_exhaustion_on_a_slash_29(store: Path) -> None:
    ipam = Ipam(store, SMALL)
    assert ipam.usable == 5
    got = [str(ipam.allocate(owner(n)).ip) for n in range(5)]
    assert got == [f"100.64.1.{i}" for i in range(2, 7)]
    with pytest.raises(RangeExhausted, match=r"100\.64\.1\.0/29"):
        ipam.allocate(owner(5))
    assert len(on_disk(store)) == 5
    ipam.release(owner(3))
    assert str(ipam.allocate(owner(5)).ip) == "100.64.1.5"


def test_next_free_rotates_from_the_last_allocated(store: Path) -> None:
    ipam = Ipam(store, SMALL)
    ipam.allocate(owner(1))  # .2
    ipam.allocate(owner(2))  # .3
    ipam.release(owner(2))
    # .3 was just freed: not reused at once
    assert str(ipam.allocate(owner(3)).ip) == "100.64.1.4"
    ipam.allocate(owner(4))  # .5
    ipam.allocate(owner(5))  # .6, the end of the range
    # the search wraps around to the lowest free address
    assert str(ipam.allocate(owner(6)).ip) == "100.64.1.3"


def test_rotation_survives_a_new_object(store: Path) -> None:
    Ipam(store, SMALL).allocate(owner(1))  # .2
    ipam = Ipam(store, SMALL)
    ipam.allocate(owner(2))  # .3
    ipam.release(owner(2))
    assert str(Ipam(store, SMALL).allocate(owner(3)).ip) == "100.64.1.4"


# -------------------------------------------------------------------------------------- persistence


def test_allocations_persist_across_objects(store: Path) -> None:
    first = Ipam(store, CIDR)
    allocs = [first.allocate(owner(n)) for n in range(3)]
    first.allocate(owner(9), "100.64.1.200")
    first.close()
    again = Ipam(store, CIDR)
    assert again.allocations()[:3] == allocs
    assert again.lookup(owner(1)) == allocs[1]
    assert again.allocate(owner(2)) == allocs[2]  # idempotent across restarts
    assert str(again.allocate(owner(3)).ip) not in {"100.64.1.2", "100.64.1.3", "100.64.1.4", "100.64.1.200"}


def test_two_objects_on_one_store_see_each_other(store: Path) -> None:
    a, b = Ipam(store, CIDR), Ipam(store, CIDR)
    alloc = a.allocate(owner(1))
    assert b.lookup(owner(1)) == alloc
    assert b.allocate(owner(1)) == alloc  # b's cache was refreshed, no second address
    assert b.allocate(owner(2)).ip != alloc.ip
    assert b.release(owner(1)) == [alloc]
    assert [x.owner for x in a.allocations()] == [owner(2)]


def test_podcidr_change_with_allocations_is_an_error(store: Path) -> None:
    Ipam(store, CIDR).allocate(owner(1))
    with pytest.raises(PodCidrChanged, match=r"100\.64\.1\.0/24.*1 allocation.*100\.64\.2\.0/24"):
        Ipam(store, "100.64.2.0/24")
    with pytest.raises(PodCidrChanged):
        Ipam(store, "100.64.0.0/16")  # even a superset: the node's range changed
    assert len(on_disk(store)) == 1  # nothing touched


def test_podcidr_change_on_an_empty_store_is_adopted(store: Path) -> None:
    ipam = Ipam(store, CIDR)
    ipam.release(ipam.allocate(owner(1)).owner or owner(1))
    ipam.close()
    moved = Ipam(store, "100.64.2.0/24")
    assert str(moved.allocate(owner(1)).ip) == "100.64.2.2"
    assert json.loads((store / "range").read_text())["cidr"] == "100.64.2.0/24"


def test_closed_store_refuses_use(store: Path) -> None:
    with Ipam(store, CIDR) as ipam:
        ipam.allocate(owner(1))
    with pytest.raises(IpamError, match="closed"):
        ipam.allocate(owner(2))


# --------------------------------------------------------------------------------------- reconcile


def test_reconcile_frees_what_is_not_live(ipam: Ipam, store: Path) -> None:
    allocs = [ipam.allocate(owner(n)) for n in range(4)]
    freed = ipam.reconcile([owner(0), Attachment("c2", "eth0"), Attachment("gone", "eth0")])
    assert freed == [allocs[1], allocs[3]]
    assert sorted(on_disk(store)) == ["100.64.1.2", "100.64.1.4"]
    assert ipam.reconcile([owner(0), owner(2)]) == []
    assert ipam.reconcile([]) == [allocs[0], allocs[2]]
    assert on_disk(store) == {}


# --------------------------------------------------------------------------------------- concurrency


def test_twenty_threads_get_twenty_distinct_addresses(ipam: Ipam, store: Path) -> None:
    barrier = threading.Barrier(20)
    results: dict[int, Allocation] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            results[n] = ipam.allocate(owner(n))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ips = {str(a.ip) for a in results.values()}
    assert len(ips) == 20
    assert set(on_disk(store)) == ips
    assert {rec["container_id"] for rec in on_disk(store).values()} == {f"c{n}" for n in range(20)}


def test_threads_on_separate_objects_get_distinct_addresses(store: Path) -> None:
    objects = [Ipam(store, CIDR) for _ in range(4)]
    barrier = threading.Barrier(20)
    results: dict[int, str] = {}

    def worker(n: int) -> None:
        barrier.wait()
        results[n] = str(objects[n % 4].allocate(owner(n)).ip)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results.values())) == 20
    assert set(on_disk(store)) == set(results.values())


def _allocate_in_process(store: str, worker: int, count: int, barrier: Any, queue: Any) -> None:
    ipam = Ipam(store, CIDR)
    barrier.wait()
    got = []
    for i in range(count):
        got.append(str(ipam.allocate(Owner(f"p{worker}-{i}", "eth0")).ip))
        if i % 3 == 0:  # mix releases in, so the processes' caches must stay coherent
            ipam.release(Attachment(f"p{worker}-{i}", "eth0"))
            got.pop()
    queue.put((worker, got))


def test_processes_allocating_concurrently_get_distinct_addresses(store: Path) -> None:
    Ipam(store, CIDR).close()
    ctx = multiprocessing.get_context("spawn")
    workers, count = 4, 15
    barrier = ctx.Barrier(workers)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_allocate_in_process, args=(str(store), w, count, barrier, queue))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    held = [ip for ips in results.values() for ip in ips]
    assert len(held) == workers * (count - 5)
    assert len(set(held)) == len(held)
    disk = on_disk(store)
    assert set(disk) == set(held)
    assert len({(r["container_id"], r["ifname"]) for r in disk.values()}) == len(disk)


def _allocate_inherited(ipam: Ipam, queue: Any) -> None:
    queue.put(str(ipam.allocate(Owner("forked", "eth0")).ip))


# eventlet, imported by other tests of the same run (os-ken, python-ovs), warns at any fork; the
# child here only allocates an address.
@pytest.mark.filterwarnings("ignore:Using fork\\(\\) is a bad idea:DeprecationWarning")
def test_forked_child_takes_its_own_lock(ipam: Ipam) -> None:
    """A child inheriting an Ipam must not share the parent's flock (one open file description)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with ipam._locked():  # the parent holds both its mutex and the store lock across the fork
        child = ctx.Process(target=_allocate_inherited, args=(ipam, queue))
        child.start()
        time.sleep(0.5)
        assert queue.empty(), "the child allocated while the parent held the store lock"
    try:
        assert queue.get(timeout=30) == "100.64.1.2"
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert ipam.lookup(Attachment("forked", "eth0")) is not None


# -------------------------------------------------------------------------------------- crash safety


def _record(ip: str, cid: str) -> str:
    return json.dumps(
        {
            "version": 1,
            "ip": ip,
            "container_id": cid,
            "ifname": "eth0",
            "pod_namespace": "ns",
            "pod_name": "p",
            "pod_uid": "u",
        }
    )


def test_leftover_tmp_file_from_a_crash_before_link_is_removed(store: Path) -> None:
    Ipam(store, SMALL).close()
    # A crash after writing the temporary record but before linking it: never handed out.
    tmp = store / ALLOCATIONS_DIR / ".tmp.100.64.1.2.4242.deadbeef"
    tmp.write_text(_record("100.64.1.2", "crashed"))
    (store / ".tmp.range.4242.cafe").write_text("{}")
    ipam = Ipam(store, SMALL)
    assert not tmp.exists()
    assert not (store / ".tmp.range.4242.cafe").exists()
    assert ipam.allocations() == []
    assert str(ipam.allocate(owner(1)).ip) == "100.64.1.2"


def test_leftover_tmp_file_from_a_crash_after_link_keeps_the_record(store: Path) -> None:
    Ipam(store, SMALL).close()
    # A crash after the link, before the temporary name was unlinked: the allocation exists.
    (store / ALLOCATIONS_DIR / "100.64.1.2").write_text(_record("100.64.1.2", "crashed"))
    tmp = store / ALLOCATIONS_DIR / ".tmp.100.64.1.2.4242.deadbeef"
    os.link(store / ALLOCATIONS_DIR / "100.64.1.2", tmp)
    ipam = Ipam(store, SMALL)
    assert not tmp.exists()
    crashed = Owner("crashed", "eth0", "ns", "p", "u")
    assert [a.owner for a in ipam.allocations()] == [crashed]
    assert str(ipam.allocate(crashed).ip) == "100.64.1.2"  # the retried ADD gets it back
    assert str(ipam.allocate(owner(1)).ip) == "100.64.1.3"


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        '{"version": 1, "ip": "100.64.1.3", "container_id": "x", "ifname": "eth0"}',  # wrong address
        '{"version": 7, "ip": "100.64.1.2", "container_id": "x", "ifname": "eth0"}',
        '{"version": 1, "ip": "100.64.1.2", "container_id": "", "ifname": "eth0"}',
        '{"version": 1, "ip": "100.64.1.2", "container_id": 5, "ifname": "eth0"}',
        "\xff\xfe",
    ],
)
def test_corrupt_record_is_never_reused_and_reconcile_frees_it(
    store: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    Ipam(store, SMALL).close()
    (store / ALLOCATIONS_DIR / "100.64.1.2").write_text(content, errors="surrogateescape")
    ipam = Ipam(store, SMALL)
    assert "100.64.1.2" in caplog.text and "unreadable" in caplog.text
    [corrupt] = ipam.allocations()
    assert str(corrupt.ip) == "100.64.1.2" and corrupt.owner is None
    got = {str(ipam.allocate(owner(n)).ip) for n in range(4)}
    assert "100.64.1.2" not in got
    with pytest.raises(RangeExhausted):
        ipam.allocate(owner(9))
    with pytest.raises(IpInUse, match="unreadable"):
        ipam.allocate(owner(9), "100.64.1.2")
    freed = ipam.reconcile([owner(n) for n in range(4)])
    assert freed == [corrupt]
    assert str(ipam.allocate(owner(9)).ip) == "100.64.1.2"


def test_foreign_files_in_the_store_are_ignored(store: Path) -> None:
    Ipam(store, SMALL).close()
    (store / ALLOCATIONS_DIR / "README").write_text("hello")
    ipam = Ipam(store, SMALL)
    assert ipam.allocations() == []
    ipam.allocate(owner(1))
    assert (store / ALLOCATIONS_DIR / "README").exists()


_CHURN = """
import random, sys
from ovsagent.ipam import Attachment, Ipam, Owner
ipam = Ipam(sys.argv[1], sys.argv[2])
rng = random.Random(int(sys.argv[3]))
print("ready", flush=True)
while True:
    cid = f"c{rng.randrange(30)}"
    if rng.random() < 0.6:
        print("A", cid, ipam.allocate(Owner(cid, "eth0")).ip, flush=True)
    else:
        ipam.release(Attachment(cid, "eth0"))
        print("R", cid, flush=True)
"""


def test_sigkill_at_random_points_loses_nothing_and_duplicates_nothing(store: Path) -> None:
    """A process allocating and releasing is killed -9 at random moments, five times over.

    After each kill the store, reopened, must agree with what the process reported as done, except
    for at most the one operation in flight, and hold no temporary file and no unreadable record.
    """
    cidr = "100.64.1.0/26"
    Ipam(store, cidr).close()
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    held: dict[str, str] = {}  # container id -> IP, as of the last verified state
    total_ops = 0
    for round_ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHURN, str(store), cidr, str(round_)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,))
        reader.start()
        time.sleep(rng.uniform(0.02, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        expected = dict(held)
        for line in lines:
            words = line.split()
            if len(words) == 3 and words[0] == "A":
                assert expected.get(words[1], words[2]) == words[2]  # idempotent
                expected[words[1]] = words[2]
            elif len(words) == 2 and words[0] == "R":
                expected.pop(words[1], None)
        total_ops += len(lines)
        ipam = Ipam(store, cidr)
        allocs = ipam.allocations()
        ipam.close()
        assert all(a.owner is not None for a in allocs)
        actual = {a.owner.container_id: str(a.ip) for a in allocs if a.owner}
        assert len(actual) == len(allocs)  # one address per attachment
        assert not [p for p in (store / ALLOCATIONS_DIR).iterdir() if p.name.startswith(".tmp")]
        differing = {c for c in expected.keys() | actual.keys() if expected.get(c) != actual.get(c)}
        # only the operation in flight at the kill may differ, and only by being present or absent
        assert len(differing) <= 1, (expected, actual)
        for c in differing:
            assert c not in expected or c not in actual
        held = actual
    assert total_ops > 50  # the kills did land in the middle of real work


# ---------------------------------------------------------------------------------- property test

_POOL = [f"100.64.0.{i}" for i in range(10)]  # network, gateway, pods, broadcast, outside the /29


class IpamMachine(RuleBasedStateMachine):
    """Random allocate/release/reconcile/reopen through two objects on one store, against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-ipam-"))
        self.cidr = ipaddress.IPv4Network("100.64.0.0/29")
        self.ipams = [Ipam(self.dir, self.cidr), Ipam(self.dir, self.cidr)]
        self.model: dict[str, str] = {}  # container id -> ip

    def teardown(self) -> None:
        for ipam in self.ipams:
            ipam.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(which=st.integers(0, 1), n=st.integers(0, 7), requested=st.none() | st.sampled_from(_POOL))
    def allocate(self, which: int, n: int, requested: str | None) -> None:
        cid = f"c{n}"
        ipam = self.ipams[which]
        held = self.model.get(cid)
        ip = None if requested is None else ipaddress.IPv4Address(requested)
        # The request itself is checked first, then the attachment's existing allocation.
        if ip is not None and ip not in self.cidr:
            with pytest.raises(IpNotInRange):
                ipam.allocate(Owner(cid, "eth0"), requested)
        elif ip is not None and ip in (self.cidr[0], self.cidr[1], self.cidr[-1]):
            with pytest.raises(IpReserved):
                ipam.allocate(Owner(cid, "eth0"), requested)
        elif held is not None and requested is not None and requested != held:
            with pytest.raises(AttachmentHoldsOtherIp):
                ipam.allocate(Owner(cid, "eth0"), requested)
        elif held is not None:
            assert str(ipam.allocate(Owner(cid, "eth0"), requested).ip) == held
        elif requested is not None and requested in self.model.values():
            with pytest.raises(IpInUse):
                ipam.allocate(Owner(cid, "eth0"), requested)
        elif requested is not None:
            assert str(ipam.allocate(Owner(cid, "eth0"), requested).ip) == requested
            self.model[cid] = requested
        else:
            self._allocate_next(ipam, cid)

    def _allocate_next(self, ipam: Ipam, cid: str) -> None:
        if len(self.model) == 5:
            event("range exhausted")
            with pytest.raises(RangeExhausted):
                ipam.allocate(Owner(cid, "eth0"))
            return
        got = ipam.allocate(Owner(cid, "eth0")).ip
        assert str(got) not in self.model.values()
        assert int(self.cidr.network_address) + 2 <= int(got) <= int(self.cidr.broadcast_address) - 1
        self.model[cid] = str(got)

    @rule(which=st.integers(0, 1), n=st.integers(0, 7))
    def release(self, which: int, n: int) -> None:
        freed = self.ipams[which].release(Attachment(f"c{n}", "eth0"))
        want = self.model.pop(f"c{n}", None)
        assert [str(a.ip) for a in freed] == ([] if want is None else [want])

    @rule(which=st.integers(0, 1), ip=st.sampled_from(_POOL))
    def release_ip(self, which: int, ip: str) -> None:
        freed = self.ipams[which].release_ip(ip)
        holder = next((c for c, held in self.model.items() if held == ip), None)
        assert (freed is None) == (holder is None)
        if holder is not None:
            assert freed is not None and freed.owner is not None and freed.owner.container_id == holder
            del self.model[holder]

    @rule(which=st.integers(0, 1), live=st.sets(st.integers(0, 7)))
    def reconcile(self, which: int, live: set[int]) -> None:
        freed = self.ipams[which].reconcile(Attachment(f"c{n}", "eth0") for n in live)
        gone = {c: ip for c, ip in self.model.items() if int(c[1:]) not in live}
        assert {str(a.ip) for a in freed} == set(gone.values())
        for c in gone:
            del self.model[c]

    @rule(which=st.integers(0, 1))
    def reopen(self, which: int) -> None:
        self.ipams[which].close()
        self.ipams[which] = Ipam(self.dir, self.cidr)

    @invariant()
    def disk_memory_and_model_agree(self) -> None:
        disk = {name: rec["container_id"] for name, rec in on_disk(self.dir).items()}
        assert disk == {ip: c for c, ip in self.model.items()}
        for ipam in self.ipams:
            memory = {str(a.ip): a.owner.container_id if a.owner else None for a in ipam.allocations()}
            assert memory == disk
            assert ipam.count() == len(disk)  # what the agent's metrics report
        assert len(set(self.model.values())) == len(self.model)


TestIpamProperties = IpamMachine.TestCase
TestIpamProperties.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
