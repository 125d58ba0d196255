"""Parsing ofproto/trace output recorded from OVS 3.1 (userspace datapath)."""

from __future__ import annotations

from pathlib import Path

from flows.trace import parse_trace

DATA = Path(__file__).parent / "data"


def test_remote_pod_trace_follows_recirculation_to_the_tunnel() -> None:
    trace = parse_trace((DATA / "trace_remote_pod.txt").read_text())
    assert trace.tables == (
        "classifier",
        "spoof_guard",
        "conntrack",
        "conntrack_state",
        "egress_policy",
        "egress_default",
        "l3_forwarding",
        "ingress_policy",
        "ingress_default",
        "conntrack_commit",
        "output",
    )
    assert trace.output_ports == (10,)
    assert trace.final_flow["tun_dst"] == "198.18.0.12"
    assert not trace.dropped


def test_arp_trace_is_answered_in_place() -> None:
    trace = parse_trace((DATA / "trace_arp_gateway.txt").read_text())
    assert trace.tables == ("classifier", "spoof_guard", "arp_responder")
    assert trace.answered_in_place
    assert trace.final_flow["arp_op"] == "2"
    assert trace.final_flow["arp_sha"] == "0a:58:64:40:01:01"


def test_drop_trace() -> None:
    text = (
        " 0. priority 0, cookie 0x101000000000000\n    drop\n\n"
        "Final flow: unchanged\nDatapath actions: drop\n"
    )
    trace = parse_trace(text)
    assert trace.dropped and trace.tables == ("classifier",) and trace.final_flow == {}
