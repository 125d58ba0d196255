"""CNI conformance of the real plugin executable: VERSION, environment, config and CNI_ARGS rules.

Every test execs `sluice-cni` as a runtime does. PluginRun checks on every run that stdout is empty
or exactly one JSON line; `.error()` checks the CNI error object's keys. Tests that must fail before
the agent is asked run against a stub agent and assert it received nothing.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from cni.versions import SUPPORTED_VERSIONS
from tests.cni.conftest import StubAgent, cni_env, net_config, run_plugin

ATTACHMENT_COMMANDS = ("ADD", "DEL", "CHECK")
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": ("CNI_PATH",),
    "GC": ("CNI_PATH",),
}
PREV_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:64:40:00:05", "sandbox": "/var/run/netns/pod1"}],
    "ips": [{"address": "100.64.0.5/24", "gateway": "100.64.0.1", "interface": 0}],
}


def config_for(command: str, version: str, agent: StubAgent, **extra: object) -> dict[str, object]:
    """A valid config for `command` (CHECK gets its prevResult, GC its attachment list)."""
    if command == "CHECK":
        extra.setdefault("prevResult", PREV_RESULT)
    if command == "GC":
        extra.setdefault("cni.dev/valid-attachments", [])
    return net_config(version, agent.socket_path, **extra)


def assert_rejected(agent: StubAgent, error: dict[str, object], code: int, *needles: str) -> None:
    assert error["code"] == code, error
    text = f"{error['msg']} {error['details']}"
    for needle in needles:
        assert needle in text, (needle, error)
    assert agent.requests == [], "the plugin must not ask the agent after a failed check"


# ---- VERSION --------------------------------------------------------------------------------------


def test_version_needs_only_cni_command(plugin: Path) -> None:
    out = run_plugin(plugin, {"CNI_COMMAND": "VERSION"}).ok()
    assert out == {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert {"0.4.0", "1.0.0", "1.1.0"} <= set(out["supportedVersions"])


def test_version_ignores_dummy_variables(plugin: Path) -> None:
    env = {name: "dummy" for name in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS")}
    out = run_plugin(plugin, {"CNI_COMMAND": "VERSION", **env}, {"cniVersion": "1.0.0"}).ok()
    assert out == {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


@pytest.mark.parametrize("requested", [*SUPPORTED_VERSIONS, "0.2.0", "9.9.9"])
def test_version_echoes_the_requested_cni_version(plugin: Path, requested: str) -> None:
    out = run_plugin(plugin, {"CNI_COMMAND": "VERSION"}, {"cniVersion": requested}).ok()
    assert out["cniVersion"] == requested
    assert out["supportedVersions"] == list(SUPPORTED_VERSIONS)


def test_version_reads_a_full_network_config(plugin: Path) -> None:
    config = net_config("0.4.0", "/run/x.sock", prevResult={"cniVersion": "1.1.0", "ips": []})
    assert run_plugin(plugin, {"CNI_COMMAND": "VERSION"}, config).ok()["cniVersion"] == "0.4.0"


@pytest.mark.parametrize("stdin", [b"", b"not json", b"[1, 2]", b'{"cniVersion": 5}', b"\xff\xfe", b"{}"])
def test_version_answers_whatever_stdin_holds(plugin: Path, stdin: bytes) -> None:
    out = run_plugin(plugin, {"CNI_COMMAND": "VERSION"}, stdin).ok()
    assert out == {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def run_with_open_stdin(plugin: Path, env: dict[str, str], wait: float) -> tuple[int, bytes, float]:
    """Exec the plugin with a stdin pipe that is never written to nor closed (a stuck runtime)."""
    started = time.monotonic()
    proc = subprocess.Popen([str(plugin)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        returncode = proc.wait(timeout=wait)
        elapsed = time.monotonic() - started
        return returncode, proc.stdout.read(), elapsed
    finally:
        proc.stdin.close()
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_version_does_not_hang_on_a_stdin_that_never_closes(plugin: Path) -> None:
    returncode, stdout, elapsed = run_with_open_stdin(plugin, {"CNI_COMMAND": "VERSION"}, wait=15)
    assert returncode == 0
    assert json.loads(stdout) == {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert elapsed < 2.0 + 3.0  # VERSION waits 2 s for stdin, then answers anyway


def test_add_fails_with_code_5_on_a_stdin_that_never_closes(plugin: Path, agent: StubAgent) -> None:
    returncode, stdout, elapsed = run_with_open_stdin(plugin, cni_env("ADD"), wait=25)
    error = json.loads(stdout)
    assert returncode == 1
    assert (error["code"], error["cniVersion"]) == (5, "1.1.0")
    assert "stdin" in error["msg"]
    assert elapsed < 10.0 + 5.0
    assert agent.requests == []


# ---- CNI_COMMAND and required variables ------------------------------------------------------------


def test_missing_cni_command_is_code_4(plugin: Path, agent: StubAgent) -> None:
    error = run_plugin(plugin, {"CNI_PATH": "/opt/cni/bin"}, net_config("1.1.0", agent.socket_path)).error()
    assert_rejected(agent, error, 4, "CNI_COMMAND")
    assert error["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("command", ["FOO", "add", "version", " ADD"])
def test_unknown_cni_command_is_code_4(plugin: Path, agent: StubAgent, command: str) -> None:
    env = cni_env("ADD", CNI_COMMAND=command)
    error = run_plugin(plugin, env, net_config("1.1.0", agent.socket_path)).error()
    assert_rejected(agent, error, 4, "CNI_COMMAND", repr(command))


@pytest.mark.parametrize(
    ("command", "variable"), [(cmd, var) for cmd, names in REQUIRED.items() for var in names]
)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_each_required_variable_is_checked(
    plugin: Path, agent: StubAgent, command: str, variable: str, how: str
) -> None:
    env = cni_env(command, **{variable: None if how == "unset" else ""})
    error = run_plugin(plugin, env, config_for(command, "1.1.0", agent)).error()
    assert_rejected(agent, error, 4, variable)


@pytest.mark.parametrize("command", list(REQUIRED))
def test_all_missing_variables_are_named(plugin: Path, agent: StubAgent, command: str) -> None:
    env = {"CNI_COMMAND": command}
    error = run_plugin(plugin, env, config_for(command, "1.1.0", agent)).error()
    assert_rejected(agent, error, 4, *REQUIRED[command])


@pytest.mark.parametrize("netns", [None, ""])
def test_del_does_not_need_a_netns(plugin: Path, agent: StubAgent, netns: str | None) -> None:
    run = run_plugin(plugin, cni_env("DEL", CNI_NETNS=netns), net_config("1.0.0", agent.socket_path))
    assert run.ok() is None
    assert agent.only_request().netns == ""


@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_and_gc_need_only_cni_path(plugin: Path, agent: StubAgent, command: str) -> None:
    env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    assert run_plugin(plugin, env, config_for(command, "1.1.0", agent)).ok() is None
    request = agent.only_request()
    assert (request.container_id, request.netns, request.ifname) == ("", "", "")


# ---- container id and interface name ---------------------------------------------------------------


@pytest.mark.parametrize(
    "container_id", ["-abc", "_abc", ".abc", "abc/def", "abc def", "abc:1", "ab\u00e7", "abc$", "abc\nd"]
)
@pytest.mark.parametrize("command", ATTACHMENT_COMMANDS)
def test_invalid_container_id_is_code_4(
    plugin: Path, agent: StubAgent, command: str, container_id: str
) -> None:
    env = cni_env(command, CNI_CONTAINERID=container_id)
    error = run_plugin(plugin, env, config_for(command, "1.0.0", agent)).error()
    assert_rejected(agent, error, 4, "CNI_CONTAINERID")


@pytest.mark.parametrize("container_id", ["a", "Z9", "abc_def.ghi-jkl", "0" * 64, "k8s_POD.web-0_default"])
def test_valid_container_ids_are_accepted(plugin: Path, agent: StubAgent, container_id: str) -> None:
    env = cni_env("ADD", CNI_CONTAINERID=container_id)
    run_plugin(plugin, env, net_config("1.1.0", agent.socket_path)).ok()
    assert agent.only_request().container_id == container_id


@pytest.mark.parametrize("ifname", [".", "..", "a" * 16, "et/h0", "eth:0", "eth 0", "eth\t0", "\u00e9" * 8])
@pytest.mark.parametrize("command", ATTACHMENT_COMMANDS)
def test_invalid_ifname_is_code_4(plugin: Path, agent: StubAgent, command: str, ifname: str) -> None:
    env = cni_env(command, CNI_IFNAME=ifname)
    error = run_plugin(plugin, env, config_for(command, "1.0.0", agent)).error()
    assert_rejected(agent, error, 4, "CNI_IFNAME")


@pytest.mark.parametrize("ifname", ["eth0", "net1", "a" * 15, "a", "eth0.100", "vl-2_x"])
def test_valid_ifnames_are_accepted(plugin: Path, agent: StubAgent, ifname: str) -> None:
    run_plugin(plugin, cni_env("ADD", CNI_IFNAME=ifname), net_config("1.1.0", agent.socket_path)).ok()
    assert agent.only_request().ifname == ifname


# ---- the network configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"   \n",
        b"not json",
        b"{",
        b"[]",
        b'"sluice"',
        b"42",
        b"\xff\xfe{}",
        b"[" * 100000 + b"]" * 100000,
    ],
    ids=["empty", "blank", "text", "truncated", "array", "string", "number", "not-utf8", "deep"],
)
@pytest.mark.parametrize("command", list(REQUIRED))
def test_stdin_that_is_not_a_json_object_is_code_6(
    plugin: Path, agent: StubAgent, command: str, stdin: bytes
) -> None:
    error = run_plugin(plugin, cni_env(command), stdin).error()
    assert_rejected(agent, error, 6)
    assert error["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("name", [None, "", "-net", "my net", "net/1", 5, ["sluice"]])
@pytest.mark.parametrize("command", list(REQUIRED))
def test_missing_or_invalid_name_is_code_7(
    plugin: Path, agent: StubAgent, command: str, name: object
) -> None:
    config = config_for(command, "1.1.0", agent)
    if name is None:
        del config["name"]
    else:
        config["name"] = name
    error = run_plugin(plugin, cni_env(command), config).error()
    assert_rejected(agent, error, 7, "name")
    assert error["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("version", [None, "", "0.1.0", "0.2.0", "1.2.0", "2.0.0", "banana"])
@pytest.mark.parametrize("command", list(REQUIRED))
def test_unsupported_cni_version_is_code_1(
    plugin: Path, agent: StubAgent, command: str, version: str | None
) -> None:
    config = config_for(command, "1.1.0", agent)
    if version is None:
        del config["cniVersion"]
    else:
        config["cniVersion"] = version
    error = run_plugin(plugin, cni_env(command), config).error()
    assert_rejected(agent, error, 1, "cniVersion")
    # Errors echo the config's version when it is one; otherwise the plugin's own.
    expected = version if version in ("0.1.0", "0.2.0", "1.2.0", "2.0.0") else "1.1.0"
    assert error["cniVersion"] == expected


def test_cni_version_of_the_wrong_type_is_code_7(plugin: Path, agent: StubAgent) -> None:
    config = net_config("1.1.0", agent.socket_path, cniVersion=1.1)
    assert_rejected(agent, run_plugin(plugin, cni_env("ADD"), config).error(), 7, "cniVersion")


@pytest.mark.parametrize("version", [v for v in SUPPORTED_VERSIONS if v < "0.4.0"])
def test_check_below_0_4_0_is_code_1(plugin: Path, agent: StubAgent, version: str) -> None:
    error = run_plugin(plugin, cni_env("CHECK"), config_for("CHECK", version, agent)).error()
    assert_rejected(agent, error, 1, "CHECK", "0.4.0")
    assert error["cniVersion"] == version


@pytest.mark.parametrize("version", [v for v in SUPPORTED_VERSIONS if v != "1.1.0"])
@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_below_1_1_0_are_code_1(
    plugin: Path, agent: StubAgent, command: str, version: str
) -> None:
    error = run_plugin(plugin, cni_env(command), config_for(command, version, agent)).error()
    assert_rejected(agent, error, 1, command, "1.1.0")
    assert error["cniVersion"] == version


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_errors_carry_the_configs_cni_version(plugin: Path, agent: StubAgent, version: str) -> None:
    env = cni_env("ADD", CNI_IFNAME="..")
    error = run_plugin(plugin, env, net_config(version, agent.socket_path)).error()
    assert (error["code"], error["cniVersion"]) == (4, version)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("agentSocket", "run/sluice/cni.sock", "agentSocket"),
        ("agentSocket", 7, "agentSocket"),
        ("agentSocket", "/" + "x" * 120, "107"),
        ("timeoutSeconds", 0, "timeoutSeconds"),
        ("timeoutSeconds", -1, "timeoutSeconds"),
        ("timeoutSeconds", "5", "timeoutSeconds"),
        ("timeoutSeconds", True, "timeoutSeconds"),
        ("timeoutSeconds", 1e9, "timeoutSeconds"),
        ("prevResult", "yes", "prevResult"),
        ("prevResult", [1], "prevResult"),
    ],
)
def test_invalid_plugin_keys_are_code_7(
    plugin: Path, agent: StubAgent, key: str, value: object, needle: str
) -> None:
    config = net_config("1.1.0", agent.socket_path)
    config[key] = value
    assert_rejected(agent, run_plugin(plugin, cni_env("ADD"), config).error(), 7, needle)


def test_check_without_prev_result_is_code_7(plugin: Path, agent: StubAgent) -> None:
    config = net_config("1.0.0", agent.socket_path)
    assert_rejected(agent, run_plugin(plugin, cni_env("CHECK"), config).error(), 7, "prevResult")


@pytest.mark.parametrize(
    "attachments",
    ["all", {"containerID": "a"}, [{"containerID": "a"}], [{"containerID": 1, "ifname": "eth0"}], ["a/eth0"]],
)
def test_gc_with_a_malformed_attachment_list_is_code_7(
    plugin: Path, agent: StubAgent, attachments: object
) -> None:
    config = net_config("1.1.0", agent.socket_path, **{"cni.dev/valid-attachments": attachments})
    error = run_plugin(plugin, cni_env("GC"), config).error()
    assert_rejected(agent, error, 7, "cni.dev/valid-attachments")


def test_unknown_config_keys_are_tolerated_and_forwarded(plugin: Path, agent: StubAgent) -> None:
    config = net_config("1.1.0", agent.socket_path, mtu=1400, vendor={"x": [1, 2]}, args={"cni": {"a": "b"}})
    run_plugin(plugin, cni_env("ADD"), config).ok()
    forwarded = agent.only_request().config
    assert (forwarded["mtu"], forwarded["vendor"], forwarded["args"]) == (
        1400,
        {"x": [1, 2]},
        {"cni": {"a": "b"}},
    )


# ---- CNI_ARGS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cni_args", "needle"),
    [
        ("FOO=bar", "FOO"),
        ("K8S_POD_NAME=web-0;MAC=0a:58:64:40:00:09", "MAC"),
        ("IgnoreUnknown=0;FOO=bar", "FOO"),
        ("IgnoreUnknown=false;FOO=bar", "FOO"),
        ("IgnoreUnknown=maybe", "IgnoreUnknown"),
        ("K8S_POD_NAME", "K8S_POD_NAME"),
        ("=value", "=value"),
    ],
)
@pytest.mark.parametrize("command", ATTACHMENT_COMMANDS)
def test_bad_cni_args_are_code_4(
    plugin: Path, agent: StubAgent, command: str, cni_args: str, needle: str
) -> None:
    env = cni_env(command, CNI_ARGS=cni_args)
    error = run_plugin(plugin, env, config_for(command, "1.0.0", agent)).error()
    assert_rejected(agent, error, 4, "CNI_ARGS", needle)


@pytest.mark.parametrize("flag", ["1", "true", "True", "TRUE"])
def test_ignore_unknown_lets_unknown_keys_through(plugin: Path, agent: StubAgent, flag: str) -> None:
    env = cni_env("ADD", CNI_ARGS=f"IgnoreUnknown={flag};FOO=bar;K8S_POD_NAME=web-0;MAC=0a:58:64:40:00:09")
    run_plugin(plugin, env, net_config("1.1.0", agent.socket_path)).ok()
    args = agent.only_request().args
    assert args.ignore_unknown is True
    assert args.pod_name == "web-0"
    assert args.extra == (("FOO", "bar"), ("MAC", "0a:58:64:40:00:09"))


@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_and_gc_do_not_fail_on_cni_args(plugin: Path, agent: StubAgent, command: str) -> None:
    env = cni_env(command, CNI_ARGS="FOO=bar")
    assert run_plugin(plugin, env, config_for(command, "1.1.0", agent)).ok() is None
    assert agent.only_request().args.extra == ()
