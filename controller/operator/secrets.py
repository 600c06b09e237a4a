"""Secrets for functionCalling stages (cluster mode): a stage's `secretRef`, read with the controller's credentials."""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

from controller.schemas.policy import SecretKeyRef

log = logging.getLogger(__name__)


class KubernetesSecrets:
    """Resolves a stage's `secretRef` from a Secret in the policy's namespace, cached briefly.

    Called from a worker thread by the functionCalling stage. The cache keeps
    an LLM call from costing an API round trip, and its TTL lets a rotated
    token take effect within a minute.
    """

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, str], tuple[float, str | None]] = {}
        self._api: Any = None

    def _core_api(self) -> Any:  # the kubernetes package is untyped
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.CoreV1Api()
        return self._api

    def __call__(self, namespace: str, ref: SecretKeyRef) -> str | None:
        key = (namespace, ref.name, ref.key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config import ConfigException

        try:
            secret = self._core_api().read_namespaced_secret(ref.name, namespace)
            raw = (secret.data or {}).get(ref.key)
            value = base64.b64decode(raw).decode().strip() if raw else None
        except (ApiException, ConfigException, ValueError) as exc:
            log.warning("cannot read secret %s/%s key %s: %s", namespace, ref.name, ref.key, exc)
            value = None
        with self._lock:
            self._cache[key] = (now + self._ttl, value)
        return value
