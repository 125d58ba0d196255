"""Leader election with a `coordination.k8s.io/v1` Lease (client-go's algorithm, in short).

Every replica tries to acquire or renew the Lease every `retry` seconds. The holder renews it;
another replica takes it over only once the holder has not renewed for `lease_duration_seconds`,
measured on this replica's own clock from when it last saw the record change (so clocks
need not agree). Writes carry the resourceVersion read, so two replicas racing for the Lease
cannot both win (one gets 409 Conflict). A leader that cannot renew for the lease duration
steps down. On a clean stop the leader releases the Lease (empty holder), so the other replica
takes over at once.

The generation id the leader claims the OpenFlow master role with is the Lease's
`leaseTransitions`, which every takeover increments: a newer leader's generation is always
higher, so a switch refuses a deposed leader's late master claim as stale.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Leadership:
    """Whether this replica leads, and the generation of the current leadership."""

    leader: bool
    generation: int


class LeaseApi(Protocol):
    """The Lease calls the elector makes (CoordinationV1Api's, with plain dict bodies)."""

    def read(self) -> Mapping[str, Any] | None:
        """Return the Lease object, or None if it does not exist."""
        ...

    def create(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create the Lease; raise ApiException 409 if it exists."""
        ...

    def replace(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Replace the Lease (body carries the resourceVersion); raise ApiException 409 on conflict."""
        ...


class KubeLeaseApi:
    """LeaseApi over the official client."""

    def __init__(self, api: Any, namespace: str, name: str) -> None:
        self._api = k8s_client.CoordinationV1Api(api)
        self._namespace = namespace
        self._name = name

    def _json(self, response: Any) -> Mapping[str, Any]:
        try:
            data: Mapping[str, Any] = json.loads(response.data)
        finally:
            response.release_conn()
        return data

    def read(self) -> Mapping[str, Any] | None:
        """Return the Lease, or None on 404."""
        try:
            return self._json(
                self._api.read_namespaced_lease(self._name, self._namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create the Lease."""
        lease: Any = dict(body)  # the client accepts a plain dict for a V1Lease
        return self._json(self._api.create_namespaced_lease(self._namespace, lease, _preload_content=False))

    def replace(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Replace the Lease."""
        lease: Any = dict(body)
        return self._json(
            self._api.replace_namespaced_lease(self._name, self._namespace, lease, _preload_content=False)
        )


def _micro_time(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Runs the election on a daemon thread and reports every change of Leadership."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float,
        renew_period: float,
        on_change: Callable[[Leadership], None],
        retry_period: float | None = None,
    ) -> None:
        self._api = api
        self._name = name
        self._namespace = namespace
        self.identity = identity
        self._duration = lease_duration
        self._renew = renew_period
        self._retry = retry_period if retry_period is not None else min(2.0, renew_period)
        self._on_change = on_change
        self._stopped = threading.Event()
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._last_renewal = 0.0
        self.leadership: Leadership | None = None  # None until the first round decides
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        """Start campaigning."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop; a leader releases the Lease so another replica takes over at once."""
        self._stopped.set()
        self._thread.join(timeout)
        if self.leader:
            try:
                self._release()
            except Exception as exc:
                log.warning("could not release the Lease: %s", exc)
            self._set(Leadership(False, self.generation))

    @property
    def leader(self) -> bool:
        """Return True while this replica holds the Lease."""
        return self.leadership is not None and self.leadership.leader

    @property
    def generation(self) -> int:
        """Return the generation of the current leadership (0 before the first round)."""
        return self.leadership.generation if self.leadership is not None else 0

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as exc:
                log.warning("lease %s/%s: %s", self._namespace, self._name, _short(exc))
                if self.leader and time.monotonic() - self._last_renewal > self._duration:
                    log.warning("could not renew the Lease for %.0fs: stepping down", self._duration)
                    self._set(Leadership(False, self.generation))
            self._stopped.wait(self._renew if self.leader else self._retry)

    def _set(self, leadership: Leadership) -> None:
        if leadership != self.leadership:
            self.leadership = leadership
            log.info(
                "%s is %s (generation %d)",
                self.identity, "the leader" if leadership.leader else "a follower", leadership.generation,
            )  # fmt: skip
            self._on_change(leadership)

    def _body(
        self, lease: Mapping[str, Any] | None, transitions: int, holder: str, duration: float
    ) -> dict[str, Any]:
        now = _micro_time(time.time())
        meta: dict[str, Any] = {"name": self._name, "namespace": self._namespace}
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, int(duration)),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if lease is not None:
            meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
            old = lease.get("spec") or {}
            same_holder = old.get("holderIdentity") == holder
            spec["acquireTime"] = old.get("acquireTime") if same_holder and old.get("acquireTime") else now
        else:
            spec["acquireTime"] = now
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def try_acquire_or_renew(self) -> Leadership | None:
        """One round: create, renew or take over the Lease if we may; return the Leadership."""
        now = time.monotonic()
        lease = self._api.read()
        if lease is None:
            try:
                self._api.create(self._body(None, 0, self.identity, self._duration))
            except ApiException as exc:
                if exc.status == 409:
                    return self.leadership  # another replica created it first
                raise
            self._last_renewal = now
            self._set(Leadership(True, 0))
            return self.leadership
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        transitions = int(spec.get("leaseTransitions") or 0)
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        if holder == self.identity:
            body = self._body(lease, transitions, self.identity, self._duration)
        elif not holder or now - self._observed_at > duration:
            body = self._body(lease, transitions + 1, self.identity, self._duration)
            log.info("taking over the Lease from %r", holder or "(released)")
        else:
            self._set(Leadership(False, transitions))
            return self.leadership
        try:
            self._api.replace(body)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote it since we read it: not ours this round
                return self.leadership
            raise
        self._last_renewal = now
        self._set(Leadership(True, int(body["spec"]["leaseTransitions"])))
        return self.leadership

    def _release(self) -> None:
        lease = self._api.read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        transitions = int((lease.get("spec") or {}).get("leaseTransitions") or 0)
        self._api.replace(self._body(lease, transitions, "", 1))
        log.info("released the Lease")


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:200]
