"""Flow <-> os-ken OpenFlow messages: byte round trips, read-back forms, bundle framing, the cache."""

from __future__ import annotations

import struct
import threading

import pytest
from os_ken.ofproto import nicira_ext

from controller import ofmsg
from controller.ofmsg import Command, FlowModCache, OfMsgError, OfProto
from flows.compiler import compile_cluster
from flows.example import example_cluster
from flows.fields import OUT_PORT, PKT_SOURCE
from flows.model import (
    Ct,
    Flow,
    GotoTable,
    InPort,
    LoadReg,
    Match,
    Move,
    Output,
    OutputReg,
    RawAction,
    SetField,
)
from flows.tables import CONNTRACK_COMMIT, EGRESS_POLICY, INGRESS_POLICY, L3_FORWARDING, OUTPUT

VERSIONS = [pytest.param(ofmsg.OF13, id="of13"), pytest.param(ofmsg.OF15, id="of15")]


def example_flows() -> list[Flow]:
    """Every flow compiled for the example cluster, both nodes."""
    return [f for flows in compile_cluster(example_cluster()).values() for f in flows.sorted()]


def extra_flows() -> list[Flow]:
    """Flows using what the example does not: L4 ports, CIDR sources, -flags, plain output."""
    return [
        Flow(
            EGRESS_POLICY,
            300,
            Match.of(proto="tcp", nw_src="100.64.0.0/10", tp_dst=8080, in_port=7),
            (LoadReg(OUT_PORT, 9), GotoTable("l3_forwarding")),
            0x500000000000ABC,
        ),
        Flow(
            EGRESS_POLICY,
            301,
            Match.of(proto="udp", nw_dst="198.18.0.1", tp_src=53).with_reg(PKT_SOURCE, 2),
            (GotoTable("egress_default"),),
        ),
        Flow(EGRESS_POLICY, 302, Match.of(proto="sctp", tp_dst=9), ()),
        Flow(
            INGRESS_POLICY,
            303,
            Match.of(proto="ip", ct_state="-new+est+trk", reg1="0x5"),
            (Output(5), InPort()),
        ),
        Flow(
            CONNTRACK_COMMIT,
            304,
            Match.of(proto="ip", ct_state="+new-rpl+trk"),
            (Ct(zone=7, commit=True), Move("NXM_NX_REG0[0..3]", "NXM_NX_REG1[4..7]")),
        ),
        Flow(
            L3_FORWARDING,
            305,
            Match.of(proto="ip", nw_dst="100.64.9.0/24"),
            (
                SetField("tun_dst", "198.18.0.99"),
                SetField("eth_dst", "0a:58:64:40:09:01"),
                Move("NXM_OF_IP_SRC[]", "NXM_NX_REG2[]"),
                OutputReg(OUT_PORT),
            ),
        ),
        Flow(OUTPUT, 306, Match.of(reg1="0x10/0xff"), (LoadReg(OUT_PORT, 0xFFFFFFF0), OutputReg(OUT_PORT))),
        Flow(OUTPUT, 307, Match.of(), ()),
    ]


def parse_flow_mod(proto: OfProto, data: bytes) -> object:
    msg = ofmsg.parse(proto, data)
    assert type(msg).__name__ == "OFPFlowMod"
    return msg


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("source", [example_flows, extra_flows], ids=["example", "extra"])
def test_add_round_trips_through_bytes(version: int, source: object) -> None:
    """KEY: Flow -> os-ken flow-mod -> bytes -> os-ken parser -> Flow is the identity."""
    proto = OfProto(version)
    flows = source()  # type: ignore[operator]
    assert flows
    for flow in flows:
        data = ofmsg.serialize(ofmsg.flow_mod(proto, flow, Command.ADD))
        assert data[0] == version
        msg = parse_flow_mod(proto, data)
        assert msg.command == proto.ofproto.OFPFC_ADD  # type: ignore[attr-defined]
        back = ofmsg.flow_from_entry(proto, msg)
        assert back == flow, f"\n sent {flow.render()}\n back {back.render()}"
        assert back.render() == flow.render()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.value)
def test_the_fast_encoder_gives_os_ken_s_bytes(version: int, command: Command) -> None:
    proto = OfProto(version)
    encoder = ofmsg.FlowModEncoder(proto)
    flows = [*example_flows(), *extra_flows()]
    for _ in range(2):  # cold, then from memoized pieces
        for flow in flows:
            expected = ofmsg.serialize(ofmsg.flow_mod(proto, flow, command))
            assert encoder.encode(flow, command) == expected, flow.render()
    msg = ofmsg.flow_mod(proto, flows[0], command)
    msg.xid = 77
    assert encoder.encode(flows[0], command, xid=77) == ofmsg.serialize(msg)


