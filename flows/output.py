"""Output flow: the packet leaves by the port l3_forwarding chose."""

from __future__ import annotations

from flows import cookies
from flows.cookies import Category
from flows.fields import OUT_PORT
from flows.model import Flow, Match, OutputReg
from flows.tables import OUTPUT

DEFAULT_PRIORITY = 0


def output_flows() -> list[Flow]:
    """Return the single flow outputting to the port in `out_port`."""
    return [
        Flow(
            OUTPUT,
            DEFAULT_PRIORITY,
            Match(),
            (OutputReg(OUT_PORT),),
            cookies.make(Category.PIPELINE),
        )
    ]
