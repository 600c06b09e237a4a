"""The controller's own Kubernetes API client, for calls made outside kopf (TokenReview, the policy listing)."""

from __future__ import annotations

import os
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
