"""Conntrack flows: track IPv4 in the pod zone, let established traffic skip policy, commit new."""

from __future__ import annotations

from flows import cookies
from flows.cookies import Category
from flows.fields import POD_CT_ZONE
from flows.model import Ct, Flow, GotoTable, Match
from flows.tables import CONNTRACK, CONNTRACK_COMMIT, CONNTRACK_STATE

TRACK_PRIORITY = 200
INVALID_PRIORITY = 210
ESTABLISHED_PRIORITY = 200
DEFAULT_PRIORITY = 0


def conntrack_flows() -> list[Flow]:
    """Return the fixed flows of the conntrack, conntrack_state and conntrack_commit tables."""
    cookie = cookies.make(Category.PIPELINE)
    return [
        Flow(
            CONNTRACK,
            TRACK_PRIORITY,
            Match.of(proto="ip"),
            (Ct(zone=POD_CT_ZONE, table="conntrack_state"),),
            cookie,
        ),
        Flow(CONNTRACK, DEFAULT_PRIORITY, Match(), (), cookie),
        Flow(CONNTRACK_STATE, INVALID_PRIORITY, Match.of(proto="ip", ct_state="+inv+trk"), (), cookie),
        Flow(
            CONNTRACK_STATE,
            ESTABLISHED_PRIORITY,
            Match.of(proto="ip", ct_state="+est+trk"),
            (GotoTable("l3_forwarding"),),
            cookie,
        ),
        Flow(
            CONNTRACK_STATE,
            ESTABLISHED_PRIORITY,
            Match.of(proto="ip", ct_state="+rel+trk"),
            (GotoTable("l3_forwarding"),),
            cookie,
        ),
        Flow(CONNTRACK_STATE, DEFAULT_PRIORITY, Match(), (GotoTable("egress_policy"),), cookie),
        Flow(
            CONNTRACK_COMMIT,
            TRACK_PRIORITY,
            Match.of(proto="ip", ct_state="+new+trk"),
            (Ct(zone=POD_CT_ZONE, commit=True), GotoTable("output")),
            cookie,
        ),
        Flow(CONNTRACK_COMMIT, DEFAULT_PRIORITY, Match(), (GotoTable("output"),), cookie),
    ]