@pytest.mark.parametrize("version", VERSIONS)
def test_delete_strict_names_exactly_one_key(version: int) -> None:
    proto = OfProto(version)
    ofp = proto.ofproto
    for flow in example_flows():
        msg = parse_flow_mod(proto, ofmsg.serialize(ofmsg.flow_mod(proto, flow, Command.DELETE_STRICT)))
        assert msg.command == ofp.OFPFC_DELETE_STRICT  # type: ignore[attr-defined]
        assert (msg.table_id, msg.priority) == (flow.table.number, flow.priority)  # type: ignore[attr-defined]
        assert (msg.out_port, msg.out_group) == (ofp.OFPP_ANY, ofp.OFPG_ANY)  # type: ignore[attr-defined]
        assert (msg.cookie_mask, msg.instructions) == (0, [])  # type: ignore[attr-defined]
        assert ofmsg.match_from_oxm(msg.match._fields2) == flow.match  # type: ignore[attr-defined]


def test_of15_register_loads_and_moves_use_the_forms_ovs_accepts_in_1_5() -> None:
    """OVS refuses NXAST_REG_LOAD/REG_MOVE in OpenFlow 1.5 (OFPBAC_BAD_EXP_TYPE)."""
    flow = next(f for f in example_flows() if any(isinstance(a, Move) for a in f.actions))
    parser = OfProto(ofmsg.OF15).ofproto_parser
    (apply,) = [i for i in ofmsg.actions_to_instructions(OfProto(ofmsg.OF15), flow.actions)]
    kinds = {type(a).__name__ for a in apply.actions}
    assert "OFPActionCopyField" in kinds and "NXActionRegMove" not in kinds
    load = ofmsg.actions_to_instructions(OfProto(ofmsg.OF15), (LoadReg(PKT_SOURCE, 3),))[0].actions[0]
    assert isinstance(load, parser.OFPActionSetField) and load.value == (3, 0xF)
    of13 = ofmsg.actions_to_instructions(OfProto(ofmsg.OF13), (LoadReg(PKT_SOURCE, 3),))[0].actions[0]
    assert type(of13).__name__ == "NXActionRegLoad"


def test_every_read_back_form_of_a_register_load_is_understood() -> None:
    """OVS writes a load back as NXAST_REG_LOAD (1.3), masked set_field (1.5) or REG_LOAD2."""
    proto = OfProto(ofmsg.OF15)
    p = proto.ofproto_parser
    expected = LoadReg(PKT_SOURCE, 3)
    forms = [
        p.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(0, 3), dst="reg0", value=3),
        p.OFPActionSetField(reg0=(3, 0xF)),
        p.NXActionRegLoad2(dst="reg0", value=3, mask=0xF),
        p.OFPActionSetField(xreg0=(3 << 32, 0xF << 32)),
    ]
    for form in forms:
        inst = p.OFPInstructionActions(proto.ofproto.OFPIT_APPLY_ACTIONS, [form])
        assert ofmsg.actions_from_instructions(proto, [inst]) == (expected,), form
    whole = p.OFPActionSetField(reg1=7)
    inst = p.OFPInstructionActions(proto.ofproto.OFPIT_APPLY_ACTIONS, [whole])
    assert ofmsg.actions_from_instructions(proto, [inst]) == (LoadReg(OUT_PORT, 7),)


def test_of15_packet_register_matches_split_into_registers() -> None:
    """In 1.5 OVS writes reg matches back as 64-bit xregs (reg0 in xreg0's upper half)."""
    assert ofmsg.match_from_oxm([("eth_type", 0x800), ("xreg0", (0x3 << 32, 0xF << 32))]) == Match.of(
        proto="ip", reg0="0x3/0xf"
    )
    assert ofmsg.match_from_oxm([("xreg0", (0x1_00000002, 0xFFFFFFFF_FFFFFFFF))]) == Match.of(
        reg0="0x1", reg1="0x2"
    )


