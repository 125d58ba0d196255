"""The one-way import rule of ARCHITECTURE §1, enforced by reading every module's imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"flows", "controller", "ovsagent", "cni", "lab", "bench", "tests"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# package -> (our modules it may import, third-party top-level modules it may import)
ALLOWED: dict[str, tuple[set[str], set[str]]] = {
    "flows": ({"flows"}, set()),
    "cni": ({"cni"}, set()),
    "controller": ({"controller", "flows"}, {"os_ken", "kubernetes", "prometheus_client", "yaml"}),
    "ovsagent": (
        {"ovsagent", "cni.protocol", "cni.errors"},
        {"ovs", "pyroute2", "kubernetes", "prometheus_client", "yaml"},
    ),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _allowed(name: str, ours: set[str], third: set[str]) -> bool:
    top = name.split(".")[0]
    if top in STDLIB:
        return True
    if top not in OURS:
        return top in third
    # `cni.protocol` allowed: `import cni.protocol`, `from cni.protocol import X`, and the bare
    # parent `from cni import protocol` are fine; `cni.plugin` is not.
    return any(name == o or name.startswith(o + ".") or o.startswith(name + ".") for o in ours)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    ours, third = ALLOWED[package]
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if not _allowed(name, ours, third):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_nothing_imports_lab_or_bench() -> None:
    bad = []
    for package in ("flows", "controller", "ovsagent", "cni"):
        for path in (ROOT / package).rglob("*.py"):
            for name in _imports(path):
                if name.split(".")[0] in ("lab", "bench"):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []
