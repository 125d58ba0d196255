"""The lab's Kubernetes API-server stand-in: real wire protocol, in-memory store, optional persistence.

Public entry points: `ApiServer` (in-process server), `ServerOptions` (tuning), `kubeconfig` /
`kubeconfig_yaml` (client configuration for a running server) and `api_client` (a configured
official `kubernetes.client.ApiClient`). `sluice lab apiserver` runs it as its own process.
"""

from __future__ import annotations

from lab.apiserver.kubeconfig import api_client, kubeconfig, kubeconfig_yaml
from lab.apiserver.server import ApiServer, ServerOptions

__all__ = ["ApiServer", "ServerOptions", "api_client", "kubeconfig", "kubeconfig_yaml"]
