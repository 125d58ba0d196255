"""One forwarded CNI call: the spec's checks on environment and config, the agent call, the output.

Checks run in this order, and the first failure is the answer (code in brackets):
CNI_COMMAND set and known [4]; the command's required variables set [4]; stdin read [5]; stdin is a
JSON object [6]; network name [7]; container id and ifname for ADD/DEL/CHECK [4]; cniVersion
supported and high enough for the command [1]; agentSocket, timeoutSeconds, prevResult and GC's
attachment list well-formed [7]; CNI_ARGS for ADD/DEL/CHECK [4]. Then the agent is asked under one
deadline (see `Invocation._ask_agent` for the codes of an absent or silent agent).

Errors carry the config's cniVersion once stdin has been decoded, and the plugin's preferred
version before that (the spec leaves this case open; the maintainers suggest the preferred one).
"""

# No `from __future__ import annotations` (see cni/plugin.py): annotations that name typing-only
# names are quoted.

import sys
import time

from cni import fastjson, spec, wire
from cni.errors import CniError, ErrorCode
from cni.stdio import StdinError, read_stdin, write_stdout
from cni.versions import CURRENT_VERSION, MIN_VERSION, SUPPORTED_VERSIONS, version_at_least, version_tuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: How long the plugin waits for the runtime to finish writing stdin before failing with code 5.
STDIN_TIMEOUT_SECONDS = 10.0
#: The deadline for a whole call when the network config sets no `timeoutSeconds`.
DEFAULT_TIMEOUTS: dict[str, float] = {"ADD": 30.0, "DEL": 30.0, "CHECK": 30.0, "STATUS": 10.0, "GC": 60.0}
MAX_TIMEOUT_SECONDS = 3600.0


