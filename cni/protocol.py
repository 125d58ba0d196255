"""The plugin-agent protocol as typed values: Request and Response, their encoding, and socket helpers.

The agent serves it like this (one request per connection)::

    with conn, conn.makefile("rwb") as stream:
        try:
            request = read_request(stream)
        except ProtocolError as exc:
            write_response(stream, Response.failure(ErrorCode.DECODING_FAILURE, str(exc)))
            return
        write_response(stream, handle(request))   # Response.success(result) or Response.failure(...)

Framing and the exact JSON fields are documented in `cni.wire` (newline-delimited JSON on a unix
stream socket, default DEFAULT_SOCKET). The agent answers ADD with a result in the 1.1.0 shape; the
plugin converts it to the runtime's cniVersion. `prev_result` arrives in the 1.1.0 shape as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO

from cni import spec, wire
from cni.errors import CniError, ErrorCode
from cni.versions import CURRENT_VERSION, SUPPORTED_VERSIONS
from cni.wire import (
    DEFAULT_SOCKET,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    AgentError,
    AgentHungUp,
    AgentTimeout,
    AgentUnreachable,
    ProtocolError,
)

__all__ = [
    "CURRENT_VERSION",
    "DEFAULT_SOCKET",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "AgentError",
    "AgentHungUp",
    "AgentTimeout",
    "AgentUnreachable",
    "Attachment",
    "CniArgs",
    "CniError",
    "Command",
    "ErrorCode",
    "Failure",
    "ProtocolError",
    "Request",
    "Response",
    "call",
    "decode_request",
    "decode_response",
    "encode",
    "read_request",
    "write_response",
]


class Command(StrEnum):
    """The CNI commands the plugin forwards to the agent (VERSION is answered by the plugin)."""

    ADD = "ADD"
    DEL = "DEL"
    CHECK = "CHECK"
    STATUS = "STATUS"
    GC = "GC"


@dataclass(frozen=True, slots=True)
class CniArgs:
    """CNI_ARGS, parsed. Unknown keys the runtime asked to ignore are kept in `extra`."""

    ignore_unknown: bool = False
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_infra_container_id: str | None = None
    pod_uid: str | None = None
    ip: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> CniArgs:
        """Parse a CNI_ARGS string (`K=V;K=V`); raise CniError code 4 as the plugin does."""
        return cls.from_wire(spec.parse_cni_args(text))

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CniArgs:
        """Build from the wire form (the `cniArgs` object of a request); raise ProtocolError."""
        wire.check_request_args(data)
        return cls(
            ignore_unknown=bool(data.get("ignoreUnknown", False)),
            pod_namespace=data.get("podNamespace"),
            pod_name=data.get("podName"),
            pod_infra_container_id=data.get("podInfraContainerId"),
            pod_uid=data.get("podUid"),
            ip=data.get("ip"),
            extra=tuple((str(k), str(v)) for k, v in data.get("extra", [])),
        )

    def to_wire(self) -> dict[str, Any]:
        """Return the wire form (the `cniArgs` object of a request)."""
        out: dict[str, Any] = {
            "ignoreUnknown": self.ignore_unknown,
            "podNamespace": self.pod_namespace,
            "podName": self.pod_name,
            "podInfraContainerId": self.pod_infra_container_id,
            "podUid": self.pod_uid,
            "ip": self.ip,
        }
        if self.extra:
            out["extra"] = [list(pair) for pair in self.extra]
        return out


@dataclass(frozen=True, slots=True)
class Attachment:
    """One (container id, interface name) attachment, as GC lists the ones to keep."""

    container_id: str
    ifname: str


@dataclass(frozen=True, slots=True)
class Request:
    """One CNI call forwarded by the plugin, already checked against the CNI spec.

    `config` is the whole network config the runtime sent (runtimeConfig, args, prevResult,
    cni.dev/valid-attachments and any unknown keys included). `prev_result` is its prevResult in
    the 1.1.0 shape (None when absent). `timeout_seconds` is how long the plugin will still wait
    for the answer: the agent should answer (or fail with 11) before it runs out.
    container_id, netns and ifname are "" for STATUS and GC; netns may be "" for DEL.
    """

    command: Command
    container_id: str
    netns: str
    ifname: str
    args: CniArgs
    path: tuple[str, ...]
    cni_version: str
    config: Mapping[str, Any] = field(hash=False)
    prev_result: Mapping[str, Any] | None = field(default=None, hash=False)
    timeout_seconds: float = 30.0

    @property
    def network_name(self) -> str:
        """Return the network config's name (checked non-empty and valid on decode)."""
        return str(self.config["name"])

    @property
    def runtime_config(self) -> Mapping[str, Any]:
        """Return the config's runtimeConfig (capability arguments such as `ips`), or {}."""
        value = self.config.get("runtimeConfig")
        return value if isinstance(value, dict) else {}

    @property
    def valid_attachments(self) -> tuple[Attachment, ...] | None:
        """For GC: the attachments to keep, or None when the config carries no list at all."""
        pairs = spec.gc_attachments(self.config)
        return None if pairs is None else tuple(Attachment(cid, ifname) for cid, ifname in pairs)

    def to_wire(self) -> dict[str, Any]:
        """Return the wire form of this request (see `cni.wire`)."""
        return {
            "v": PROTOCOL_VERSION,
            "command": self.command.value,
            "containerId": self.container_id,
            "netns": self.netns,
            "ifname": self.ifname,
            "cniArgs": self.args.to_wire(),
            "path": list(self.path),
            "cniVersion": self.cni_version,
            "config": dict(self.config),
            "prevResult": None if self.prev_result is None else dict(self.prev_result),
            "timeoutSeconds": self.timeout_seconds,
        }

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> Request:
        """Build from a decoded message; raise ProtocolError when it is not a valid request."""
        wire.check_request(message)
        try:
            spec.gc_attachments(message["config"])  # exposed through valid_attachments
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        return cls(
            command=Command(message["command"]),
            container_id=message["containerId"],
            netns=message["netns"],
            ifname=message["ifname"],
            args=CniArgs.from_wire(message["cniArgs"]),
            path=tuple(message["path"]),
            cni_version=message["cniVersion"],
            config=message["config"],
            prev_result=message.get("prevResult"),
            timeout_seconds=float(message["timeoutSeconds"]),
        )


