"""The agent caps glibc's malloc arenas, so the native memory of its per-call threads stays put.

Each case runs in a fresh interpreter: an arena cap set in the pytest process would stay there.
The count comes from glibc's own `malloc_info` report, taken while eight threads hold memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ovsagent.main
from ovsagent.main import MALLOC_ARENAS, limit_malloc_arenas

# Eight threads allocate, all alive at once, then the process reports its arenas ("heaps").
_ARENAS_SCRIPT = """
import ctypes, os, sys, threading
from ovsagent.main import limit_malloc_arenas
capped = limit_malloc_arenas(os.environ) if sys.argv[1] == "cap" else False
barrier = threading.Barrier(9)
held = []
def work():
    held.append(bytearray(64 * 1024))
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
barrier.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
report = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, report)
libc.fclose(report)
barrier.wait()
for t in threads:
    t.join()
print(capped, open(sys.argv[2]).read().count("<heap nr="))
"""


def _arenas(tmp_path: Path, mode: str, environ: dict[str, str]) -> tuple[bool, int]:
    """Run the script with `mode` ("cap" or "none"); return (cap set, arenas in use)."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | environ
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS_SCRIPT, mode, str(tmp_path / "malloc_info.xml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_eight_threads_share_the_capped_arenas(tmp_path: Path) -> None:
    capped, uncapped = _arenas(tmp_path, "none", {})
    # Without the cap glibc gives each thread an arena of its own (up to 8 per core): the count
    # can tell the difference.
    assert not capped and uncapped > MALLOC_ARENAS
    assert _arenas(tmp_path, "cap", {}) == (True, MALLOC_ARENAS)


def test_an_operators_malloc_arena_max_is_left_alone(tmp_path: Path) -> None:
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "4"}) is False
    assert _arenas(tmp_path, "cap", {"MALLOC_ARENA_MAX": "4"}) == (False, 4)


def test_the_agent_process_caps_the_arenas_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[bool] = []

    def record(environ: object) -> bool:
        seen.append(True)
        return True

    monkeypatch.setattr(ovsagent.main, "limit_malloc_arenas", record)
    # The config does not exist, so main returns at once, but only after the cap.
    assert ovsagent.main.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert seen == [True]