class Invocation:
    """One run of the plugin for a forwarded command: env, the start time, the version errors carry."""

    def __init__(self, env: "Mapping[str, str]", started: float) -> None:
        self.env = env
        self.started = started
        self.command = env.get("CNI_COMMAND", "")
        # Errors carry the config's cniVersion once it is known; before that, our preferred one.
        self.error_version = CURRENT_VERSION

    def run(self) -> int:
        """Run the call; print its result or a CNI error JSON; return the exit code. Never raises."""
        try:
            return self._forward()
        except BaseException as exc:  # stdout must be a CNI error, never a traceback
            return self.fail(exc)

    def _forward(self) -> int:
        command = self.command
        if not command:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                "CNI_COMMAND is not set",
                f"set CNI_COMMAND to one of {', '.join(spec.COMMANDS)}",
            )
        if command not in spec.COMMANDS:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                f"CNI_COMMAND {command!r} is not a CNI command",
                f"CNI_COMMAND must be one of {', '.join(spec.COMMANDS)}",
            )
        missing = [name for name in spec.REQUIRED_ENV[command] if not self.env.get(name)]
        if missing:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                f"required environment variables missing for {command}: {', '.join(missing)}",
                f"{command} needs {', '.join(spec.REQUIRED_ENV[command])} set and non-empty",
            )

        try:
            data = read_stdin(STDIN_TIMEOUT_SECONDS, skip_tty=False)
        except StdinError as exc:
            raise CniError(ErrorCode.IO_FAILURE, str(exc)) from exc
        config = self._decode(data)

        problem = spec.network_name_problem(config.get("name"))
        if problem:
            raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, problem)
        attachment = command in spec.ATTACHMENT_COMMANDS
        container_id = self.env.get("CNI_CONTAINERID", "") if attachment else ""
        ifname = self.env.get("CNI_IFNAME", "") if attachment else ""
        if attachment:
            problem = spec.container_id_problem(container_id) or spec.ifname_problem(ifname)
            if problem:
                raise CniError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, problem)

        version = self._check_version(config.get("cniVersion"))
        socket_path = self._agent_socket(config)
        timeout = self._timeout(config)
        prev_result = config.get("prevResult")
        if prev_result is not None and not isinstance(prev_result, dict):
            raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "prevResult must be a JSON object")
        if command == "CHECK" and prev_result is None:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "CHECK needs prevResult (the result of the ADD) in the network configuration",
            )
        if command == "GC":
            try:
                spec.gc_attachments(config)
            except ValueError as exc:
                raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, str(exc)) from exc
        # CNI_ARGS describe an attachment; STATUS and GC ignore them rather than fail on them.
        cni_args: dict[str, Any] = {"ignoreUnknown": False}
        if attachment:
            cni_args = spec.parse_cni_args(self.env.get("CNI_ARGS", ""))

        message: dict[str, Any] = {
            "v": 1,
            "command": command,
            "containerId": container_id,
            "netns": self.env.get("CNI_NETNS", "") if attachment else "",
            "ifname": ifname,
            "cniArgs": cni_args,
            "path": [p for p in self.env.get("CNI_PATH", "").split(":") if p],
            "cniVersion": version,
            "config": config,
            "prevResult": None if prev_result is None else spec.current_prev_result(prev_result),
            "timeoutSeconds": timeout,
        }
        result = self._ask_agent(socket_path, message, timeout)
        if command == "ADD":
            write_stdout(fastjson.dumps(result))
        return 0

    def _decode(self, data: bytes) -> "dict[str, Any]":
        if not data.strip():
            raise CniError(ErrorCode.DECODING_FAILURE, "no network configuration on stdin")
        try:
            config = fastjson.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CniError(ErrorCode.DECODING_FAILURE, f"network configuration is not UTF-8: {exc}") from exc
        except (ValueError, RecursionError) as exc:
            raise CniError(
                ErrorCode.DECODING_FAILURE, f"network configuration on stdin is not valid JSON: {exc}"
            ) from exc
        if not isinstance(config, dict):
            raise CniError(
                ErrorCode.DECODING_FAILURE,
                f"network configuration must be a JSON object, not {type(config).__name__}",
            )
        version = config.get("cniVersion")
        if isinstance(version, str) and version_tuple(version) is not None:
            self.error_version = version
        return config

    def _check_version(self, version: object) -> str:
        supported = ", ".join(SUPPORTED_VERSIONS)
        if version is None or version == "":
            raise CniError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                "the network configuration has no cniVersion",
                f"supported versions: {supported}",
            )
        if not isinstance(version, str):
            raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"cniVersion must be a string, not {version!r}")
        if version not in SUPPORTED_VERSIONS:
            raise CniError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                f"cniVersion {version} is not supported",
                f"supported versions: {supported}",
            )
        minimum = MIN_VERSION.get(self.command)
        if minimum is not None and not version_at_least(version, minimum):
            raise CniError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                f"{self.command} needs cniVersion {minimum} or later; the configuration says {version}",
            )
        return version

    def _agent_socket(self, config: "Mapping[str, Any]") -> str:
        path = config.get("agentSocket")
        if path is None:
            return wire.DEFAULT_SOCKET
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"agentSocket must be an absolute path, not {path!r}"
            )
        if len(path.encode("utf-8", "surrogateescape")) > wire.MAX_SOCKET_PATH_BYTES:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"agentSocket {path!r} is longer than {wire.MAX_SOCKET_PATH_BYTES} bytes, "
                "the limit for a unix socket path",
            )
        return path

    def _timeout(self, config: "Mapping[str, Any]") -> float:
        value = config.get("timeoutSeconds")
        if value is None:
            return DEFAULT_TIMEOUTS[self.command]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"timeoutSeconds must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}, "
                f"not {value!r}",
            )
        return float(value)

    def _ask_agent(
        self, socket_path: str, message: "dict[str, Any]", timeout: float
    ) -> "dict[str, Any] | None":
        """Send the request; return the shaped ADD result (None for other commands); raise CniError."""
        # STATUS asks "can you serve ADD?": an agent that cannot be reached or does not answer
        # cannot, which is code 50. For the others the runtime should simply retry later (11).
        # DEL too: the kubelet retries a failed DEL, and succeeding without the agent would leak
        # the pod's port and IP until the agent's restart reconciliation.
        down = ErrorCode.PLUGIN_NOT_AVAILABLE if self.command == "STATUS" else ErrorCode.TRY_AGAIN_LATER
        left = self.started + timeout - time.monotonic()
        if left <= 0.001:
            raise CniError(
                down, f"timed out waiting for agent at {socket_path}", f"timeoutSeconds={timeout:g}"
            )
        message["timeoutSeconds"] = round(left, 3)
        wire.check_request(message)  # our own request must be one the agent accepts
        try:
            response = wire.exchange(socket_path, message, left)
        except wire.AgentUnreachable as exc:
            raise CniError(
                down,
                f"sluice agent is not reachable at {socket_path}: {exc.reason}",
                "is sluice-agent running on this node? The plugin connects to agentSocket "
                "from the network configuration.",
            ) from exc
        except wire.AgentTimeout as exc:
            raise CniError(
                down,
                f"timed out waiting for agent at {socket_path}",
                f"no answer within timeoutSeconds={timeout:g}",
            ) from exc
        except wire.AgentHungUp as exc:
            raise CniError(
                down, f"sluice agent at {socket_path} closed the connection without answering", exc.reason
            ) from exc
        except wire.ProtocolError as exc:
            raise CniError(
                ErrorCode.INTERNAL, f"invalid answer from sluice agent at {socket_path}", str(exc)
            ) from exc
        if "error" in response:
            error = response["error"]
            raise CniError(error["code"], error["msg"], error.get("details", ""))
        if self.command != "ADD":
            return None
        result = response["result"]
        if result is None:
            raise CniError(ErrorCode.INTERNAL, f"sluice agent at {socket_path} answered ADD without a result")
        try:
            return spec.shape_result(result, message["cniVersion"])
        except ValueError as exc:
            raise CniError(
                ErrorCode.INTERNAL, f"sluice agent at {socket_path} returned an invalid result", str(exc)
            ) from exc

    def fail(self, exc: BaseException) -> int:
        """Print the CNI error JSON for `exc` on stdout, log it on stderr, return exit code 1."""
        try:
            if isinstance(exc, CniError):
                code, msg, details = exc.code, exc.msg, exc.details
            else:
                code = ErrorCode.INTERNAL
                msg = f"internal error in sluice-cni: {type(exc).__name__}: {exc}"
                details = "this is a bug; the traceback is on stderr"
            payload = {"cniVersion": self.error_version, "code": int(code), "msg": msg, "details": details}
            write_stdout(fastjson.dumps(payload))
        except BaseException:  # last resort: still valid JSON on stdout
            code, msg = 999, "internal error in sluice-cni"
            write_stdout(f'{{"cniVersion":"{CURRENT_VERSION}","code":999,"msg":"{msg}","details":""}}')
        _log_failure(self.command, self.env.get("CNI_CONTAINERID", ""), int(code), msg, exc)
        return 1


def _log_failure(command: str, container_id: str, code: int, msg: str, exc: BaseException) -> None:
    """Log one line (plus a traceback for a bug) on stderr; never raises."""
    try:
        import logging

        log = logging.getLogger("sluice-cni")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("sluice-cni[%(process)d] %(levelname)s %(message)s"))
            log.addHandler(handler)
            log.propagate = False
        log.error("%s container=%s failed with code %d: %s", command or "-", container_id or "-", code, msg)
        if not isinstance(exc, CniError):
            log.error("unexpected exception", exc_info=(type(exc), exc, exc.__traceback__))
    except BaseException:  # stderr is best effort
        pass