def test_fields_sluice_does_not_model_survive_for_a_strict_delete() -> None:
    """A hand-added flow must be deletable exactly: its unmodelled match fields are kept."""
    proto = OfProto(ofmsg.OF15)
    p = proto.ofproto_parser
    ofp = proto.ofproto
    hand = p.OFPFlowMod(
        proto,
        cookie=0x99,
        table_id=50,
        command=ofp.OFPFC_ADD,
        priority=5,
        match=p.OFPMatch(
            eth_type=0x800, ip_proto=1, icmpv4_type=8, eth_dst=("01:00:00:00:00:00", "01:00:00:00:00:00")
        ),
        instructions=[
            p.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, [p.OFPActionOutput(ofp.OFPP_CONTROLLER, 0xFFFF)]
            ),
            p.OFPInstructionGotoTable(200),
        ],
    )
    data = ofmsg.serialize(hand)
    flow = ofmsg.flow_from_entry(proto, ofmsg.parse(proto, data))
    assert (flow.table.number, flow.table.name, flow.priority, flow.cookie) == (50, "table50", 5, 0x99)
    assert flow.match.get("proto") == "icmp"
    assert flow.match.get("oxm:icmpv4_type") == "0x8"
    assert all(isinstance(a, RawAction) for a in flow.actions)
    with pytest.raises(OfMsgError, match="cannot be sent"):
        ofmsg.flow_mod(proto, flow, Command.ADD)
    delete_bytes = ofmsg.serialize(ofmsg.flow_mod(proto, flow, Command.DELETE_STRICT))
    assert ofmsg.FlowModEncoder(proto).encode(flow, Command.DELETE_STRICT) == delete_bytes
    delete = ofmsg.parse(proto, delete_bytes)
    assert sorted(delete.match._fields2) == sorted(hand.match._fields2)
    assert (delete.table_id, delete.priority) == (50, 5)


def test_flows_that_have_no_openflow_form_are_refused() -> None:
    proto = OfProto()
    bad = [
        Flow(OUTPUT, 1, Match(), (SetField("nw_ttl", "5"),), checked=False),
        Flow(OUTPUT, 1, Match.of(tp_dst=80), (), checked=False),
        Flow(OUTPUT, 1, Match.of(dl_vlan=5), (), checked=False),
        Flow(OUTPUT, 1, Match(), (GotoTable("output"), Output(1)), checked=False),
        Flow(OUTPUT, 1, Match(), (Move("NXM_OF_ETH_SRC[]", "NXM_NX_REG0[]"),), checked=False),
    ]
    for flow in bad:
        with pytest.raises(OfMsgError):
            ofmsg.flow_mod(proto, flow, Command.ADD)


def test_of15_copy_field_read_back_is_parsed_past_its_padding() -> None:
    """os-ken's own OFPActionCopyField parser overruns into the next action; ours does not."""
    proto = OfProto(ofmsg.OF15)
    flow = Flow(
        OUTPUT,
        9,
        Match(),
        (
            Move("NXM_OF_ETH_SRC[]", "NXM_OF_ETH_DST[]"),
            Move("NXM_NX_ARP_SHA[]", "NXM_NX_ARP_THA[]"),
            InPort(),
        ),
    )
    data = ofmsg.serialize(ofmsg.flow_mod(proto, flow, Command.ADD))
    assert ofmsg.flow_from_entry(proto, ofmsg.parse(proto, data)) == flow


# ---- bundles ---------------------------------------------------------------------------------


def test_bundle_add_wraps_cached_bytes_with_the_outer_xid() -> None:
    proto = OfProto(ofmsg.OF15)
    flow = example_flows()[0]
    inner = ofmsg.serialize(ofmsg.flow_mod(proto, flow, Command.ADD))
    data = ofmsg.bundle_add(inner, xid=0x1234, bundle_id=77, flags=ofmsg.OFPBF_ATOMIC)
    version, msg_type, length, xid, bundle_id, pad, flags = struct.unpack_from("!BBHIIHH", data)
    assert (version, msg_type, length, xid) == (6, ofmsg.OFPT_BUNDLE_ADD_MESSAGE, len(data), 0x1234)
    assert (bundle_id, pad, flags) == (77, 0, ofmsg.OFPBF_ATOMIC)
    wrapped = data[16:]
    assert len(wrapped) == len(inner)
    # OVS requires the inner xid to equal the outer one (else OFPBFC_MSG_BAD_XID).
    assert struct.unpack_from("!I", wrapped, 4)[0] == 0x1234
    msg = ofmsg.parse(proto, wrapped)
    assert msg.xid == 0x1234 and ofmsg.flow_from_entry(proto, msg) == flow
    # os-ken's own OFPBundleAddMsg produces the same bytes.
    p = proto.ofproto_parser
    theirs = p.OFPBundleAddMsg(proto, 77, ofmsg.OFPBF_ATOMIC, ofmsg.flow_mod(proto, flow, Command.ADD), [])
    theirs.xid = 0x1234
    assert ofmsg.serialize(theirs) == data


