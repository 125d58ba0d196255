"""Table contracts: flows that break their table's declaration are refused when built."""

from __future__ import annotations

import pytest

from flows.fields import OUT_PORT, PKT_SOURCE
from flows.model import ContractError, Ct, Flow, GotoTable, LoadReg, Match, Output
from flows.tables import CLASSIFIER, CONNTRACK, L3_FORWARDING, OUTPUT, PIPELINE, table


def test_tables_are_numbered_in_declaration_order() -> None:
    assert [t.number for t in PIPELINE] == list(range(len(PIPELINE)))
    assert PIPELINE[0].name == "classifier"
    assert PIPELINE[-1].name == "output"


def test_every_goto_goes_forward_to_a_declared_table() -> None:
    for t in PIPELINE:
        for target in t.goes_to:
            assert table(target).number > t.number


def test_match_on_field_not_accepted_is_refused() -> None:
    with pytest.raises(ContractError, match="does not accept match on nw_dst"):
        Flow(CLASSIFIER, 10, Match.of(proto="ip", nw_dst="100.64.1.2"), ())


def test_goto_to_table_not_declared_as_next_is_refused() -> None:
    with pytest.raises(ContractError, match="classifier may not go to output"):
        Flow(CLASSIFIER, 10, Match.of(in_port=1), (GotoTable("output"),))


def test_ct_recirculation_target_is_checked_too() -> None:
    with pytest.raises(ContractError, match="conntrack may not go to output"):
        Flow(CONNTRACK, 10, Match.of(proto="ip"), (Ct(zone=1, table="output"),))


def test_goto_must_be_the_last_action() -> None:
    with pytest.raises(ContractError, match="must be last"):
        Flow(L3_FORWARDING, 1, Match(), (GotoTable("ingress_policy"), LoadReg(OUT_PORT, 1)))


def test_unknown_table_name_is_an_error() -> None:
    with pytest.raises(KeyError, match="no table named 'nope'"):
        table("nope")


def test_register_values_must_fit_their_field() -> None:
    with pytest.raises(ValueError, match="does not fit pkt_source"):
        LoadReg(PKT_SOURCE, 16)


def test_valid_flow_builds_and_renders() -> None:
    flow = Flow(OUTPUT, 5, Match.of(reg1=7), (Output(7),), cookie=0x10)
    assert flow.render() == "table=11,priority=5,cookie=0x10,reg1=0x7,actions=output:7"


def test_register_match_merges_bits_of_one_register() -> None:
    m = Match.of(proto="ip").with_reg(PKT_SOURCE, 3)
    assert m.get("reg0") == "0x3/0xf"
    with pytest.raises(ValueError, match="matched twice"):
        m.with_reg(PKT_SOURCE, 1)
