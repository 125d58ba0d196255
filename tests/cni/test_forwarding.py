"""The real plugin executable against a stub agent on a real unix socket: what is forwarded, what comes back.

Covers the request the agent receives (CNI_ARGS parsed, runtimeConfig and prevResult passed on), the
result shaped per cniVersion, agent errors passed through, and an absent, silent or broken agent.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from cni.protocol import DEFAULT_SOCKET, Command, Request, Response
from cni.versions import SUPPORTED_VERSIONS
from tests.cni.conftest import AGENT_RESULT, CONTAINER_ID, StubAgent, cni_env, net_config, run_plugin
from tests.support import require

RUNTIME_CONFIG = {
    "ips": ["100.64.0.42/24"],
    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
}
PREV_RESULT_04 = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:64:40:00:05", "sandbox": "/var/run/netns/pod1"}],
    "ips": [{"version": "4", "address": "100.64.0.5/24", "gateway": "100.64.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0"}],
}
# How much later than its deadline the plugin may exit: interpreter start-up on a busy 2-core box.
SLACK_SECONDS = 2.5


def config_for(command: str, version: str, agent_socket: str, **extra: Any) -> dict[str, Any]:
    if command == "CHECK":
        extra.setdefault("prevResult", PREV_RESULT_04)
    if command == "GC":
        extra.setdefault("cni.dev/valid-attachments", [])
    return net_config(version, agent_socket, **extra)


def commands_for(version: str) -> list[str]:
    out = ["ADD", "DEL"]
    if version >= "0.4.0":
        out.append("CHECK")
    if version >= "1.1.0":
        out += ["STATUS", "GC"]
    return out


ALL_CALLS = [(command, version) for version in SUPPORTED_VERSIONS for command in commands_for(version)]


# ---- what the agent receives ---------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_add_forwards_the_whole_call(plugin: Path, agent: StubAgent, version: str) -> None:
    config = net_config(version, agent.socket_path, runtimeConfig=RUNTIME_CONFIG, timeoutSeconds=20)
    env = cni_env("ADD", CNI_ARGS=cni_env("ADD")["CNI_ARGS"] + ";IP=100.64.0.42")
    run_plugin(plugin, env, config).ok()
    request = agent.only_request()
    assert request.command is Command.ADD
    assert (request.container_id, request.netns, request.ifname) == (
        CONTAINER_ID,
        "/var/run/netns/pod1",
        "eth0",
    )
    assert request.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert request.cni_version == version
    assert request.config == config
    assert request.network_name == "sluice"
    assert request.runtime_config == RUNTIME_CONFIG
    assert request.prev_result is None
    assert 0 < request.timeout_seconds <= 20
    args = request.args
    assert args.ignore_unknown is True
    assert (args.pod_namespace, args.pod_name) == ("default", "web-0")
    assert args.pod_infra_container_id == "0123abcd"
    assert args.pod_uid == "5f0c2d1e-0000-4000-8000-000000000001"
    assert args.ip == "100.64.0.42"


def test_add_without_cni_args_forwards_empty_args(plugin: Path, agent: StubAgent) -> None:
    run_plugin(plugin, cni_env("ADD", CNI_ARGS=None), net_config("1.1.0", agent.socket_path)).ok()
    args = agent.only_request().args
    assert (args.ignore_unknown, args.pod_name, args.ip, args.extra) == (False, None, None, ())


@pytest.mark.parametrize("version", [v for v in SUPPORTED_VERSIONS if v >= "0.4.0"])
@pytest.mark.parametrize("command", ["CHECK", "DEL"])
def test_prev_result_reaches_the_agent_in_the_current_shape(
    plugin: Path, agent: StubAgent, command: str, version: str
) -> None:
    config = net_config(version, agent.socket_path, prevResult=PREV_RESULT_04)
    assert run_plugin(plugin, cni_env(command), config).ok() is None
    request = agent.only_request()
    assert request.config["prevResult"] == PREV_RESULT_04  # the config itself is passed on untouched
    assert request.prev_result == {
        "cniVersion": "1.1.0",
        "interfaces": PREV_RESULT_04["interfaces"],
        "ips": [{"address": "100.64.0.5/24", "gateway": "100.64.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }


def test_gc_passes_the_valid_attachments(plugin: Path, agent: StubAgent) -> None:
    keep = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
    config = net_config("1.1.0", agent.socket_path, **{"cni.dev/valid-attachments": keep})
    assert run_plugin(plugin, cni_env("GC"), config).ok() is None
    attachments = agent.only_request().valid_attachments
    assert attachments is not None
    assert [(a.container_id, a.ifname) for a in attachments] == [("c1", "eth0"), ("c2", "net1")]


def test_gc_accepts_the_legacy_attachments_key(plugin: Path, agent: StubAgent) -> None:
    config = net_config(
        "1.1.0", agent.socket_path, **{"cni.dev/attachments": [{"containerID": "c1", "ifname": "e"}]}
    )
    run_plugin(plugin, cni_env("GC"), config).ok()
    attachments = agent.only_request().valid_attachments
    assert attachments is not None and [a.container_id for a in attachments] == ["c1"]


def test_the_default_socket_is_the_documented_one(plugin: Path) -> None:
    # Without agentSocket the plugin asks /var/run/sluice/cni.sock. STATUS changes nothing even if
    # a real agent listens there, but then the answer would not name the path: require it absent.
    require(
        not os.path.exists(DEFAULT_SOCKET),
        f"a real agent socket exists at {DEFAULT_SOCKET}: run the suite where no sluice-agent runs",
    )
    config = net_config("1.1.0", "unused")
    del config["agentSocket"]
    error = run_plugin(plugin, cni_env("STATUS"), config).error()
    assert DEFAULT_SOCKET == "/var/run/sluice/cni.sock"
    assert error["code"] == 50
    assert error["msg"].startswith(f"sluice agent is not reachable at {DEFAULT_SOCKET}: ")


# ---- results shaped per version ------------------------------------------------------------------


@pytest.mark.parametrize("version", [v for v in SUPPORTED_VERSIONS if v.startswith("0.")])
def test_add_result_for_0x_has_ip_versions_and_no_1x_fields(
    plugin: Path, agent: StubAgent, version: str
) -> None:
    result = run_plugin(plugin, cni_env("ADD"), net_config(version, agent.socket_path)).ok()
    assert result == {
        "cniVersion": version,
        "interfaces": [
            {"name": "sl-web0-7f3a", "mac": "9e:2d:11:22:33:44"},
            {"name": "eth0", "mac": "0a:58:64:40:00:05", "sandbox": "/var/run/netns/pod1"},
        ],
        "ips": [
            {"version": "4", "interface": 1, "address": "100.64.0.5/24", "gateway": "100.64.0.1"},
            {"version": "6", "interface": 1, "address": "fd00:64::5/64", "gateway": "fd00:64::1"},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "100.64.0.1"}],
        "dns": {"nameservers": ["100.64.0.10"], "search": ["default.svc.cluster.local"]},
    }


def test_add_result_for_1_0_0_has_no_ip_versions_and_no_1_1_fields(plugin: Path, agent: StubAgent) -> None:
    result = run_plugin(plugin, cni_env("ADD"), net_config("1.0.0", agent.socket_path)).ok()
    assert result["cniVersion"] == "1.0.0"
    assert all("version" not in ip for ip in result["ips"])
    assert [ip["interface"] for ip in result["ips"]] == [1, 1]
    assert result["interfaces"][1] == {
        "name": "eth0",
        "mac": "0a:58:64:40:00:05",
        "sandbox": "/var/run/netns/pod1",
    }
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "100.64.0.1"}]


def test_add_result_for_1_1_0_is_the_agents_result(plugin: Path, agent: StubAgent) -> None:
    result = run_plugin(plugin, cni_env("ADD"), net_config("1.1.0", agent.socket_path)).ok()
    assert result == AGENT_RESULT


@pytest.mark.parametrize(("command", "version"), [c for c in ALL_CALLS if c[0] != "ADD"])
def test_commands_other_than_add_print_nothing(
    plugin: Path, agent: StubAgent, command: str, version: str
) -> None:
    run = run_plugin(plugin, cni_env(command), config_for(command, version, agent.socket_path))
    assert run.ok() is None
    assert run.stdout == b""
    assert agent.only_request().command == command


# ---- agent errors and an absent, silent or broken agent --------------------------------------------


@pytest.mark.parametrize(
    ("command", "version", "code"),
    [(command, version, 11) for command, version in ALL_CALLS]
    + [("ADD", "1.1.0", code) for code in (3, 7, 50, 51, 107)]
    + [("STATUS", "1.1.0", code) for code in (50, 51)],
)
def test_agent_errors_are_passed_through(
    plugin: Path, agent: StubAgent, command: str, version: str, code: int
) -> None:
    def fail(request: Request) -> Response:
        return Response.failure(code, f"agent says no to {request.command}", "details from the agent")

    agent.handler = fail
    error = run_plugin(plugin, cni_env(command), config_for(command, version, agent.socket_path)).error()
    assert error == {
        "cniVersion": version,
        "code": code,
        "msg": f"agent says no to {command}",
        "details": "details from the agent",
    }


@pytest.mark.parametrize(("command", "version"), [c for c in ALL_CALLS if c[1] in ("0.4.0", "1.1.0")])
def test_no_agent_socket_is_try_again_later_or_not_available(
    plugin: Path, sockdir: str, command: str, version: str
) -> None:
    missing = os.path.join(sockdir, "absent.sock")
    error = run_plugin(plugin, cni_env(command), config_for(command, version, missing)).error()
    assert error["code"] == (50 if command == "STATUS" else 11)
    assert missing in error["msg"]
    assert error["cniVersion"] == version


def test_a_failure_is_logged_on_stderr_before_the_plugin_exits(plugin: Path, sockdir: str) -> None:
    # The plugin ends with _exit (no interpreter finalization, so no logging shutdown either):
    # its log line must still be out, whole.
    missing = os.path.join(sockdir, "absent.sock")
    run = run_plugin(plugin, cni_env("ADD"), config_for("ADD", "1.1.0", missing))
    assert run.error()["code"] == 11
    log = run.stderr.decode()
    assert log.endswith("\n") and "ADD container=" in log and "failed with code 11" in log, log


@pytest.mark.parametrize("command", ["ADD", "DEL", "STATUS"])
def test_a_stale_socket_file_is_try_again_later_or_not_available(
    plugin: Path, sockdir: str, command: str
) -> None:
    stale = os.path.join(sockdir, "stale.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(stale)
    listener.close()  # the file stays, nobody listens: ECONNREFUSED, as after an agent crash
    error = run_plugin(plugin, cni_env(command), config_for(command, "1.1.0", stale)).error()
    assert error["code"] == (50 if command == "STATUS" else 11)
    assert stale in error["msg"]


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
def test_an_agent_that_never_answers_hits_the_deadline(plugin: Path, agent: StubAgent, command: str) -> None:
    agent.mode = "hang"
    config = config_for(command, "1.1.0", agent.socket_path, timeoutSeconds=1)
    run = run_plugin(plugin, cni_env(command), config)
    error = run.error()
    assert error["code"] == (50 if command == "STATUS" else 11)
    assert error["msg"] == f"timed out waiting for agent at {agent.socket_path}"
    assert run.elapsed < 1 + SLACK_SECONDS
    assert 0 < agent.only_request().timeout_seconds <= 1


def test_an_agent_that_hangs_up_is_try_again_later(plugin: Path, agent: StubAgent) -> None:
    agent.mode = "close"
    error = run_plugin(plugin, cni_env("ADD"), net_config("1.0.0", agent.socket_path)).error()
    assert error["code"] == 11
    assert "closed the connection" in error["msg"] and agent.socket_path in error["msg"]


@pytest.mark.parametrize(
    "reply",
    [
        b"this is not json\n",
        b'{"v": 1}\n',
        b'{"v": 2, "result": null}\n',
        b'{"v": 1, "error": {"code": "11", "msg": "x"}}\n',
        b'{"v": 1, "result": null}\n',
        b'{"v": 1, "result": {"ips": [{"address": "100.64.0.5"}]}}\n',
        b'{"v": 1, "result": {"interfaces": [{}], "ips": []}}\n',
        b'{"v": 1, "result": {"ips": [{"address": "100.64.0.5/24", "interface": 3}]}}\n',
        b'{"v": 1, "result": {}}\n{"v": 1, "result": {}}\n',
    ],
    ids=[
        "not-json",
        "neither",
        "wrong-version",
        "bad-code",
        "null-result",
        "no-prefix",
        "unnamed-iface",
        "bad-index",
        "two-messages",
    ],
)
def test_a_broken_agent_answer_is_an_internal_error(plugin: Path, agent: StubAgent, reply: bytes) -> None:
    agent.mode = "raw"
    agent.raw_reply = reply
    error = run_plugin(plugin, cni_env("ADD"), net_config("1.0.0", agent.socket_path)).error()
    assert error["code"] == 999
    assert agent.socket_path in error["msg"]
    assert error["cniVersion"] == "1.0.0"


def test_an_agent_answer_cut_short_is_try_again_later(plugin: Path, agent: StubAgent) -> None:
    agent.mode = "raw"
    agent.raw_reply = b'{"v": 1, "result": {"ips": ['
    error = run_plugin(plugin, cni_env("ADD"), net_config("1.1.0", agent.socket_path)).error()
    assert error["code"] == 11
    assert "in the middle of its answer" in error["msg"] + error["details"]
