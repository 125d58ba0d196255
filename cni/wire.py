"""The plugin-agent wire format: one JSON object per line on a unix stream socket, its checks, a client.

Framing: newline-delimited JSON. Each message is one UTF-8 JSON object encoded without raw newlines
(the encoder escapes them inside strings) and terminated by a single `\\n`; a message may not exceed
MAX_MESSAGE_BYTES. One exchange per connection: the plugin connects, writes one request line, reads
one response line, and closes. Both sides tolerate unknown top-level keys, so a newer plugin can talk
to an older agent during a rolling upgrade; `"v"` changes only when a field changes meaning.

Request (plugin -> agent):
    {"v": 1, "command": "ADD"|"DEL"|"CHECK"|"STATUS"|"GC",
     "containerId": str, "netns": str, "ifname": str,      # "" for STATUS and GC
     "cniArgs": {"ignoreUnknown": bool, "podNamespace": str|null, "podName": str|null,
                 "podInfraContainerId": str|null, "podUid": str|null, "ip": str|null,
                 "extra": [[key, value], ...]},            # ignored unknown CNI_ARGS keys
     "path": [str, ...],                                   # CNI_PATH split on ':'
     "cniVersion": str,                                    # as requested by the runtime
     "config": {...},                                      # the whole network config from stdin
     "prevResult": {...}|null,                             # config's prevResult in 1.1.0 shape
     "timeoutSeconds": float}                              # how long the plugin will still wait

Response (agent -> plugin), exactly one of "result" and "error":
    {"v": 1, "result": {...1.1.0-shaped CNI result...}|null}   # null for DEL, CHECK, STATUS, GC
    {"v": 1, "error": {"code": int, "msg": str, "details": str}}

This module holds the dict-level format so that the plugin can use it without importing the typed
layer (`cni.protocol`, which the agent uses) and its start-up cost.
"""

# No `from __future__ import annotations` (see cni/plugin.py): annotations that name typing-only
# names are quoted.

import time
from _socket import AF_UNIX, SOCK_STREAM
from _socket import socket as _unix_socket

from cni import fastjson
from cni.spec import (
    ATTACHMENT_COMMANDS,
    FORWARDED_COMMANDS,
    container_id_problem,
    ifname_problem,
    network_name_problem,
)
from cni.versions import SUPPORTED_VERSIONS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, BinaryIO

PROTOCOL_VERSION = 1
DEFAULT_SOCKET = "/var/run/sluice/cni.sock"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

_ARGS_STR_KEYS = ("podNamespace", "podName", "podInfraContainerId", "podUid", "ip")


class ProtocolError(ValueError):
    """A message that breaks the wire format: bad framing, bad JSON, or a missing or mistyped field."""


class AgentError(Exception):
    """The agent could not be asked or did not answer; `socket_path` names where the plugin looked."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(socket_path, reason)
        self.socket_path = socket_path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason} ({self.socket_path})"


class AgentUnreachable(AgentError):
    """Connecting failed: no socket file, nobody listening, permission denied, backlog full."""


class AgentTimeout(AgentError):
    """The deadline passed before the agent answered."""


class AgentHungUp(AgentError):
    """The agent closed the connection before a complete answer (it crashed or restarted)."""


# ---- framing -------------------------------------------------------------------------------------


def encode_message(message: "Mapping[str, Any]") -> bytes:
    """Return `message` as one frame (compact JSON + newline); raise ProtocolError if it cannot be."""
    try:
        text = fastjson.dumps(message, compact=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"message cannot be encoded as JSON: {exc}") from exc
    data = text.encode("utf-8") + b"\n"
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    return data


def decode_message(frame: bytes) -> "dict[str, Any]":
    """Return the JSON object in one frame (trailing newline optional); raise ProtocolError."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(frame)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    body = frame[:-1] if frame.endswith(b"\n") else frame
    if b"\n" in body:
        raise ProtocolError("a frame holds exactly one message: found a newline inside it")
    if not body.strip():
        raise ProtocolError("empty message")
    try:
        message = fastjson.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"message is not UTF-8: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object, not {type(message).__name__}")
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this side speaks {PROTOCOL_VERSION})")
    return message


def read_frame(stream: "BinaryIO") -> bytes:
    """Read one newline-terminated frame from a binary stream; raise ProtocolError on EOF or overflow."""
    frame = stream.readline(MAX_MESSAGE_BYTES + 1)
    if not frame:
        raise ProtocolError("connection closed before a message arrived")
    if not frame.endswith(b"\n"):
        if len(frame) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message exceeds the {MAX_MESSAGE_BYTES}-byte limit")
        raise ProtocolError("connection closed in the middle of a message")
    return frame


# ---- message checks ------------------------------------------------------------------------------


def _str_field(message: "Mapping[str, Any]", key: str, where: str = "request") -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{where} field {key!r} must be a string, not {value!r}")
    return value


def check_request_args(args: object) -> None:
    """Raise ProtocolError unless `args` is a valid `cniArgs` object (see the module docstring)."""
    if not isinstance(args, dict):
        raise ProtocolError(f"request field 'cniArgs' must be an object, not {args!r}")
    if not isinstance(args.get("ignoreUnknown", False), bool):
        raise ProtocolError("cniArgs.ignoreUnknown must be a boolean")
    for key in _ARGS_STR_KEYS:
        if not isinstance(args.get(key), str | None):
            raise ProtocolError(f"cniArgs.{key} must be a string or null, not {args[key]!r}")
    extra = args.get("extra", [])
    if not isinstance(extra, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair) for pair in extra
    ):
        raise ProtocolError("cniArgs.extra must be a list of [key, value] string pairs")


