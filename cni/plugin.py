"""The `sluice-cni` executable: answers VERSION itself and hands every other command to cni.invocation.

The runtime runs it with CNI_* environment variables and the network config on stdin. VERSION is
answered here; ADD, DEL, CHECK, STATUS and GC are checked against the spec and forwarded to the
agent's unix socket by `cni.invocation`. stdout carries only the result or the CNI error JSON; logs
go to stderr.

Start-up cost shapes this module: it is kept small and imports only what VERSION needs (`posix`,
`sys` and `time`, which the interpreter has loaded anyway, plus `select` and the C JSON accelerator
`_json` through `cni.fastjson`), so VERSION costs about what `python -c pass` costs. Forwarded
commands import the rest lazily, and nothing heavy either: no `json`, `socket`, `re` or `enum`.
None of the plugin's modules imports `os` or `__future__`: started as installed (`python -IS`,
no `site`), the interpreter has loaded neither, and each costs about 1 ms of CPU per call, in a
start-up of about 10 ms.
"""

# No `from __future__ import annotations`: on the VERSION path even that import is measurable.

import posix
import sys
import time

from cni import fastjson
from cni.stdio import StdinError, read_stdin, write_stdout
from cni.versions import CURRENT_VERSION, SUPPORTED_VERSIONS

#: VERSION only reads stdin to echo the requested cniVersion; without it, it answers anyway.
VERSION_STDIN_TIMEOUT_SECONDS = 2.0


def _requested_version(data: bytes) -> str | None:
    """Return the cniVersion a VERSION caller sent on stdin, or None when it sent none."""
    try:
        text = data.decode("utf-8")
        if not text.strip():
            return None
        document = fastjson.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(document, dict):
        version = document.get("cniVersion")
        if isinstance(version, str) and version:
            return version
    return None


def _version() -> int:
    """Answer VERSION. The spec says: echo the input's cniVersion (libcni's skel answers its own).

    We echo the input's cniVersion when there is one (whether or not we support it: the list
    tells the caller) and answer with CURRENT_VERSION otherwise. Stdin that is empty, not JSON,
    or never closed does not fail VERSION.
    """
    try:
        data = read_stdin(VERSION_STDIN_TIMEOUT_SECONDS, skip_tty=True)
    except StdinError:
        data = b""
    version = _requested_version(data) or CURRENT_VERSION
    supported = ",".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    write_stdout(f'{{"cniVersion":{fastjson.dumps(version)},"supportedVersions":[{supported}]}}')
    return 0


def environ() -> dict[str, str]:
    """The environment, decoded as `os.environ` decodes it (the plugin does not import `os`)."""
    encoding = sys.getfilesystemencoding()
    return {
        key.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
        for key, value in posix.environ.items()
    }


def main() -> int:
    """Run one CNI call from the environment and stdin; print its result or error; return the exit code."""
    started = time.monotonic()
    try:
        if posix.environ.get(b"CNI_COMMAND") == b"VERSION":
            try:
                return _version()
            except BaseException as exc:
                from cni.invocation import Invocation

                return Invocation(environ(), started).fail(exc)
        from cni.invocation import Invocation

        return Invocation(environ(), started).run()
    except BaseException:  # the plugin itself is broken (e.g. a failed import): still a CNI error
        write_stdout(
            f'{{"cniVersion":"{CURRENT_VERSION}","code":999,'
            '"msg":"internal error in sluice-cni: the plugin failed to start","details":""}'
        )
        return 1


def run() -> None:
    """Run `main` and end the process with its exit code, without the interpreter's finalization.

    Finalization (module teardown, a last garbage collection) is about 2 ms of a 12 ms call, on
    every pod's ADD. Nothing needs it: `main` has written and flushed the answer, logs end with a
    newline, and the plugin holds no resource that outlives the process anyway.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib would be one more import at every start)
            stream.flush()
        except (OSError, ValueError):  # the reader went away: nothing useful left to do
            pass
    posix._exit(code)


if __name__ == "__main__":
    run()
