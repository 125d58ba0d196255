"""ovs-ofctl text: rendered flows parse back to equal Flows; OF1.3 and OF1.5 spellings agree."""

from __future__ import annotations

import pytest

from flows.compiler import compile_node
from flows.diff import Plan, diff
from flows.example import example_cluster
from flows.fields import OUT_PORT, PKT_SOURCE
from flows.flowset import FlowSet
from flows.model import Ct, GotoTable, InPort, LoadReg, Match, OutputReg, RawAction, SetField
from flows.ofctl import ParseError, parse_actions, parse_dump, parse_flow, render_plan


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_every_compiled_flow_parses_back_equal(node: str) -> None:
    for flow in compile_node(example_cluster(), node):
        assert parse_flow(flow.render()) == flow


def test_dump_line_with_statistics_and_default_priority() -> None:
    line = (
        " cookie=0x1020000000005, duration=0.008s, table=11, n_packets=3, n_bytes=180, "
        "idle_age=0, reg1=0x7 actions=output:NXM_NX_REG1[]"
    )
    flow = parse_flow(line)
    assert (flow.table.name, flow.priority, flow.cookie) == ("output", 32768, 0x1020000000005)
    assert flow.match == Match.of(reg1=7)
    assert flow.actions == (OutputReg(OUT_PORT),)


def test_openflow13_and_15_register_writes_are_the_same_action() -> None:
    of13 = parse_actions("load:0x3->NXM_NX_REG0[0..3],load:0xa->NXM_NX_REG1[],goto_table:3")
    of15 = parse_actions("set_field:0x3/0xf->reg0,set_field:0xa->reg1,goto_table:3")
    assert of13 == of15 == (LoadReg(PKT_SOURCE, 3), LoadReg(OUT_PORT, 10), GotoTable("conntrack"))


def test_match_field_order_and_spelling_are_normalized() -> None:
    a = parse_flow("table=2, priority=200,arp,arp_tpa=100.64.1.1,arp_op=1 actions=IN_PORT")
    b = parse_flow("table=2,priority=200,arp,arp_op=0x1,arp_tpa=100.64.1.1/32,actions=in_port")
    assert a == b
    assert a.actions == (InPort(),)


def test_ct_and_unknown_actions() -> None:
    assert parse_actions("ct(commit,zone=65520),goto_table:11") == (
        Ct(zone=65520, commit=True),
        GotoTable("output"),
    )
    assert parse_actions("ct(table=4,zone=65520)") == (Ct(zone=65520, table="conntrack_state"),)
    assert parse_actions("NORMAL,set_field:0a:58:64:40:01:01->eth_src") == (
        RawAction("NORMAL"),
        SetField("eth_src", "0a:58:64:40:01:01"),
    )
    assert parse_actions("drop") == ()


def test_hand_added_flow_outside_the_contract_still_parses() -> None:
    flow = parse_flow("table=0, priority=5,tcp,tp_dst=80 actions=NORMAL")
    assert flow.match.get("tp_dst") == "80" and flow.actions == (RawAction("NORMAL"),)


def test_bad_lines_raise_parse_error_quoting_them() -> None:
    with pytest.raises(ParseError, match="no actions"):
        parse_flow("table=0,priority=1,ip")
    with pytest.raises(ParseError, match="nw_src=banana"):
        parse_flow("table=0,priority=1,ip,nw_src=banana actions=drop")
    with pytest.raises(ParseError, match="no table number 99"):
        parse_flow("table=99,priority=1 actions=drop")


def test_parse_dump_skips_headers() -> None:
    flows = compile_node(example_cluster(), "node-1")
    text = "OFPST_FLOW reply (OF1.5) (xid=0x2):\n" + "".join(f" {f.render()}\n" for f in flows.sorted())
    assert parse_dump(text) == flows


def test_plan_renders_strict_deletes_before_adds() -> None:
    full = compile_node(example_cluster(), "node-1")
    plan = diff(full, FlowSet.of(list(full)[:-1]))
    text = render_plan(plan)
    assert text.startswith("delete_strict table=")
    assert "cookie" not in text.splitlines()[0]
    assert render_plan(Plan((), (), ())) == ""