@dataclass(frozen=True, slots=True)
class Failure:
    """A CNI error the agent reports; the plugin prints it unchanged as the CNI error JSON."""

    code: int
    msg: str
    details: str = ""


@dataclass(frozen=True, slots=True)
class Response:
    """The agent's answer: a result (ADD: 1.1.0-shaped result; others: None) or a failure."""

    result: Mapping[str, Any] | None = field(default=None, hash=False)
    error: Failure | None = None

    def __post_init__(self) -> None:
        if self.result is not None and self.error is not None:
            raise ValueError("a Response holds a result or an error, not both")

    @classmethod
    def success(cls, result: Mapping[str, Any] | None = None) -> Response:
        """Return a successful answer (`result` only for ADD)."""
        return cls(result=result)

    @classmethod
    def failure(cls, code: int, msg: str, details: str = "") -> Response:
        """Return a failed answer with a CNI error code (ErrorCode or a plugin code >= 100)."""
        return cls(error=Failure(int(code), msg, details))

    @classmethod
    def from_error(cls, error: CniError) -> Response:
        """Return a failed answer carrying a CniError's code, msg and details."""
        return cls.failure(error.code, error.msg, error.details)

    @property
    def ok(self) -> bool:
        """Return True when this is a successful answer."""
        return self.error is None

    def to_wire(self) -> dict[str, Any]:
        """Return the wire form of this response (see `cni.wire`)."""
        if self.error is not None:
            error = {"code": self.error.code, "msg": self.error.msg, "details": self.error.details}
            return {"v": PROTOCOL_VERSION, "error": error}
        return {"v": PROTOCOL_VERSION, "result": None if self.result is None else dict(self.result)}

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> Response:
        """Build from a decoded message; raise ProtocolError when it is not a valid response."""
        wire.check_response(message)
        if "error" in message:
            error = message["error"]
            return cls.failure(error["code"], error["msg"], error.get("details", ""))
        return cls.success(message["result"])


def encode(message: Request | Response) -> bytes:
    """Return one frame (a JSON line) for a request or a response; raise ProtocolError."""
    return wire.encode_message(message.to_wire())


def decode_request(frame: bytes) -> Request:
    """Return the Request in one frame; raise ProtocolError naming what is wrong."""
    return Request.from_wire(wire.decode_message(frame))


def decode_response(frame: bytes) -> Response:
    """Return the Response in one frame; raise ProtocolError naming what is wrong."""
    return Response.from_wire(wire.decode_message(frame))


def read_request(stream: BinaryIO) -> Request:
    """Server side: read one request from a binary stream (e.g. `conn.makefile("rwb")`).

    Raises ProtocolError when the peer closes first, sends too much, or sends an invalid request.
    """
    return decode_request(wire.read_frame(stream))


def write_response(stream: BinaryIO, response: Response) -> None:
    """Server side: write one response to a binary stream and flush it; raise ProtocolError."""
    wire.write_frame(stream, response.to_wire())


def call(socket_path: str, request: Request, timeout: float) -> Response:
    """Client side: send `request` to the agent at `socket_path`, return its Response.

    Uses the same code path as the plugin. Raises AgentUnreachable, AgentTimeout, AgentHungUp,
    or ProtocolError.
    """
    return Response.from_wire(wire.exchange(socket_path, request.to_wire(), timeout))
