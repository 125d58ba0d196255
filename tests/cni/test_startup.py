"""The plugin's start-up weight: which modules VERSION and a forwarded ADD import (deterministic, no timing).

The issue's target is VERSION within 1.3x of `python -c pass`; that holds only while VERSION imports
nothing heavy. These tests run the plugin in `python -S` (no site-packages, so the baseline is the
bare interpreter's own modules, as in the installed plugin's `python -IS`) and list what the call
added. Neither `os` nor `__future__` may be among them: each costs about 1 ms of CPU per call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cni.conftest import StubAgent, cni_env, net_config

ROOT = Path(__file__).resolve().parents[2]

# Runs one plugin call in-process and reports, on stderr's last line, the modules it imported.
PROBE = """
import sys
before = set(sys.modules)
from cni.plugin import main
code = main()
added = sorted(set(sys.modules) - before)
sys.stderr.write("\\nIMPORTED " + str(code) + " " + " ".join(added) + "\\n")
"""


def imports_of(env: dict[str, str], stdin: bytes) -> tuple[int, set[str], bytes]:
    """Run one call under `python -S`; return its exit code, the modules it added, and its stdout."""
    proc = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        input=stdin,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = proc.stderr.decode().strip().splitlines()[-1]
    assert report.startswith("IMPORTED "), proc.stderr
    _, code, *names = report.split()
    return int(code), set(names), proc.stdout


def test_version_imports_nothing_heavy() -> None:
    code, added, stdout = imports_of({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert code == 0
    assert json.loads(stdout)["cniVersion"] == "1.0.0"
    allowed = {"cni", "cni.plugin", "cni.fastjson", "cni.stdio", "cni.versions", "select", "_json"}
    assert added <= allowed, added


def test_a_forwarded_add_imports_nothing_heavy(agent: StubAgent) -> None:
    config = json.dumps(net_config("1.0.0", agent.socket_path)).encode()
    code, added, stdout = imports_of(cni_env("ADD"), config)
    assert code == 0, stdout
    assert json.loads(stdout)["cniVersion"] == "1.0.0"
    assert {"_socket", "cni.wire", "cni.invocation"} <= added
    heavy = {"json", "socket", "re", "enum", "dataclasses", "typing", "inspect", "logging", "ipaddress"}
    assert not added & (heavy | {"cni.protocol", "os", "__future__"}), added
