"""Kubernetes `Status` errors: the exception the stand-in raises and the wire form it is sent as."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

JsonObj = dict[str, Any]


class Reason(enum.StrEnum):
    """`Status.reason` values the stand-in produces (metav1.StatusReason)."""

    NOT_FOUND = "NotFound"
    ALREADY_EXISTS = "AlreadyExists"
    CONFLICT = "Conflict"
    INVALID = "Invalid"
    BAD_REQUEST = "BadRequest"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    UNAUTHORIZED = "Unauthorized"
    FORBIDDEN = "Forbidden"
    EXPIRED = "Expired"
    GONE = "Gone"
    TIMEOUT = "Timeout"
    UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
    NOT_ACCEPTABLE = "NotAcceptable"
    REQUEST_ENTITY_TOO_LARGE = "RequestEntityTooLarge"
    INTERNAL_ERROR = "InternalError"


class ErrorType(enum.Enum):
    """The kind of a field validation error (field.ErrorType in apimachinery)."""

    REQUIRED = "FieldValueRequired"
    INVALID = "FieldValueInvalid"
    NOT_SUPPORTED = "FieldValueNotSupported"
    FORBIDDEN = "FieldValueForbidden"
    DUPLICATE = "FieldValueDuplicate"
    TOO_LONG = "FieldValueTooLong"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure at a field path, rendered the way the real API server words it."""

    path: str
    type: ErrorType
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        """Return the message without the field path ("Invalid value: 0: must be ...")."""
        if self.type is ErrorType.REQUIRED:
            text = "Required value"
        elif self.type is ErrorType.INVALID:
            text = f"Invalid value: {_render(self.value)}"
        elif self.type is ErrorType.NOT_SUPPORTED:
            text = f"Unsupported value: {_render(self.value)}"
        elif self.type is ErrorType.FORBIDDEN:
            text = "Forbidden"
        elif self.type is ErrorType.DUPLICATE:
            text = f"Duplicate value: {_render(self.value)}"
        else:
            text = "Too long"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"


def _render(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


class ApiError(Exception):
    """A request failed; carries the HTTP code, the Status reason, a message and optional details."""

    def __init__(
        self,
        code: int,
        reason: Reason,
        message: str,
        *,
        details: JsonObj | None = None,
        metadata: JsonObj | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.metadata = metadata

    def status(self) -> JsonObj:
        """Return the `Status` object (kind Status, apiVersion v1) describing this error."""
        return status_object(self.code, self.reason, self.message, self.details, self.metadata)


def status_object(
    code: int,
    reason: Reason | None,
    message: str,
    details: JsonObj | None = None,
    metadata: JsonObj | None = None,
) -> JsonObj:
    """Build a `Status` object; a 2xx code gives status Success, anything else Failure."""
    out: JsonObj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Success" if 200 <= code < 300 else "Failure",
        "message": message,
    }
    if reason is not None:
        out["reason"] = str(reason)
    if details:
        out["details"] = details
    out["code"] = code
    return out


def bad_request(message: str) -> ApiError:
    """Return a 400 BadRequest error."""
    return ApiError(400, Reason.BAD_REQUEST, message)


def method_not_allowed(message: str) -> ApiError:
    """Return a 405 MethodNotAllowed error."""
    return ApiError(405, Reason.METHOD_NOT_ALLOWED, message)


def expired(message: str) -> ApiError:
    """Return a 410 Expired error (a resourceVersion or continue token older than the kept history)."""
    return ApiError(410, Reason.EXPIRED, message)


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """Return the 504 Timeout error the real server gives for a resourceVersion from the future."""
    return ApiError(
        504,
        Reason.TIMEOUT,
        f"Too large resource version: {requested}, current: {current}",
        details={
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    )
