"""Client configuration for a running stand-in: a kubeconfig document, and a configured official
`kubernetes.client.ApiClient` (imported lazily: the server itself does not need the client)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def kubeconfig(
    server_url: str,
    *,
    ca_pem: bytes | None = None,
    token: str | None = None,
    name: str = "sluice-lab",
    namespace: str = "default",
) -> dict[str, Any]:
    """Return a kubeconfig (as a dict) with one cluster, user and context named `name`.

    The CA is embedded (certificate-authority-data), so the file works from any directory.
    """
    cluster: dict[str, Any] = {"server": server_url}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    user: dict[str, Any] = {"token": token} if token else {}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
    }


def kubeconfig_yaml(
    server_url: str,
    *,
    ca_pem: bytes | None = None,
    token: str | None = None,
    name: str = "sluice-lab",
    namespace: str = "default",
) -> str:
    """Return the kubeconfig of `kubeconfig()` as YAML text."""
    doc = kubeconfig(server_url, ca_pem=ca_pem, token=token, name=name, namespace=namespace)
    return yaml.safe_dump(doc, sort_keys=False)


def api_client(server_url: str, *, ca_file: str | Path | None = None, token: str | None = None) -> Any:
    """Return a `kubernetes.client.ApiClient` for the server (TLS verified against `ca_file`)."""
    from kubernetes import client  # heavy: imported only by callers that want a client

    config = client.Configuration()
    config.host = server_url
    if ca_file is not None:
        config.ssl_ca_cert = str(ca_file)
        config.verify_ssl = True
    if token:
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(config)
