"""The controller config: defaults, YAML, environment, errors that name the key, check-config."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller.config import ConfigError, ControllerConfig, LogLevel, check_config_main, load_config
from lab.cli import main as sluice


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "controller.yaml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    config = load_config(None, {})
    assert config == ControllerConfig()
    assert (config.openflow_address, config.openflow_port) == ("0.0.0.0", 6653)
    assert (config.metrics_address, config.metrics_port) == ("0.0.0.0", 9102)
    assert (config.lease_name, config.lease_namespace) == ("sluice-controller", "kube-system")
    assert (config.lease_duration_seconds, config.lease_renew_seconds) == (15, 10)
    assert config.identity == socket.gethostname()
    assert config.kubeconfig is None and not config.tls
    assert config.log_level is LogLevel.INFO


def test_yaml_then_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "openflow_port: 6633\nidentity: replica-a\nlog_level: debug\nkubeconfig: /etc/kube.conf\n",
    )
    config = load_config(path, {"SLUICE_CONTROLLER_OPENFLOW_PORT": "7000", "OTHER": "x"})
    assert config.openflow_port == 7000  # the environment wins
    assert config.identity == "replica-a"
    assert config.log_level is LogLevel.DEBUG
    assert config.kubeconfig == "/etc/kube.conf"
    # An empty variable unsets an optional setting.
    assert load_config(path, {"SLUICE_CONTROLLER_KUBECONFIG": ""}).kubeconfig is None


def test_tls_needs_all_three(tmp_path: Path) -> None:
    ok = load_config(write(tmp_path, "tls_key: /k\ntls_cert: /c\ntls_ca: /a\n"), {})
    assert ok.tls
    with pytest.raises(ConfigError, match=r"^tls_ca: "):
        load_config(write(tmp_path, "tls_key: /k\ntls_cert: /c\n"), {})


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("bogus: 1\n", "bogus"),
        ("openflow_port: '6653'\n", "openflow_port"),
        ("openflow_port: true\n", "openflow_port"),
        ("openflow_port: 70000\n", "openflow_port"),
        ("metrics_port: 0\n", "metrics_port"),
        ("openflow_address: controller.local\n", "openflow_address"),
        ("identity: 5\n", "identity"),
        ("identity: ''\n", "identity"),
        ("lease_name: null\n", "lease_name"),
        ("log_level: loud\n", "log_level"),
        ("resync_seconds: 0\n", "resync_seconds"),
        ("lease_renew_seconds: 15\n", "lease_renew_seconds"),
        ("tls_key: [a]\n", "tls_key"),
    ],
)
def test_a_bad_setting_is_an_error_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, yaml_text), {})
    assert str(err.value).startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SLUICE_CONTROLLER_OPENFLOW_PORT", "sixty"),
        ("SLUICE_CONTROLLER_NOPE", "1"),
        ("SLUICE_CONTROLLER_LOG_LEVEL", "verbose"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {var: value})
    assert str(err.value).startswith(f"{var}: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: [\n", "not valid YAML at line"), ("- 1\n- 2\n", "must be a mapping")],
)
def test_a_bad_file_is_an_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path, {})
    assert str(err.value).startswith(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.yaml"), {})


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}) == ControllerConfig()


def test_check_config_prints_the_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_CONTROLLER_RESYNC_SECONDS", "30")
    path = write(tmp_path, "openflow_port: 6633\n")
    assert sluice(["check-config", "controller", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ok"
    assert "openflow_port: 6633" in out and "resync_seconds: 30" in out and "log_level: INFO" in out


def test_check_config_reports_the_key_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "openflow_port: nope\n")
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli", "check-config", "controller", path],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 1
    assert "openflow_port: expected an integer" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_check_config_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(["a", "b"]) == 2
    assert "usage" in capsys.readouterr().err
    assert check_config_main(["--help"]) == 0
