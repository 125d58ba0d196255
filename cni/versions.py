"""The CNI spec versions the plugin speaks; imports nothing, so VERSION stays as fast as `python -c pass`."""

# No `from __future__ import annotations`: on the VERSION path even that import is measurable.

#: The version this plugin prefers: used for VERSION output when the input names none, and for
#: errors raised before the network config could be read.
CURRENT_VERSION = "1.1.0"

#: Every version whose results the plugin shapes. 0.3.0 and 0.3.1 share the 0.4.0 result shape
#: (libcni's types040 serves all three); 1.0.0 and 1.1.0 share types100 minus 1.1's new fields.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

#: Commands that exist only from a given spec version on.
MIN_VERSION: dict[str, str] = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}


def version_tuple(version: str) -> tuple[int, int, int] | None:
    """Return (major, minor, patch) for a plain `X.Y.Z` version string, or None if it is not one."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_at_least(version: str, minimum: str) -> bool:
    """Return True when `version` is a valid X.Y.Z at or above `minimum`."""
    have, need = version_tuple(version), version_tuple(minimum)
    return have is not None and need is not None and have >= need