def test_bundles_need_openflow_1_4() -> None:
    inner = ofmsg.serialize(ofmsg.flow_mod(OfProto(ofmsg.OF13), example_flows()[0], Command.ADD))
    with pytest.raises(OfMsgError, match=r"1\.4"):
        ofmsg.bundle_add(inner, xid=1, bundle_id=1, flags=0)
    with pytest.raises(OfMsgError, match=r"1\.4"):
        ofmsg.bundle_ctrl(ofmsg.OF13, ofmsg.BundleCtrl.OPEN_REQUEST, xid=1, bundle_id=1, flags=0)


def test_bundle_ctrl_matches_os_ken() -> None:
    proto = OfProto(ofmsg.OF15)
    for kind in ofmsg.BundleCtrl:
        data = ofmsg.bundle_ctrl(ofmsg.OF15, kind, xid=9, bundle_id=3, flags=3)
        msg = ofmsg.parse(proto, data)
        assert (msg.xid, msg.bundle_id, msg.type, msg.flags) == (9, 3, int(kind), 3)


def test_bundle_messages_put_deletes_first_and_map_every_xid_to_its_flow() -> None:
    proto = OfProto(ofmsg.OF15)
    cache = FlowModCache(proto)
    flows = example_flows()
    deletes, adds = flows[:3], flows[3:10]
    bundle = ofmsg.bundle_messages(cache, deletes, adds, bundle_id=5, first_xid=0xFFFFFFFE)
    assert bundle.open_xid == 0xFFFFFFFE
    xids = [struct.unpack_from("!I", m, 4)[0] for m in bundle.adds]
    assert xids == [0xFFFFFFFF, *range(0, 9)]  # consecutive, wrapping at 32 bits
    assert [bundle.flows_by_xid[x] for x in xids] == [
        *((Command.DELETE_STRICT, f) for f in deletes),
        *((Command.ADD, f) for f in adds),
    ]
    assert (bundle.barrier_xid, bundle.commit_xid, bundle.discard_xid) == (9, 10, 11)
    for data, (command, flow) in zip(bundle.adds, bundle.flows_by_xid.values(), strict=True):
        inner = ofmsg.parse(proto, data[16:])
        expected = proto.ofproto.OFPFC_ADD if command is Command.ADD else proto.ofproto.OFPFC_DELETE_STRICT
        assert inner.command == expected
        assert ofmsg.match_from_oxm(inner.match._fields2) == flow.match
    assert ofmsg.parse(proto, bundle.open).type == ofmsg.BundleCtrl.OPEN_REQUEST
    assert ofmsg.parse(proto, bundle.commit).type == ofmsg.BundleCtrl.COMMIT_REQUEST
    assert ofmsg.parse(proto, bundle.discard).type == ofmsg.BundleCtrl.DISCARD_REQUEST
    barrier = proto.ofproto_parser.OFPBarrierRequest(proto)
    barrier.xid = bundle.barrier_xid
    assert bundle.barrier == ofmsg.serialize(barrier)


def test_bundle_plan_encodes_the_same_messages_slice_by_slice() -> None:
    proto = OfProto(ofmsg.OF15)
    flows = [*example_flows(), *extra_flows()]
    deletes, adds = flows[:4], flows[4:]
    whole = ofmsg.bundle_messages(FlowModCache(proto), deletes, adds, bundle_id=7, first_xid=0xFFFFFFFD)
    plan = ofmsg.bundle_plan(ofmsg.OF15, deletes, adds, bundle_id=7, first_xid=0xFFFFFFFD)
    cache = FlowModCache(proto)
    sliced = b"".join(plan.encode(cache, i, i + 3) for i in range(0, len(flows), 3))
    assert sliced == b"".join(whole.adds)
    assert plan.encode(cache, 0, len(flows)) == sliced  # warm: the same bytes again
    assert (plan.open, plan.barrier, plan.commit, plan.discard) == (
        whole.open, whole.barrier, whole.commit, whole.discard,
    )  # fmt: skip
    assert dict(plan.flows_by_xid) == dict(whole.flows_by_xid)
    assert (plan.open_xid, plan.barrier_xid, plan.commit_xid, plan.discard_xid) == (
        whole.open_xid, whole.barrier_xid, whole.commit_xid, whole.discard_xid,
    )  # fmt: skip
    with pytest.raises(ofmsg.OfMsgError, match=r"1\.4 or later"):
        plan.encode(FlowModCache(OfProto(ofmsg.OF13)), 0, 1)


# ---- cache -----------------------------------------------------------------------------------


