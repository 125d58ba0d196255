"""Fixtures for the CNI suite: the real plugin executable, a runner that acts like a runtime, a stub agent."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from cni.install import install_plugin
from cni.protocol import ErrorCode, ProtocolError, Request, Response, read_request, write_response

# A 1.1.0-shaped result as the agent returns it: host-side port, the pod interface, v4 and v6.
AGENT_RESULT: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "sl-web0-7f3a", "mac": "9e:2d:11:22:33:44"},
        {"name": "eth0", "mac": "0a:58:64:40:00:05", "sandbox": "/var/run/netns/pod1", "mtu": 1442},
    ],
    "ips": [
        {"address": "100.64.0.5/24", "gateway": "100.64.0.1", "interface": 1},
        {"address": "fd00:64::5/64", "gateway": "fd00:64::1", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "100.64.0.1", "mtu": 1442, "priority": 10}],
    "dns": {"nameservers": ["100.64.0.10"], "search": ["default.svc.cluster.local"]},
}

KUBELET_ARGS = (
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
    "K8S_POD_INFRA_CONTAINER_ID=0123abcd;K8S_POD_UID=5f0c2d1e-0000-4000-8000-000000000001"
)
CONTAINER_ID = "0123abcd4567ef89"


@functools.cache
def plugin_path() -> Path:
    """The real plugin executable, installed as a node has it (`sluice install-cni`, `cni.install`).

    Installed once per process into a temporary CNI bin dir (removed at exit), run by this
    interpreter as `-IS`: no site-packages, so every exec also proves the plugin needs nothing
    outside the standard library.
    """
    bin_dir = Path(tempfile.mkdtemp(prefix="sluice-cni-bin-"))
    atexit.register(shutil.rmtree, bin_dir, True)
    return install_plugin(bin_dir, sys.executable)


@pytest.fixture(scope="session")
def plugin() -> Path:
    """The real plugin executable, as a runtime would find it in its CNI bin dir."""
    return plugin_path()


@dataclass(frozen=True, slots=True)
class PluginRun:
    """What one exec of the plugin produced; construction checks stdout is empty or one JSON value."""

    returncode: int
    stdout: bytes
    stderr: bytes
    elapsed: float
    output: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        text = self.stdout.decode("utf-8")
        if text.strip():
            assert text.endswith("\n") and text.count("\n") == 1, f"stdout is not one line: {text!r}"
            try:
                object.__setattr__(self, "output", json.loads(text))
            except ValueError:
                pytest.fail(f"plugin stdout is not JSON: {text!r} (stderr: {self.stderr!r})")

    def error(self) -> dict[str, Any]:
        """Assert the run failed with a CNI error JSON; return it."""
        assert self.returncode != 0, f"expected a failure, got rc=0 and {self.output!r}"
        assert isinstance(self.output, dict), f"no CNI error JSON on stdout: {self.stdout!r}"
        assert set(self.output) == {"cniVersion", "code", "msg", "details"}, self.output
        assert isinstance(self.output["code"], int) and self.output["code"] > 0
        assert isinstance(self.output["msg"], str) and self.output["msg"]
        assert isinstance(self.output["details"], str)
        return self.output

    def ok(self) -> Any:
        """Assert the run succeeded; return the parsed stdout (None when stdout was empty)."""
        assert self.returncode == 0, f"rc={self.returncode} stdout={self.stdout!r} stderr={self.stderr!r}"
        return self.output


def run_plugin(
    plugin: Path,
    env: dict[str, str],
    stdin: bytes | str | dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> PluginRun:
    """Exec the plugin the way a runtime does: CNI_* variables in the environment, config on stdin."""
    if isinstance(stdin, dict):
        data = json.dumps(stdin).encode()
    elif isinstance(stdin, str):
        data = stdin.encode()
    else:
        data = stdin or b""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    started = time.monotonic()
    proc = subprocess.run(
        [str(plugin)], input=data, env=full_env, capture_output=True, timeout=timeout, check=False
    )
    return PluginRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def cni_env(command: str, **overrides: str | None) -> dict[str, str]:
    """Return the environment a kubelet-driven runtime sets for `command`; None removes a variable."""
    env: dict[str, str] = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}
    if command in ("ADD", "DEL", "CHECK"):
        env.update(
            CNI_CONTAINERID=CONTAINER_ID,
            CNI_NETNS="/var/run/netns/pod1",
            CNI_IFNAME="eth0",
            CNI_ARGS=KUBELET_ARGS,
        )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def net_config(version: str, agent_socket: str, **extra: Any) -> dict[str, Any]:
    """Return a Sluice network config as the runtime passes it on stdin."""
    return {
        "cniVersion": version,
        "name": "sluice",
        "type": "sluice-cni",
        "agentSocket": agent_socket,
        **extra,
    }


# ---- the stub agent -----------------------------------------------------------------------------

Handler = Callable[[Request], Response]


def default_handler(request: Request) -> Response:
    """Answer like a healthy agent: a 1.1.0 result for ADD, plain success otherwise."""
    return Response.success(AGENT_RESULT if request.command == "ADD" else None)


class StubAgent:
    """A real unix-socket server speaking cni.protocol, recording requests and answering as told.

    mode: "answer" (call `handler`), "hang" (read the request, never answer), "close" (read, then
    close without answering), or "raw" (read, then send `raw_reply` bytes verbatim).
    """

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.requests: list[Request] = []
        self.decode_errors: list[str] = []
        self.handler: Handler = default_handler
        self.mode = "answer"
        self.raw_reply = b""
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_path)
        self._listener.listen(16)
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="stub-agent", daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, cast(BinaryIO, conn.makefile("rwb")) as stream:
            try:
                request = read_request(stream)
            except ProtocolError as exc:
                self.decode_errors.append(str(exc))
                write_response(stream, Response.failure(ErrorCode.DECODING_FAILURE, str(exc)))
                return
            self.requests.append(request)
            if self.mode == "hang":
                self._stop.wait(30)
            elif self.mode == "raw":
                stream.write(self.raw_reply)
                stream.flush()
            elif self.mode == "answer":
                write_response(stream, self.handler(request))

    def close(self) -> None:
        """Stop accepting, release hanging connections, and wait for every thread."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def only_request(self) -> Request:
        """Assert exactly one request arrived; return it."""
        assert self.decode_errors == []
        assert len(self.requests) == 1, self.requests
        return self.requests[0]


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short private directory for sockets (sun_path is limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="sluice-cni-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(sockdir: str) -> Iterator[StubAgent]:
    """A stub agent listening on a fresh socket; stopped and removed after the test."""
    stub = StubAgent(os.path.join(sockdir, "cni.sock"))
    try:
        yield stub
    finally:
        stub.close()
