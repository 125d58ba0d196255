"""Properties of diff/apply: applying a diff reaches the target, a set diffed with itself is empty."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.compiler import compile_node
from flows.diff import apply, diff
from flows.example import example_cluster
from flows.flowset import FlowSet
from flows.model import Flow, Match, Output
from flows.tables import table

_TABLES = [table(n) for n in ("egress_policy", "l3_forwarding", "ingress_policy", "ingress_default")]
_DSTS = [None, "100.64.1.0/24", "100.64.1.2", "100.64.2.0/24"]


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    """Draw a flow from a small universe, so that keys collide often."""
    return Flow(
        draw(st.sampled_from(_TABLES)),
        draw(st.integers(0, 3)),
        Match.of(proto=draw(st.sampled_from(["ip", "tcp"])), nw_dst=draw(st.sampled_from(_DSTS))),
        draw(st.sampled_from([(), (Output(1),), (Output(2),)])),
        draw(st.integers(0, 2)),
    )


@st.composite
def flow_sets(draw: st.DrawFn) -> FlowSet:
    """Draw a FlowSet (last flow wins on a key collision)."""
    by_key = {f.key: f for f in draw(st.lists(flows(), max_size=25))}
    return FlowSet.of(by_key.values())


@settings(max_examples=300)
@given(flow_sets(), flow_sets())
def test_applying_the_diff_reaches_the_target(a: FlowSet, b: FlowSet) -> None:
    assert apply(a, diff(a, b)) == b


@given(flow_sets())
def test_diff_of_a_set_with_itself_is_empty(a: FlowSet) -> None:
    assert diff(a, a).empty


@given(flow_sets(), flow_sets())
def test_change_then_revert_is_a_no_op(a: FlowSet, b: FlowSet) -> None:
    b_state = apply(a, diff(a, b))
    assert apply(b_state, diff(b_state, a)) == a


@given(flow_sets(), flow_sets())
def test_plan_is_minimal_and_deletes_are_strict(a: FlowSet, b: FlowSet) -> None:
    plan = diff(a, b)
    assert {f.key for f in plan.adds} == set(b.by_key) - set(a.by_key)
    assert {f.key for f in plan.deletes} == set(a.by_key) - set(b.by_key)
    changed = {k for k in set(a.by_key) & set(b.by_key) if a.by_key[k] != b.by_key[k]}
    assert {f.key for f in plan.modifies} == changed
    # each delete names one existing flow by its full key: never a wildcard
    assert all(a.by_key[f.key] == f for f in plan.deletes)


def test_adding_one_pod_adds_only_its_flows() -> None:
    import dataclasses

    c = example_cluster()
    fewer = dataclasses.replace(c, pods=c.pods[1:])
    plan = diff(compile_node(fewer, "node-1"), compile_node(c, "node-1"))
    assert len(plan.adds) == 5 and not plan.modifies and not plan.deletes
