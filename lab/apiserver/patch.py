"""The three patch formats of the Kubernetes API: JSON merge patch, JSON patch and strategic merge patch.

* JSON merge patch: RFC 7386.
* JSON patch: RFC 6902 (add, remove, replace, move, copy, test).
* Strategic merge patch: lists whose Go field carries `patchStrategy:"merge"` are merged by their
  `patchMergeKey` (containers by name, container ports by containerPort, conditions by type...);
  every other list is replaced. The directives `$patch: replace|delete|merge`, `$retainKeys`,
  `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` are honoured; for the last one,
  elements named in the order come first in that order and server-only elements follow in their
  previous relative order (the real server interleaves them by position).

Malformed patch documents raise PatchFormatError (a 400 on the wire); patches that cannot be
applied to this object raise PatchApplyError (a 422).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any


class PatchFormatError(ValueError):
    """The patch document itself is malformed."""


class PatchApplyError(ValueError):
    """The patch is well formed but cannot be applied to this object (missing path, failed test...)."""


# ---------------------------------------------------------------------------------------------
# RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch to `target` and return the result (inputs are not modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------------------------------
# RFC 6902


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchFormatError(f"path must be a string, got {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFormatError(f"JSON pointer must be empty or start with '/': {path!r}")
    return [tok.replace("~1", "/").replace("~0", "~") for tok in path[1:].split("/")]


def _index(token: str, size: int, *, allow_end: bool, path: str) -> int:
    if allow_end and token == "-":
        return size
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchApplyError(f"invalid array index {token!r} in {path!r}")
    index = int(token)
    if index > size or (index == size and not allow_end):
        raise PatchApplyError(f"array index {index} out of range in {path!r}")
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    cur = doc
    for tok in tokens[:-1]:
        if isinstance(cur, dict):
            if tok not in cur:
                raise PatchApplyError(f"path {path!r} does not exist: missing {tok!r}")
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_index(tok, len(cur), allow_end=False, path=path)]
        else:
            raise PatchApplyError(f"path {path!r} does not exist: {tok!r} is inside a scalar")
    return cur


def _get(doc: Any, tokens: list[str], path: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchApplyError(f"path {path!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(last, len(parent), allow_end=False, path=path)]
    raise PatchApplyError(f"path {path!r} does not exist")


def _add(doc: Any, tokens: list[str], value: Any, path: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True, path=path), value)
    else:
        raise PatchApplyError(f"cannot add at {path!r}: parent is not an object or array")
    return doc


def _remove(doc: Any, tokens: list[str], path: str) -> tuple[Any, Any]:
    if not tokens:
        raise PatchApplyError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchApplyError(f"cannot remove {path!r}: it does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), allow_end=False, path=path))
    raise PatchApplyError(f"cannot remove {path!r}: it does not exist")


def json_equal(a: Any, b: Any) -> bool:
    """Compare two JSON values the way RFC 6902 `test` does (booleans are not numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch (a list of operations) to a copy of `doc` and return the result."""
    if not isinstance(operations, list):
        raise PatchFormatError("a JSON patch must be a list of operations")
    result = copy.deepcopy(doc)
    for n, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise PatchFormatError(f'operation {n} must be an object with an "op" string')
        kind = op["op"]
        if "path" not in op:
            raise PatchFormatError(f'operation {n} ({kind}) is missing "path"')
        path = op["path"]
        tokens = _pointer(path)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchFormatError(f'operation {n} ({kind}) is missing "value"')
        if kind == "add":
            result = _add(result, tokens, copy.deepcopy(op["value"]), path)
        elif kind == "remove":
            result, _ = _remove(result, tokens, path)
        elif kind == "replace":
            _get(result, tokens, path)
            if tokens:
                result, _ = _remove(result, tokens, path)
            result = _add(result, tokens, copy.deepcopy(op["value"]), path)
        elif kind == "test":
            if not json_equal(_get(result, tokens, path), op["value"]):
                raise PatchApplyError(f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchFormatError(f'operation {n} ({kind}) is missing "from"')
            src = _pointer(op["from"])
            if kind == "move":
                if tokens[: len(src)] == src and len(tokens) > len(src):
                    raise PatchApplyError(f"cannot move {op['from']!r} into its own child {path!r}")
                result, value = _remove(result, src, op["from"])
            else:
                value = copy.deepcopy(_get(result, src, op["from"]))
            result = _add(result, tokens, value, path)
        else:
            raise PatchFormatError(f"operation {n}: unsupported op {kind!r}")
    return result


# ---------------------------------------------------------------------------------------------
# Strategic merge patch

_DELETE = object()
MergeKeyFor = Callable[[str], "str | None"]

_ORDER_PREFIX = "$setElementOrder/"
_DELETE_PRIMITIVE_PREFIX = "$deleteFromPrimitiveList/"


def strategic_merge_patch(original: Any, patch: Any, merge_key_for: MergeKeyFor) -> Any:
    """Apply a strategic merge patch to `original` and return the result.

    `merge_key_for(dotted_path)` names the merge key of the list at that path ("" for a list of
    scalars merged as a set, None for a list that is replaced).
    """
    if not isinstance(patch, dict):
        raise PatchFormatError("a strategic merge patch must be a JSON object")
    base = copy.deepcopy(original) if isinstance(original, dict) else {}
    result = _merge_map(base, patch, "", merge_key_for)
    if result is _DELETE:
        raise PatchApplyError("the patch deletes the whole object; use DELETE instead")
    return result


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge_map(orig: dict[str, Any], patch: dict[str, Any], path: str, mk: MergeKeyFor) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _merge_map({}, {k: v for k, v in patch.items() if k != "$patch"}, path, mk)
    if directive not in (None, "merge"):
        raise PatchFormatError(f"unknown patch type: {directive!r} in map at {path or '<root>'}")
    retain = patch.get("$retainKeys")
    if retain is not None and (not isinstance(retain, list) or not all(isinstance(k, str) for k in retain)):
        raise PatchFormatError(f"$retainKeys at {path or '<root>'} must be a list of strings")
    result = orig
    orders: list[tuple[str, Any]] = []
    deletions: list[tuple[str, Any]] = []
    for key, pv in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith(_ORDER_PREFIX):
            orders.append((key[len(_ORDER_PREFIX) :], pv))
            continue
        if key.startswith(_DELETE_PRIMITIVE_PREFIX):
            deletions.append((key[len(_DELETE_PRIMITIVE_PREFIX) :], pv))
            continue
        if key.startswith("$"):
            raise PatchFormatError(f"unknown directive {key!r} at {path or '<root>'}")
        child = _child(path, key)
        ov = result.get(key)
        if pv is None:
            result.pop(key, None)
        elif isinstance(pv, dict):
            merged = _merge_map(ov if isinstance(ov, dict) else {}, pv, child, mk)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(pv, list):
            merge_key = mk(child)
            if merge_key is None:
                result[key] = _strip_list(pv, child, mk)
            else:
                result[key] = _merge_list(ov if isinstance(ov, list) else [], pv, merge_key, child, mk)
        else:
            result[key] = pv
    for field_name, values in deletions:
        if not isinstance(values, list):
            raise PatchFormatError(f"{_DELETE_PRIMITIVE_PREFIX}{field_name} must be a list")
        if isinstance(result.get(field_name), list):
            result[field_name] = [v for v in result[field_name] if v not in values]
    for field_name, order in orders:
        if not isinstance(order, list):
            raise PatchFormatError(f"{_ORDER_PREFIX}{field_name} must be a list")
        current = result.get(field_name)
        if isinstance(current, list):
            result[field_name] = _apply_order(current, order, mk(_child(path, field_name)))
    if retain is not None:
        for key in list(result):
            if key not in retain:
                del result[key]
    return result


def _strip_list(items: list[Any], path: str, mk: MergeKeyFor) -> list[Any]:
    # A replaced list is taken as given, minus any directives nested in its maps.
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            merged = _merge_map({}, item, path, mk)
            if merged is not _DELETE:
                out.append(merged)
        else:
            out.append(item)
    return out


def _merge_list(orig: list[Any], patch: list[Any], merge_key: str, path: str, mk: MergeKeyFor) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return _strip_list([p for p in patch if not (isinstance(p, dict) and "$patch" in p)], path, mk)
    if merge_key == "":
        result = list(orig)
        for value in patch:
            if value not in result:
                result.append(value)
        return result
    result = list(orig)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchFormatError(f"list at {path} is merged by {merge_key!r}: every element must be a map")
        if merge_key not in item:
            raise PatchFormatError(f"map: {item} does not contain declared merge key: {merge_key}")
        key = item[merge_key]
        found = next(
            (i for i, o in enumerate(result) if isinstance(o, dict) and o.get(merge_key) == key), None
        )
        if item.get("$patch") == "delete":
            result = [o for o in result if not (isinstance(o, dict) and o.get(merge_key) == key)]
            continue
        if found is None:
            merged = _merge_map({}, item, path, mk)
            if merged is not _DELETE:
                result.append(merged)
        else:
            merged = _merge_map(result[found], item, path, mk)
            if merged is _DELETE:
                del result[found]
            else:
                result[found] = merged
    return result


def _apply_order(current: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        if merge_key and isinstance(item, dict):
            return item.get(merge_key)
        return item

    wanted = [ident(o) for o in order]
    positions = {repr(w): i for i, w in enumerate(wanted)}
    named = [item for item in current if repr(ident(item)) in positions]
    rest = [item for item in current if repr(ident(item)) not in positions]
    named.sort(key=lambda item: positions[repr(ident(item))])
    return named + rest
