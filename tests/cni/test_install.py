"""`sluice install-cni`: the plugin as a node has it, a launcher run as `python -IS` plus its library."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cni import install
from cni.install import install_plugin

ROOT = Path(__file__).resolve().parents[2]


def version_of(plugin: Path, **env: str) -> dict[str, object]:
    proc = subprocess.run(
        [str(plugin)],
        input=b'{"cniVersion": "1.0.0"}',
        env={"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION", **env},
        capture_output=True,
        timeout=30,
        check=True,
    )
    answer: dict[str, object] = json.loads(proc.stdout)
    return answer


def libraries(bin_dir: Path) -> list[str]:
    return sorted(p.name for p in (bin_dir / ".sluice-cni.d").iterdir())


def test_installs_an_isolated_launcher_and_a_compiled_library(tmp_path: Path) -> None:
    plugin = install_plugin(tmp_path, sys.executable)
    assert plugin == tmp_path / "sluice-cni"
    assert os.access(plugin, os.X_OK)
    first_line = plugin.read_text().splitlines()[0]
    assert first_line == f"#!{sys.executable} -IS"
    [lib] = libraries(tmp_path)
    package = tmp_path / ".sluice-cni.d" / lib / "cni"
    assert (package / "plugin.py").exists() and not (package / "install.py").exists()
    assert list((package / "__pycache__").glob("plugin.*.pyc"))
    assert version_of(plugin)["cniVersion"] == "1.0.0"


def test_the_environment_cannot_redirect_the_plugin(tmp_path: Path) -> None:
    # Isolated mode: PYTHONPATH (and the current directory) cannot put another `cni` first.
    fake = tmp_path / "fake" / "cni"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit(42)\n")
    plugin = install_plugin(tmp_path / "bin", sys.executable)
    answer = version_of(plugin, PYTHONPATH=str(fake.parent), PYTHONSTARTUP="/nonexistent")
    assert answer["cniVersion"] == "1.0.0"


def test_reinstall_is_idempotent_and_an_upgrade_keeps_the_previous_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir, sys.executable)
    original = libraries(bin_dir)
    install_plugin(bin_dir, sys.executable)
    assert libraries(bin_dir) == original

    # Two upgrades (sources changed): the launcher moves to the newest library; the one before
    # it stays for plugins started just before the switch; the oldest goes.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "cni", source, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(install, "PACKAGE", source)
    seen = [original[0]]
    for release in (1, 2):
        with open(source / "versions.py", "a") as f:
            f.write(f"\nRELEASE = {release}\n")
        plugin = install_plugin(bin_dir, sys.executable)
        [new] = set(libraries(bin_dir)) - set(seen)
        seen.append(new)
        assert new in plugin.read_text()
        assert version_of(plugin)["cniVersion"] == "1.0.0"
    assert libraries(bin_dir) == sorted(seen[1:])


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        install_plugin(tmp_path, "python3")
    with pytest.raises(ValueError, match="invalid plugin file name"):
        install_plugin(tmp_path, sys.executable, name="../x")
    assert not list(tmp_path.iterdir())


def test_the_command_installs_and_reports_errors(tmp_path: Path) -> None:
    def sluice(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "lab.cli", "install-cni", "--dir", str(tmp_path), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)

    done = sluice("--name", "sl")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "sl")
    assert version_of(tmp_path / "sl")["cniVersion"] == "1.0.0"
    bad = sluice("--python", "python3")
    assert bad.returncode == 1 and "absolute path" in bad.stderr and "Traceback" not in bad.stderr
