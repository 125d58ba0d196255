"""CNI error codes (the spec's well-known codes, named as libcni names them) and the CniError exception."""

# No `from __future__ import annotations` (see cni/plugin.py): annotations that name typing-only
# names are quoted.


class ErrorCode:
    """The CNI spec's well-known error codes (0-99 reserved), plus libcni's 8 and 999.

    Names follow libcni's `pkg/types` constants (`ErrTryAgainLater` -> TRY_AGAIN_LATER).
    Codes 100 and above are free for plugin-specific errors; the agent may return them.
    Plain ints, not an IntEnum: `enum` costs milliseconds at every plugin start.
    """

    INCOMPATIBLE_CNI_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT_VARIABLES = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    INVALID_NETNS = 8
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    INTERNAL = 999

    @classmethod
    def names(cls) -> dict[str, int]:
        """Return every code by name."""
        return {k: v for k, v in vars(cls).items() if k.isupper() and isinstance(v, int)}


class CniError(Exception):
    """A failure that ends a CNI call: printed by the plugin as `{"cniVersion","code","msg","details"}`."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(code, msg, details)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        text = f"CNI error {self.code}: {self.msg}"
        return f"{text} ({self.details})" if self.details else text
