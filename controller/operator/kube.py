"""The controller's own Kubernetes API client, for calls made outside kopf (TokenReview, the policy listing)."""

from __future__ import annotations

import os
import threading
from typing import Any


def api_client(kubeconfig: str | None = None) -> Any:
    """An ApiClient with the in-cluster ServiceAccount, else `kubeconfig` or $KUBECONFIG; raises ConfigException.

    Its own configuration, never the kubernetes package's global default, which other code may have set.
    Returned untyped: the kubernetes package has no type hints.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        # $KUBECONFIG as it is now: the kubernetes package captured it at import.
        path = kubeconfig or os.environ.get("KUBECONFIG") or None
        config.load_kube_config(config_file=path, client_configuration=configuration)
    # One quick retry (a pooled connection the apiserver closed), not urllib3's three.
    configuration.retries = 1
    return client.ApiClient(configuration)


class LazyApi:
    """One typed API of the kubernetes client (e.g. "CoreV1Api"), built at first use from `api_client`.

    Thread-safe (callers run in worker threads); a failure to build (no kubeconfig yet) raises and is
    retried at the next use.
    """

    def __init__(self, api: str, kubeconfig: str | None = None) -> None:
        self._api_name = api
        self._kubeconfig = kubeconfig
        self._lock = threading.Lock()
        self._api: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._api is None:
                from kubernetes import client

                self._api = getattr(client, self._api_name)(api_client(self._kubeconfig))
            return self._api