def check_request(message: "dict[str, Any]") -> "dict[str, Any]":
    """Return `message` if it is a valid request (see the module docstring); raise ProtocolError."""
    command = message.get("command")
    if command not in FORWARDED_COMMANDS:
        raise ProtocolError(f"request field 'command' must be one of {', '.join(FORWARDED_COMMANDS)}")
    container_id = _str_field(message, "containerId")
    ifname = _str_field(message, "ifname")
    netns = _str_field(message, "netns")
    if command in ATTACHMENT_COMMANDS:
        problem = container_id_problem(container_id) or ifname_problem(ifname)
        if problem:
            raise ProtocolError(problem)
        if command != "DEL" and not netns:
            raise ProtocolError(f"{command} needs a netns")
    check_request_args(message.get("cniArgs"))
    path = message.get("path")
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise ProtocolError("request field 'path' must be a list of strings")
    cni_version = _str_field(message, "cniVersion")
    if cni_version not in SUPPORTED_VERSIONS:
        supported = ", ".join(SUPPORTED_VERSIONS)
        raise ProtocolError(f"request cniVersion {cni_version!r} is not one of {supported}")
    config = message.get("config")
    if not isinstance(config, dict):
        raise ProtocolError("request field 'config' must be an object")
    problem = network_name_problem(config.get("name"))
    if problem:
        raise ProtocolError(problem)
    if not isinstance(message.get("prevResult"), dict | None):
        raise ProtocolError("request field 'prevResult' must be an object or null")
    timeout = message.get("timeoutSeconds")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout < 86400:
        raise ProtocolError(f"request field 'timeoutSeconds' must be a positive number, not {timeout!r}")
    return message


def check_response(message: "dict[str, Any]") -> "dict[str, Any]":
    """Return `message` if it is a valid response (see the module docstring); raise ProtocolError."""
    has_result, has_error = "result" in message, "error" in message
    if has_result == has_error:
        raise ProtocolError("a response holds exactly one of 'result' and 'error'")
    if has_result:
        if not isinstance(message["result"], dict | None):
            raise ProtocolError("response field 'result' must be an object or null")
        return message
    error = message["error"]
    if not isinstance(error, dict):
        raise ProtocolError("response field 'error' must be an object")
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or code < 1:
        raise ProtocolError(f"error code must be a positive integer, not {code!r}")
    if not _str_field(error, "msg", "error"):
        raise ProtocolError("error msg must not be empty")
    if not isinstance(error.get("details", ""), str):
        raise ProtocolError("error details must be a string")
    return message


# ---- client --------------------------------------------------------------------------------------


def _remaining(deadline: float, socket_path: str, total: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise AgentTimeout(socket_path, f"no answer within {total:g}s")
    return left


def exchange(socket_path: str, message: "Mapping[str, Any]", timeout: float) -> "dict[str, Any]":
    """Send one request to the agent at `socket_path` and return its checked response object.

    Every step (connect, send, each read) is bounded by one deadline `timeout` seconds from now.
    Raises AgentUnreachable, AgentTimeout or AgentHungUp (see their docs), or ProtocolError when
    the answer breaks the wire format.
    """
    deadline = time.monotonic() + timeout
    data = encode_message(message)
    sock = _unix_socket(AF_UNIX, SOCK_STREAM)
    try:
        try:
            sock.settimeout(_remaining(deadline, socket_path, timeout))
            sock.connect(socket_path)
        except TimeoutError as exc:
            raise AgentTimeout(socket_path, f"connect did not complete within {timeout:g}s") from exc
        except OSError as exc:
            raise AgentUnreachable(socket_path, exc.strerror or str(exc)) from exc
        received = bytearray()
        try:
            sock.settimeout(_remaining(deadline, socket_path, timeout))
            sock.sendall(data)
            while b"\n" not in received:
                sock.settimeout(_remaining(deadline, socket_path, timeout))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if len(received) > MAX_MESSAGE_BYTES + 1:
                    raise ProtocolError(f"answer exceeds the {MAX_MESSAGE_BYTES}-byte limit")
        except TimeoutError as exc:
            raise AgentTimeout(socket_path, f"no answer within {timeout:g}s") from exc
        except OSError as exc:  # EPIPE / ECONNRESET: the agent went away mid-exchange
            raise AgentHungUp(socket_path, f"connection lost: {exc.strerror or exc}") from exc
        if b"\n" not in received:
            what = "in the middle of its answer" if received else "without answering"
            raise AgentHungUp(socket_path, f"the agent closed the connection {what}")
        frame, _, rest = bytes(received).partition(b"\n")
        if rest.strip():
            raise ProtocolError("the agent sent more than one message")
        return check_response(decode_message(frame))
    finally:
        sock.close()


def write_frame(stream: "BinaryIO", message: "Mapping[str, Any]") -> None:
    """Write one message as a frame to a binary stream and flush it."""
    stream.write(encode_message(message))
    stream.flush()
