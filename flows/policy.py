"""Policy-table defaults: established traffic skips ingress policy; everything else is allowed for now.

NetworkPolicy is not compiled yet (a later issue): these are the flows the policy tables hold
with no policy, so the pipeline has its final shape and allows all traffic.
"""

from __future__ import annotations

from flows import cookies
from flows.cookies import Category
from flows.model import Flow, GotoTable, Match
from flows.tables import EGRESS_DEFAULT, EGRESS_POLICY, INGRESS_DEFAULT, INGRESS_POLICY

ESTABLISHED_PRIORITY = 200
DEFAULT_PRIORITY = 0


def policy_default_flows() -> list[Flow]:
    """Return the allow-all defaults of the four policy tables."""
    cookie = cookies.make(Category.PIPELINE)
    return [
        Flow(EGRESS_POLICY, DEFAULT_PRIORITY, Match(), (GotoTable("egress_default"),), cookie),
        Flow(EGRESS_DEFAULT, DEFAULT_PRIORITY, Match(), (GotoTable("l3_forwarding"),), cookie),
        Flow(
            INGRESS_POLICY,
            ESTABLISHED_PRIORITY,
            Match.of(proto="ip", ct_state="+est+trk"),
            (GotoTable("output"),),
            cookie,
        ),
        Flow(
            INGRESS_POLICY,
            ESTABLISHED_PRIORITY,
            Match.of(proto="ip", ct_state="+rel+trk"),
            (GotoTable("output"),),
            cookie,
        ),
        Flow(INGRESS_POLICY, DEFAULT_PRIORITY, Match(), (GotoTable("ingress_default"),), cookie),
        Flow(INGRESS_DEFAULT, DEFAULT_PRIORITY, Match(), (GotoTable("conntrack_commit"),), cookie),
    ]
