"""Label and field selectors: parsing the query-string forms, checking the object forms, matching.

The grammar follows k8s.io/apimachinery/pkg/labels (equality `=`, `==`, `!=`; set-based `in`,
`notin`, `key`, `!key`; and the numeric `>`/`<`) and pkg/fields (`=`, `==`, `!=` with backslash
escapes). Errors raise SelectorError with a message in the real server's words.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lab.apiserver.errors import ErrorType, FieldError

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A selector string or object is malformed; the message says what is wrong."""


class Operator(enum.Enum):
    """Label selector requirement operators."""

    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


def label_key_errors(key: str) -> list[str]:
    """Return why `key` is not a valid label key (qualified name with optional DNS prefix); [] if valid."""
    errs: list[str] = []
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        if not prefix:
            errs.append("prefix part must be non-empty")
        elif len(prefix) > 253:
            errs.append("prefix part must be no more than 253 characters")
        elif not _DNS1123_SUBDOMAIN.match(prefix):
            errs.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character"
            )
        if prefix.count("/"):
            return [
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'"
            ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.match(name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc')"
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    """Return why `value` is not a valid label value; [] if valid (empty is valid)."""
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if not _LABEL_VALUE.match(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character"
        ]
    return []


@dataclass(frozen=True, slots=True)
class Requirement:
    """One clause of a label selector."""

    key: str
    op: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return True if `labels` satisfies this clause (absent keys satisfy != and notin)."""
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op is Operator.EQUALS or self.op is Operator.IN:
            return present and value in self.values
        if self.op is Operator.NOT_EQUALS or self.op is Operator.NOT_IN:
            return not present or value not in self.values
        if self.op is Operator.EXISTS:
            return present
        if self.op is Operator.DOES_NOT_EXIST:
            return not present
        if not present:
            return False
        try:
            have = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return have > bound if self.op is Operator.GREATER_THAN else have < bound


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Return True if every requirement holds for `labels`."""
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)

    @property
    def empty(self) -> bool:
        """Return True when the selector has no requirements."""
        return not self.requirements


EVERYTHING = LabelSelector()

_SPECIALS = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        for special in _SPECIALS:
            if text.startswith(special, i):
                tokens.append(special)
                i += len(special)
                break
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in "!=(),<>":
                i += 1
            tokens.append(text[start:i])
    return tokens


def _is_identifier(token: str) -> bool:
    return token not in _SPECIALS


def _check_key(key: str) -> None:
    errs = label_key_errors(key)
    if errs:
        raise SelectorError(f"unable to parse requirement: key: Invalid value: {key!r}: {'; '.join(errs)}")


def _check_value(value: str) -> None:
    errs = label_value_errors(value)
    if errs:
        raise SelectorError(
            f"unable to parse requirement: values[0]: Invalid value: {value!r}: {'; '.join(errs)}"
        )


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the query-string form (`a=b,c in (d,e),!f`); raise SelectorError when it is malformed."""
    tokens = _tokenize(text)
    reqs: list[Requirement] = []
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    while pos < len(tokens):
        tok = tokens[pos]
        if tok == "!":
            pos += 1
            key = peek()
            if key is None or not _is_identifier(key):
                raise SelectorError(f"found '{key or ''}', expected: identifier after '!'")
            _check_key(key)
            pos += 1
            reqs.append(Requirement(key, Operator.DOES_NOT_EXIST))
        elif _is_identifier(tok):
            key = tok
            _check_key(key)
            pos += 1
            op_tok = peek()
            if op_tok is None or op_tok == ",":
                reqs.append(Requirement(key, Operator.EXISTS))
            elif op_tok in ("=", "==", "!="):
                pos += 1
                value = peek()
                if value is None or value == ",":
                    value = ""
                elif not _is_identifier(value):
                    raise SelectorError(f"found '{value}', expected: identifier")
                else:
                    pos += 1
                _check_value(value)
                op = Operator.NOT_EQUALS if op_tok == "!=" else Operator.EQUALS
                reqs.append(Requirement(key, op, (value,)))
            elif op_tok in ("in", "notin"):
                pos += 1
                if peek() != "(":
                    raise SelectorError(f"found '{peek() or ''}', expected: '('")
                pos += 1
                values: list[str] = []
                expect_value = True
                while True:
                    item = peek()
                    if item is None:
                        raise SelectorError("found '', expected: ')'")
                    pos += 1
                    if item == ")":
                        if expect_value and values:
                            values.append("")  # "(a,)": the real parser reads a trailing empty value
                        break
                    if item == ",":
                        if expect_value:
                            values.append("")  # "(,a)" and "(a,,b)" likewise
                        expect_value = True
                        continue
                    if not expect_value or not _is_identifier(item):
                        raise SelectorError(f"found '{item}', expected: ',', ')' or identifier")
                    _check_value(item)
                    values.append(item)
                    expect_value = False
                if not values:
                    raise SelectorError(
                        "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty"
                    )
                reqs.append(
                    Requirement(key, Operator.IN if op_tok == "in" else Operator.NOT_IN, tuple(values))
                )
            elif op_tok in (">", "<"):
                pos += 1
                value = peek()
                if value is None or not _is_identifier(value):
                    raise SelectorError(f"found '{value or ''}', expected: integer")
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer"
                        f": {value!r}"
                    ) from None
                pos += 1
                op = Operator.GREATER_THAN if op_tok == ">" else Operator.LESS_THAN
                reqs.append(Requirement(key, op, (value,)))
            else:
                raise SelectorError(f"found '{op_tok}', expected: '=', '!=', '==', 'in', notin'")
        else:
            raise SelectorError(f"found '{tok}', expected: !, identifier, or 'end of string'")
        nxt = peek()
        if nxt is None:
            break
        if nxt != ",":
            raise SelectorError(f"found '{nxt}', expected: ',' or 'end of string'")
        pos += 1
        if peek() is None:
            raise SelectorError("found '', expected: identifier after ','")
    return LabelSelector(tuple(reqs))


def selector_object_errors(obj: Any, path: str) -> list[FieldError]:
    """Validate a metav1.LabelSelector object (matchLabels/matchExpressions); return its errors."""
    errs: list[FieldError] = []
    if obj is None:
        return errs
    if not isinstance(obj, dict):
        return [FieldError(path, ErrorType.INVALID, obj, "must be an object")]
    for unknown in sorted(set(obj) - {"matchLabels", "matchExpressions"}):
        errs.append(
            FieldError(
                f"{path}.{unknown}",
                ErrorType.NOT_SUPPORTED,
                unknown,
                'supported fields: "matchLabels", "matchExpressions"',
            )
        )
    match_labels = obj.get("matchLabels")
    if match_labels is not None:
        errs.extend(label_map_errors(match_labels, f"{path}.matchLabels"))
    exprs = obj.get("matchExpressions")
    if exprs is None:
        return errs
    if not isinstance(exprs, list):
        return [*errs, FieldError(f"{path}.matchExpressions", ErrorType.INVALID, exprs, "must be a list")]
    for i, expr in enumerate(exprs):
        epath = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            errs.append(FieldError(epath, ErrorType.INVALID, expr, "must be an object"))
            continue
        key = expr.get("key")
        if not isinstance(key, str) or not key:
            errs.append(FieldError(f"{epath}.key", ErrorType.REQUIRED))
        else:
            errs.extend(FieldError(f"{epath}.key", ErrorType.INVALID, key, e) for e in label_key_errors(key))
        op = expr.get("operator")
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            errs.append(FieldError(f"{epath}.values", ErrorType.INVALID, values, "must be a list of strings"))
            continue
        if op in ("In", "NotIn"):
            if not values:
                errs.append(
                    FieldError(
                        f"{epath}.values",
                        ErrorType.REQUIRED,
                        None,
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    )
                )
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(
                    FieldError(
                        f"{epath}.values",
                        ErrorType.FORBIDDEN,
                        None,
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        elif op is None:
            errs.append(FieldError(f"{epath}.operator", ErrorType.REQUIRED))
        else:
            errs.append(
                FieldError(
                    f"{epath}.operator",
                    ErrorType.NOT_SUPPORTED,
                    op,
                    'supported values: "In", "NotIn", "Exists", "DoesNotExist"',
                )
            )
        for j, value in enumerate(values):
            errs.extend(
                FieldError(f"{epath}.values[{j}]", ErrorType.INVALID, value, e)
                for e in label_value_errors(value)
            )
    return errs


def label_map_errors(labels: Any, path: str) -> list[FieldError]:
    """Validate a map of label keys to label values; return its errors."""
    if not isinstance(labels, dict):
        return [FieldError(path, ErrorType.INVALID, labels, "must be a map of string keys to string values")]
    errs: list[FieldError] = []
    for key, value in labels.items():
        errs.extend(FieldError(path, ErrorType.INVALID, key, e) for e in label_key_errors(key))
        if not isinstance(value, str):
            errs.append(FieldError(f"{path}[{key}]", ErrorType.INVALID, value, "must be a string"))
        else:
            errs.extend(
                FieldError(f"{path}[{key}]", ErrorType.INVALID, value, e) for e in label_value_errors(value)
            )
    return errs


def selector_from_object(obj: Mapping[str, Any] | None) -> LabelSelector:
    """Convert a (valid) metav1.LabelSelector object into a LabelSelector."""
    if not obj:
        return EVERYTHING
    reqs = [Requirement(k, Operator.EQUALS, (v,)) for k, v in sorted((obj.get("matchLabels") or {}).items())]
    ops = {
        "In": Operator.IN,
        "NotIn": Operator.NOT_IN,
        "Exists": Operator.EXISTS,
        "DoesNotExist": Operator.DOES_NOT_EXIST,
    }
    for expr in obj.get("matchExpressions") or []:
        reqs.append(Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


# ---------------------------------------------------------------------------------------------
# Field selectors


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """One `field=value` or `field!=value` clause."""

    field: str
    equals: bool
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Return True if the object's value of this field satisfies the clause."""
        return (fields.get(self.field, "") == self.value) == self.equals


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """A conjunction of field requirements; the empty selector matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Return True if every clause holds."""
        return all(r.matches(fields) for r in self.requirements)

    @property
    def empty(self) -> bool:
        """Return True when the selector has no requirements."""
        return not self.requirements


ALL_FIELDS = FieldSelector()


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence in {value!r}")
            out.append(value[i + 1])
            i += 2
            continue
        if ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped {ch!r} in value {value!r}")
        out.append(ch)
        i += 1
    return "".join(out)


def _split_term(term: str) -> tuple[str, str, str] | None:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
        i += 1
    return None


def parse_field_selector(text: str, supported: frozenset[str] | None = None) -> FieldSelector:
    """Parse `a=b,c!=d`; raise SelectorError when malformed or a field is not in `supported`."""
    if not text.strip():
        return ALL_FIELDS
    reqs: list[FieldRequirement] = []
    for term in _split_unescaped(text, ","):
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        name, op, value = split
        name = name.strip()
        if supported is not None and name not in supported:
            raise SelectorError(f"field label not supported: {name}")
        reqs.append(FieldRequirement(name, op != "!=", _unescape(value)))
    return FieldSelector(tuple(reqs))


def field_value(obj: Mapping[str, Any], dotted: str) -> str:
    """Return the string value of a dotted path in `obj` as field selectors see it ("" when absent)."""
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)
