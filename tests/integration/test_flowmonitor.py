"""The readiness wait is event-driven: a flow monitor on br-int wakes it, polling is the fallback.

Every test runs against a real ovs-vswitchd. Whether the monitor (not a poll) ended a wait is
read from the probe's counters, never from timing: a wait that returned because a monitor update
woke it counts a `monitor_wakeup` and makes no query after its initial one.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable

import pytest

from lab.ovs import OvsNode
from ovsagent.flowprobe import FlowProbe, FlowProbeStats, flow_updates, match_names_ipv4, pod_cookie
from tests.conftest import OvsNodeFactory
from tests.support import wait_until

GENEROUS = 30.0  # seconds; only ever a bound on a hang, never an assertion on speed


@pytest.fixture
def node(ovs_node_factory: OvsNodeFactory) -> OvsNode:
    return ovs_node_factory("monitor")


def flow_line(cookie: int, n: int = 1, table: int = 3) -> str:
    """Return a flow of `cookie` (n distinguishes flows of one cookie)."""
    nw_dst = f"100.{64 + n // 65536}.{(n // 256) % 256}.{n % 256}"
    return f"table={table},cookie={cookie:#x},priority=100,ip,nw_dst={nw_dst},actions=drop\n"


def eventually(what: str, predicate: Callable[[], bool], timeout: float = GENEROUS) -> None:
    """`wait_until`, polling often: these tests watch millisecond-scale reactions."""
    wait_until(predicate, timeout, what, interval=0.005)


class Wait:
    """wait_for_flows in a thread; `result` once it returned."""

    def __init__(self, probe: FlowProbe, cookie: int, timeout: float = GENEROUS) -> None:
        self.result: bool | None = None
        self._thread = threading.Thread(target=self._run, args=(probe, cookie, timeout))
        self._thread.start()

    def _run(self, probe: FlowProbe, cookie: int, timeout: float) -> None:
        self.result = probe.wait_for_flows(cookie, timeout)

    def join(self) -> bool | None:
        self._thread.join(GENEROUS + 10)
        assert not self._thread.is_alive(), "wait_for_flows hung past its timeout"
        return self.result


def monitored_probe(node: OvsNode) -> FlowProbe:
    """A probe whose monitor is up (short, empty waits start it).

    The monitor thread only connects while someone waits: a single wait that returns at once
    can be over before the thread first looks (it then idles), so the waits repeat until the
    monitor is up."""
    probe = FlowProbe(node.paths.mgmt("br-int"))
    eventually(
        "the flow monitor is up",
        lambda: (
            not probe.wait_for_flows(pod_cookie("default", "warm-up"), timeout=0.05)
            and probe.stats().monitor_up
        ),
    )
    return probe


def start_waits(probe: FlowProbe, cookies: list[int]) -> tuple[list[Wait], FlowProbeStats]:
    """Start one wait per cookie and return once each has made its initial query."""
    before = probe.stats()
    waits = [Wait(probe, cookie) for cookie in cookies]
    eventually(
        "every wait made its initial query",
        lambda: probe.stats().wait_queries >= before.wait_queries + len(cookies),
    )
    return waits, before


def monitor_threads(node: OvsNode) -> list[threading.Thread]:
    """The monitor threads of probes on this node's br-int (other tests' probes are not ours)."""
    name = f"flowprobe-monitor {node.paths.mgmt('br-int')}"
    return [t for t in threading.enumerate() if t.name == name]


def test_a_wait_started_before_the_flows_is_woken_by_the_monitor(node: OvsNode) -> None:
    probe = monitored_probe(node)
    web = pod_cookie("default", "web-1")
    (wait,), before = start_waits(probe, [web])
    node.add_flows("br-int", flow_line(web, 1) + flow_line(web, 2))
    assert wait.join() is True
    after = probe.stats()
    assert after.monitor_wakeups == before.monitor_wakeups + 1
    # the initial query was the only one: nothing polled
    assert after.wait_queries == before.wait_queries + 1
    assert after.monitor_up and after.monitor_sessions == 1 and after.waiters == 0
    probe.close()


def test_flows_of_other_cookies_do_not_end_the_wait(node: OvsNode) -> None:
    probe = monitored_probe(node)
    web = pod_cookie("default", "web-1")
    others = [pod_cookie("default", f"other-{i}") for i in range(50)]
    queries = probe.stats().wait_queries
    waiter = Wait(probe, web, timeout=2.0)
    eventually("the wait made its initial query", lambda: probe.stats().wait_queries > queries)
    before = probe.stats()
    node.add_flows("br-int", "".join(flow_line(c, i) for i, c in enumerate(others)))
    # the monitor saw all of them (so the wait was not left False by a deaf monitor)
    eventually("the monitor reported the other flows", lambda: probe.stats().monitor_updates >= 50)
    assert waiter.join() is False
    assert probe.stats().monitor_wakeups == before.monitor_wakeups
    # the mask leaves out the generation bits: the same pod under generation 5 does end a wait
    (wait,), before = start_waits(probe, [web])
    node.add_flows("br-int", flow_line(web | (5 << 56), 300))
    assert wait.join() is True
    assert probe.stats().monitor_wakeups == before.monitor_wakeups + 1
    probe.close()


def test_many_concurrent_waits_end_with_one_bundle(node: OvsNode) -> None:
    probe = monitored_probe(node)
    cookies = [pod_cookie("ns", f"pod-{i}") for i in range(20)]
    waits, before = start_waits(probe, cookies)
    node.add_flows("br-int", "".join(flow_line(c, i) for i, c in enumerate(cookies)))
    assert [w.join() for w in waits] == [True] * 20
    after = probe.stats()
    assert after.monitor_wakeups == before.monitor_wakeups + 20
    assert after.wait_queries == before.wait_queries + 20  # the initial queries only
    probe.close()


def test_a_wait_survives_the_bridge_being_deleted_and_recreated(node: OvsNode) -> None:
    probe = monitored_probe(node)
    web = pod_cookie("default", "web-1")
    (wait,), _ = start_waits(probe, [web])
    node.del_bridge("br-int")
    eventually("the monitor noticed", lambda: not probe.stats().monitor_up)
    polls = probe.stats().wait_queries
    eventually("the wait polls meanwhile", lambda: probe.stats().wait_queries > polls + 2)
    node.add_bridge("br-int")
    eventually(
        "the monitor is back", lambda: probe.stats().monitor_sessions == 2 and probe.stats().monitor_up
    )
    node.add_flows("br-int", flow_line(web))
    assert wait.join() is True
    probe.close()


def test_flows_added_while_the_bridge_is_being_recreated_are_found(node: OvsNode) -> None:
    probe = monitored_probe(node)
    web = pod_cookie("default", "web-1")
    (wait,), _ = start_waits(probe, [web])
    node.del_bridge("br-int")
    node.add_bridge("br-int")
    node.add_flows("br-int", flow_line(web))  # maybe before the monitor reconnected: a poll finds it
    assert wait.join() is True
    probe.close()


def test_a_big_bundle_still_ends_the_wait(node: OvsNode) -> None:
    probe = monitored_probe(node)
    web = pod_cookie("default", "web-1")
    (wait,), _ = start_waits(probe, [web])
    n = 20_000
    filler = [flow_line(0x2000000 + i, i, table=5) for i in range(n)]
    node.add_flows("br-int", "".join([*filler[: n // 2], flow_line(web), *filler[n // 2 :]]))
    assert wait.join() is True
    # it woke from the monitor, or from a poll while OVS had paused the monitor: both are right
    eventually("the monitor reported the whole bundle", lambda: probe.stats().monitor_updates >= n + 1)
    probe.close()


def test_close_stops_the_monitor_thread(node: OvsNode) -> None:
    assert monitor_threads(node) == []
    probe = monitored_probe(node)
    assert len(monitor_threads(node)) == 1
    probe.close()
    assert monitor_threads(node) == []
    assert not probe.stats().monitor_up
    # the probe still works after close(), as its queries always did: a wait restarts the monitor
    web = pod_cookie("default", "web-1")
    node.add_flows("br-int", flow_line(web))
    assert probe.wait_for_flows(web, timeout=GENEROUS)
    probe.close()
    assert monitor_threads(node) == []


def test_close_while_the_bridge_is_gone_stops_the_reconnecting_thread(node: OvsNode) -> None:
    probe = monitored_probe(node)
    node.del_bridge("br-int")
    waiter = Wait(probe, pod_cookie("default", "web-1"), timeout=0.5)
    assert waiter.join() is False
    probe.close()
    assert monitor_threads(node) == []


def test_update_parser_reads_cookies_of_added_and_modified_flows_only() -> None:
    # The bytes OVS 3.1 sent for `add-flows` of two flows (captured with a proxy on br-int.mgmt):
    # table 3 cookie 0x1234 ip,nw_dst=100.64.0.1 (24-byte match) and table 7 cookie 0x55 (empty).
    payload = bytes.fromhex(
        "ffff0000000000004f4e46000000074e"
        "0030000000000005000000000012030000000000000012340001001280000a0208008000180464400001000000000000"
        "002000000000000900000000000407000000000000000055"
        "0001000400000000"
    )
    assert [cookie for cookie, _, _ in flow_updates(payload)] == [0x1234, 0x55]
    deleted = bytearray(payload)
    deleted[16 + 2 : 16 + 4] = (1).to_bytes(2, "big")  # the first one as NXFME_DELETED
    assert [cookie for cookie, _, _ in flow_updates(bytes(deleted))] == [0x55]
    with pytest.raises(OSError, match="bad flow update length"):
        flow_updates(payload[:-8])
    # the first flow's match names 100.64.0.1 (ipv4_dst); the second matches everything
    (_, first, first_end), (_, second, _) = flow_updates(payload)
    assert match_names_ipv4(payload, first, ipaddress.IPv4Address("100.64.0.1").packed)
    assert match_names_ipv4(payload, first, ipaddress.IPv4Address("100.64.0.1").packed, first_end)
    assert not match_names_ipv4(payload, first, ipaddress.IPv4Address("100.64.0.2").packed)
    assert not match_names_ipv4(payload, second, ipaddress.IPv4Address("100.64.0.1").packed)
    # a masked address field (ipv4_dst=100.64.0.0/24, hasmask set) does not name one address
    masked = bytes.fromhex("00010016" + "80000a020800" + "8000190864400000ffffff00" + "0000")
    assert not match_names_ipv4(masked, 0, ipaddress.IPv4Address("100.64.0.0").packed)
    # cut short: nothing, and no error
    assert not match_names_ipv4(payload[: first + 10], first, ipaddress.IPv4Address("100.64.0.1").packed)
    # ... and the same when the entry ends there (the flow-stats reader's limit), data beyond it
    assert not match_names_ipv4(payload, first, ipaddress.IPv4Address("100.64.0.1").packed, limit=first + 10)