def test_cache_returns_the_same_bytes_and_counts_hits() -> None:
    proto = OfProto(ofmsg.OF15)
    cache = FlowModCache(proto)
    per_node = compile_cluster(example_cluster())
    node1, node2 = (list(per_node[n]) for n in ("node-1", "node-2"))
    for flow in node1:
        assert cache.get(Command.ADD, flow) == ofmsg.serialize(ofmsg.flow_mod(proto, flow, Command.ADD))
    assert cache.stats() == ofmsg.CacheStats(hits=0, misses=len(node1), size=len(node1))
    for flow in node2:
        cache.get(Command.ADD, flow)
    shared = len(set(node1) & set(node2))
    assert shared > 0  # pipeline defaults are the same on every node
    assert cache.stats().hits == shared
    # A re-push of node-1 (reconnect, failover) serializes nothing.
    before = cache.stats()
    for flow in node1:
        cache.get(Command.ADD, flow)
    assert cache.stats().misses == before.misses
    # The command is part of the key.
    assert cache.get(Command.DELETE_STRICT, node1[0]) != cache.get(Command.ADD, node1[0])


def test_cache_evicts_the_least_recently_used() -> None:
    cache = FlowModCache(OfProto(), max_entries=2)
    a, b, c = example_flows()[:3]
    cache.get(Command.ADD, a)
    cache.get(Command.ADD, b)
    cache.get(Command.ADD, a)  # a is now the most recent
    cache.get(Command.ADD, c)  # evicts b
    assert cache.stats().size == 2
    misses = cache.stats().misses
    cache.get(Command.ADD, a)
    assert cache.stats().misses == misses
    cache.get(Command.ADD, b)
    assert cache.stats().misses == misses + 1


def test_cache_forgets_the_flows_a_switch_dropped_under_both_commands() -> None:
    proto = OfProto(ofmsg.OF15)
    cache = FlowModCache(proto)
    kept, gone, replaced = example_flows()[:3]
    for flow in (kept, gone, replaced):
        cache.get(Command.ADD, flow)
    cache.get(Command.DELETE_STRICT, gone)
    assert cache.stats().size == 4
    cache.forget([gone, replaced])
    assert cache.stats().size == 1
    misses = cache.stats().misses
    assert cache.get(Command.ADD, kept) == ofmsg.serialize(ofmsg.flow_mod(proto, kept, Command.ADD))
    assert cache.stats().misses == misses  # still cached
    # A forgotten flow pushed again (another switch still holds it) is encoded again, the same.
    assert cache.get(Command.ADD, gone) == ofmsg.serialize(ofmsg.flow_mod(proto, gone, Command.ADD))
    assert cache.stats().misses == misses + 1
    cache.forget([example_flows()[5]])  # never cached: nothing to do
    assert cache.stats().size == 2


def test_cache_is_safe_to_share_between_threads() -> None:
    proto = OfProto()
    cache = FlowModCache(proto, max_entries=10)
    flows = example_flows()
    expected = {f: ofmsg.serialize(ofmsg.flow_mod(proto, f, Command.ADD)) for f in flows}
    errors: list[str] = []

    def hammer() -> None:
        for _ in range(3):
            for flow in flows:
                if cache.get(Command.ADD, flow) != expected[flow]:
                    errors.append(flow.render())

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.stats().size <= 10


def test_installed_flowset_reads_back_the_compiled_set() -> None:
    proto = OfProto(ofmsg.OF15)
    flows = compile_cluster(example_cluster())["node-2"]
    entries = [ofmsg.parse(proto, ofmsg.serialize(ofmsg.flow_mod(proto, f, Command.ADD))) for f in flows]
    assert ofmsg.installed_flowset(proto, entries) == flows


def test_flow_desc_request_asks_for_every_table() -> None:
    for version, name in ((ofmsg.OF15, "OFPFlowDescStatsRequest"), (ofmsg.OF13, "OFPFlowStatsRequest")):
        proto = OfProto(version)
        msg = ofmsg.flow_desc_request(proto)
        assert type(msg).__name__ == name
        data = ofmsg.serialize(msg)
        # ofp_multipart_request: header, type (OFPMP_FLOW_DESC = OFPMP_FLOW = 1), flags, pad;
        # then table_id (OFPTT_ALL), pad, out_port (OFPP_ANY), out_group (OFPG_ANY).
        mp_type, table_id, out_port, out_group = struct.unpack_from("!H6xB3xII", data, 8)
        assert (data[1], mp_type) == (proto.ofproto.OFPT_MULTIPART_REQUEST, 1)
        assert (table_id, out_port, out_group) == (0xFF, 0xFFFFFFFF, 0xFFFFFFFF)
