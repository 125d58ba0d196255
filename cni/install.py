"""Install the `sluice-cni` executable a runtime execs, in its CNI bin directory.

The plugin is started once per pod operation, so its start-up is on every pod's critical path.
A pip console script starts the interpreter with `site`, which for an installed Sluice means
scanning site-packages and its `.pth` files (an editable install's finder alone imports pathlib
and re): 15-25 ms before the plugin's first line, more than the reference plugins' whole ADD.
The plugin needs only the standard library, so it is installed as:

* `DIR/NAME`: a five-line launcher run as `PYTHON -IS` (isolated mode: no PYTHON* variables, no
  user site, no current directory on the path; and no `site` at all), which puts the library
  directory first on sys.path and calls `cni.plugin.run` (which exits without the interpreter's
  finalization);
* `DIR/.NAME.d/DIGEST/cni/`: the `cni` package, compiled in advance (unchecked hash-based .pyc,
  so no timestamp is ever compared). DIGEST is a hash of the sources and the interpreter.

A zip application would be one file, but Python runs it through `runpy` (importlib.util,
contextlib, ...), which costs more than the whole plugin; a launcher plus a directory is
what `python -c pass` plus the plugin's own modules cost.

Run as `sluice install-cni [--dir /opt/cni/bin] [--name sluice-cni] [--python /usr/bin/python3]`
(a DaemonSet's init container does this with the node's /opt/cni/bin mounted and the node's own
Python named). An upgrade is atomic for the runtime: the new library directory is complete before
the launcher is replaced (rename), and the previous library is kept, so a plugin started just
before the switch still finds its modules; older ones are removed.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import os
import py_compile
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_DIR = Path("/opt/cni/bin")
DEFAULT_NAME = "sluice-cni"
PACKAGE = Path(__file__).resolve().parent
#: Not part of the plugin: this installer and the agent's typed layer over the wire format.
_NOT_INSTALLED = frozenset({"install.py", "protocol.py"})
LAUNCHER = """#!{python} -IS
# {name}: the Sluice CNI plugin, written by `sluice install-cni`; its code is in {lib}
import sys
sys.path.insert(0, {lib!r})
from cni.plugin import run
run()
"""


def _modules() -> list[Path]:
    return [m for m in sorted(PACKAGE.glob("*.py")) if m.name not in _NOT_INSTALLED]


def install_plugin(bin_dir: Path, python: str, name: str = DEFAULT_NAME) -> Path:
    """Install the plugin as `bin_dir/name`, started by `python -IS`; return the launcher's path.

    Idempotent: the same sources and interpreter reuse the same library directory. Raises
    OSError if `bin_dir` cannot be written, ValueError for a bad `python` or `name`.
    """
    if not os.path.isabs(python) or any(c.isspace() for c in python):
        raise ValueError(f"the plugin's Python must be an absolute path without spaces, not {python!r}")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid plugin file name {name!r}")
    modules = _modules()
    digest = hashlib.sha256(python.encode())
    for module in modules:
        digest.update(module.name.encode() + b"\0" + module.read_bytes() + b"\0")
    lib_root = bin_dir / f".{name}.d"
    lib = lib_root / digest.hexdigest()[:16]
    lib_root.mkdir(parents=True, exist_ok=True)
    if not (lib / "cni" / "plugin.py").exists():
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=lib_root))
        try:
            staging.chmod(0o755)
            (staging / "cni").mkdir()
            for module in modules:
                shutil.copy2(module, staging / "cni" / module.name)
            compiled = compileall.compile_dir(
                staging / "cni",
                quiet=2,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            if not compiled:
                raise OSError(f"compiling the plugin's modules in {staging} failed")
            if lib.exists():  # a half-written one from an interrupted install (no plugin.py)
                shutil.rmtree(lib)
            os.rename(staging, lib)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    launcher = bin_dir / name
    previous = _library_of(launcher, lib_root)
    _replace_file(launcher, LAUNCHER.format(python=python, name=name, lib=str(lib)), 0o755)
    _prune(lib_root, keep={lib, previous})
    return launcher


def _replace_file(path: Path, text: str, mode: int) -> None:
    """Write `text` to `path` atomically (temp file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _library_of(launcher: Path, lib_root: Path) -> Path | None:
    """The library directory that the installed `launcher` points at, or None (no launcher yet)."""
    try:
        text = launcher.read_text()
    except FileNotFoundError:
        return None
    return next((d for d in lib_root.iterdir() if d.is_dir() and repr(str(d)) in text), None)


def _prune(lib_root: Path, keep: set[Path | None]) -> None:
    """Remove the library directories not in `keep`: the new one, and the one the launcher named
    until now (a plugin started just before the switch may still import from it). Staging
    directories of an install in progress are left alone."""
    for old in lib_root.iterdir():
        if old.is_dir() and old not in keep and not old.name.startswith(".staging-"):
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    """`sluice install-cni`: write the plugin into a CNI bin directory; print its path."""
    parser = argparse.ArgumentParser(
        prog="sluice install-cni", description="Install the sluice-cni plugin executable."
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"CNI bin directory ({DEFAULT_DIR})")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"file name ({DEFAULT_NAME})")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="absolute path of the Python 3.11+ that runs the plugin on this node (default: this one)",
    )
    args = parser.parse_args(argv)
    try:
        path = install_plugin(args.dir, args.python, args.name)
    except (OSError, ValueError) as exc:
        print(f"sluice install-cni: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
