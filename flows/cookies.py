"""The cookie layout: generation | category | object id, so a flow says what it belongs to."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

# 64-bit cookie:  [63..56] generation  [55..48] category  [47..0] object id
GENERATION_SHIFT = 56
CATEGORY_SHIFT = 48
OBJECT_BITS = 48
OBJECT_MASK = (1 << OBJECT_BITS) - 1

# The pipeline generation: bumped whenever the flow layout changes incompatibly, so that flows
# written by an older Sluice are recognisable (and swept by the diff, which deletes every flow
# the new compile does not produce). It is not bumped on restart: a restarted controller must
# produce byte-identical cookies, or it would rewrite every flow.
GENERATION = 1


class Category(enum.IntEnum):
    """What kind of object a flow exists for."""

    PIPELINE = 1  # fixed per-table defaults, the same on every node
    NODE = 2  # this node's gateway and tunnel
    POD = 3  # one local pod
    REMOTE_NODE = 4  # one other node (its podCIDR and gateway)
    POLICY = 5  # one NetworkPolicy (reserved for the policy compiler)


@dataclass(frozen=True, slots=True)
class Cookie:
    """A decoded cookie."""

    generation: int
    category: Category | int
    object_id: int

    @property
    def value(self) -> int:
        """Return the 64-bit cookie."""
        return (
            (self.generation << GENERATION_SHIFT)
            | (int(self.category) << CATEGORY_SHIFT)
            | (self.object_id & OBJECT_MASK)
        )


def object_id(key: str) -> int:
    """Return the stable 48-bit id of an object key such as `pod/namespace/name`.

    A hash, so that anyone (the controller, the agent, `sluice flows --pod`) can compute a
    pod's cookie from its namespace and name without a lookup table.
    """
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=6).digest(), "big")


def pod_key(namespace: str, name: str) -> str:
    """Return the object key of a pod."""
    return f"pod/{namespace}/{name}"


def node_key(name: str) -> str:
    """Return the object key of a node."""
    return f"node/{name}"


def make(category: Category, key: str = "") -> int:
    """Return the cookie for flows of `category` belonging to the object named by `key`."""
    return Cookie(GENERATION, category, object_id(key) if key else 0).value


def pod_cookie(namespace: str, name: str) -> int:
    """Return the cookie of a pod's flows."""
    return make(Category.POD, pod_key(namespace, name))


def decode(value: int) -> Cookie:
    """Return the fields of a 64-bit cookie (unknown categories stay plain ints)."""
    raw_category = (value >> CATEGORY_SHIFT) & 0xFF
    category: Category | int
    try:
        category = Category(raw_category)
    except ValueError:
        category = raw_category
    return Cookie(value >> GENERATION_SHIFT, category, value & OBJECT_MASK)
