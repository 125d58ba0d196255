"""JSON for the plugin's start-up path: the interpreter's C accelerator `_json`, without importing `json`.

`import json` pulls in `re` and `enum` and costs several milliseconds, paid at every plugin exec
(a runtime execs the plugin for each pod). `json` itself is a thin layer over the C scanner and
encoder in `_json`; this module drives them directly and gives the same values and the same text
as `json.loads` and `json.dumps` (ASCII output, NaN and infinities refused on output). Only a
parse error imports `json`, to report it in json's own words.
"""

# No `from __future__ import annotations`: on the VERSION path even that import is measurable.

# CPython always has `_json` (json relies on it); no fallback is kept for a build without it.
from _json import encode_basestring_ascii as _encode_string
from _json import make_encoder as _make_encoder
from _json import make_scanner as _make_scanner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_JSON_WHITESPACE = " \t\n\r"


class _ScanContext:
    # The attributes the C scanner reads from its context (json.decoder.JSONDecoder's defaults).
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # 'NaN', 'Infinity', '-Infinity', as json.loads accepts them


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_SCAN: "Any" = _make_scanner(_ScanContext())  # type: ignore[arg-type]  # a duck-typed context


def loads(text: str) -> object:
    """Return the value of the JSON document `text`, as `json.loads` does.

    Raises ValueError (json's JSONDecodeError, with json's own message) or RecursionError.
    """
    start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
    try:
        value, end = _SCAN(text, start)
        if not text[end:].strip(_JSON_WHITESPACE):
            return value
    except RecursionError:
        raise
    except Exception:
        # On bad input the C scanner builds json.decoder.JSONDecodeError only if `json` is
        # already loaded (otherwise: a bare StopIteration, or a SystemError); the error path is
        # rare, so let `json` parse it again and raise its usual error with line and column.
        pass
    import json

    return json.loads(text)


def dumps(value: object, *, compact: bool = False) -> str:
    """Return `value` as JSON text, as `json.dumps(value)` does (with `compact`, `separators=(",", ":")`).

    NaN and infinities are refused (ValueError), like `json.dumps(..., allow_nan=False)`; an
    object JSON cannot hold raises TypeError; a cycle raises ValueError.
    """
    key_sep, item_sep = (":", ",") if compact else (": ", ", ")
    # markers (cycle check), default, string encoder, indent, key and item separators,
    # sort_keys, skipkeys, allow_nan: json.encoder.JSONEncoder.iterencode's call, one-shot
    encoder = _make_encoder(
        {}, _not_serializable, _encode_string, None, key_sep, item_sep, False, False, False
    )
    return "".join(encoder(value, 0))
