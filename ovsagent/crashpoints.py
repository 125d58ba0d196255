"""Named crash points: a test hook that SIGKILLs the agent process at one stage of ADD, of DEL, or of
restoring the pods of a lost br-int.

The crash-safety tests (tests/agent/test_crash_safety.py) start the real agent with
`SLUICE_TEST_CRASH_AT=<stage>`; when the agent reaches that stage it kills itself with SIGKILL (no
clean-up of any kind, exactly like the OOM killer or a node's `kill -9`), and the test restarts it
and checks that nothing leaked. Without the variable every crash point is a no-op call. The
variable is deliberately outside the `SLUICE_AGENT_*` config namespace: it is not configuration,
and `sluice check-config` never shows it. See docs/agent.md, "Crash points (test hook)".
"""

from __future__ import annotations

import enum
import logging
import os
import signal
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

CRASH_ENV = "SLUICE_TEST_CRASH_AT"


class Stage(enum.StrEnum):
    """The stages of ADD, DEL and restore, in the order they happen (the attachment kind decides
    whether the pod interface is configured before the OVS port exists, `veth`, or after,
    `internal`)."""

    ADD_IP_RESERVED = "add:ip-reserved"  # the IPAM record is durable, nothing plumbed yet
    ADD_PORT_CREATED = "add:port-created"  # the OVS port exists with its identity
    ADD_INTERFACE_CONFIGURED = "add:interface-configured"  # the pod interface has MAC, IP, routes
    ADD_PUBLISHED = "add:published"  # the Pod annotations are written
    ADD_FLOW_WAIT = "add:flow-wait"  # waiting for the pod's flows (readiness)
    DEL_PORT_REMOVED = "del:port-removed"  # the OVS port is gone, the interfaces are not
    DEL_INTERFACE_REMOVED = "del:interface-removed"  # host end and pod interface are gone
    DEL_IP_RELEASED = "del:ip-released"  # the IPAM record is gone, the annotations are not
    DEL_UNPUBLISHED = "del:unpublished"  # everything is released, the answer is not sent
    RESTORE_STARTED = "restore:started"  # br-int was created again, no lost pod restored yet
    RESTORE_POD_RESTORED = "restore:pod-restored"  # one lost pod has its port again


CrashHook = Callable[[Stage], None]


def no_crash(stage: Stage) -> None:
    """The crash hook of a production agent: does nothing."""


class CrashConfigError(ValueError):
    """SLUICE_TEST_CRASH_AT names no stage; the message lists the stages."""


def crash_hook_from_env(env: Mapping[str, str]) -> CrashHook:
    """Return the hook `env` asks for: `no_crash`, or one that SIGKILLs this process at the stage
    named by SLUICE_TEST_CRASH_AT. Raises CrashConfigError for an unknown stage name."""
    wanted = env.get(CRASH_ENV, "")
    if not wanted:
        return no_crash
    try:
        target = Stage(wanted)
    except ValueError:
        known = ", ".join(s.value for s in Stage)
        raise CrashConfigError(f"{CRASH_ENV}={wanted!r} names no crash point (known: {known})") from None
    log.warning("test hook armed: this agent kills itself with SIGKILL at %s", target.value)

    def crash(stage: Stage) -> None:
        if stage is target:
            log.critical("crash point %s reached: SIGKILL", stage.value)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return crash
