"""Cluster-mode readiness: the policy index is complete once the operator has handled every policy there is.

kopf's ready flag only says its startup activities ran and its watches are
starting; the initial listing is then handled object by object, in the
background. A controller that took alerts from that moment would record some
as "no policy matches" although a policy for them exists (after a pod restart,
say). So, once kopf has started, `IndexSync.run` LISTs the RemediationPolicies
itself (with the controller's own credentials, in the watched namespaces or
cluster-wide) and the process becomes ready only when the operator's handler
has seen every one of them: indexed it, refused it as invalid, or handled its
deletion. The handler reports each object it handled with `IndexSync.seen`.

A policy is identified by ``namespace/name`` and its uid, so a policy deleted
and created again under the same name counts only once its new incarnation is
handled. A policy deleted meanwhile blocks nothing: its DELETED event counts
as seen, and a re-list (every `relist_s` until complete) no longer has it. A
LIST that fails (apiserver down, RBAC) keeps the process not ready with the
error as the reason: never ready on an error.

Readiness is one-shot: once complete, later changes are the operator's normal
business (an apiserver outage afterwards does not empty the index, so it does
not make the process unready either).

kopf is imported only to match namespace patterns (globs), when they are used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from controller.operator.kube import LazyApi
from controller.schemas.crd import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

#: (``namespace/name``, uid) of one RemediationPolicy.
PolicyId = tuple[str, str]

#: Names shown in the /readyz reason when policies are still waited for (the count is always shown).
MAX_NAMES = 5


class PolicyListError(RuntimeError):
    """The RemediationPolicies cannot be listed; the message says why (for /readyz and the log)."""


def is_namespace_pattern(namespace: str) -> bool:
    """A kopf namespace pattern (glob or negation) rather than one exact namespace name."""
    return any(ch in namespace for ch in "*?[!")


class KubernetesPolicyLister:
    """LISTs RemediationPolicies with the controller's own credentials (in-cluster ServiceAccount, else $KUBECONFIG).

    The namespaces as the operator watches them: none means cluster-wide;
    exact names are listed one by one; kopf patterns (globs) list
    cluster-wide and keep what kopf would watch. Only ``list`` on
    remediationpolicies is needed, which deploy/base/rbac.yaml grants.
    Pages of `page_size`; its own API client, built at the first call (a
    failure to build it is retried at the next).
    """

    def __init__(
        self,
        namespaces: Sequence[str] = (),
        *,
        page_size: int = 500,
        timeout_s: float = 10.0,
        kubeconfig: str | None = None,
    ) -> None:
        self._namespaces = tuple(namespaces)
        self._page_size = page_size
        self._timeout = timeout_s
        self._api = LazyApi("CustomObjectsApi", kubeconfig)

    def __call__(self) -> set[PolicyId]:
        """Every policy as (``namespace/name``, uid); raises PolicyListError."""
        import urllib3
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config import ConfigException

        try:
            api = self._api.get()
            if self._namespaces and not any(is_namespace_pattern(ns) for ns in self._namespaces):
                found: set[PolicyId] = set()
                for namespace in self._namespaces:
                    found |= self._list(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
                return found
            found = self._list(api.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        except ApiException as exc:
            raise PolicyListError(_api_error(exc)) from exc
        except ConfigException as exc:
            raise PolicyListError(f"no credentials for the apiserver: {exc}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PolicyListError(f"the apiserver cannot be reached: {type(exc).__name__}: {str(exc)[:300]}") from exc
        if self._namespaces:
            return {pid for pid in found if _watched(pid[0].partition("/")[0], self._namespaces)}
        return found

    def _list(self, call: Callable[..., Any], *args: str) -> set[PolicyId]:
        found: set[PolicyId] = set()
        token: str | None = None
        while True:
            page = call(
                *args, limit=self._page_size, _continue=token, _request_timeout=(min(5.0, self._timeout), self._timeout)
            )
            for item in page.get("items") or ():
                meta = item.get("metadata") or {}
                found.add((f"{meta.get('namespace', '')}/{meta.get('name', '')}", meta.get("uid") or ""))
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return found


def _watched(namespace: str, patterns: Sequence[str]) -> bool:
    from kopf._cogs.structs.references import match_namespace  # the operator's own rule, so the two agree

    return any(match_namespace(namespace, pattern) for pattern in patterns)


def _api_error(exc: Any) -> str:
    """An ApiException as one line: status, reason, the apiserver's message, and a hint for the usual causes."""
    import json

    message = ""
    try:
        message = str(json.loads(exc.body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        pass
    text = f"{exc.status} {exc.reason}" + (f": {message[:300]}" if message else "")
    if exc.status == 403:
        text += " (the controller's RBAC must allow list on remediationpolicies, as deploy/base/rbac.yaml does)"
    elif exc.status == 404:
        text += " (is the RemediationPolicy CRD installed?)"
    return text


class IndexSync:
    """Whether the operator has handled every RemediationPolicy the apiserver lists; see the module docstring."""

    def __init__(
        self, lister: Callable[[], Collection[PolicyId]], *, relist_s: float = 3.0, poll_s: float = 0.1
    ) -> None:
        self._lister = lister
        self.relist_s = relist_s
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._seen: set[PolicyId] | None = set()  # None once complete: nothing more to remember
        self._problem: str | None = "the operator has not started watching RemediationPolicies yet"

    @property
    def complete(self) -> bool:
        return self._seen is None

    def problem(self) -> str | None:
        """Why the index is not known to be complete yet (a /readyz reason), or None once it is."""
        return self._problem

    def seen(self, key: str, uid: str) -> None:
        """The operator's handler is done with this policy (indexed, refused as invalid, or removed)."""
        with self._lock:
            if self._seen is not None:
                self._seen.add((key, uid))

    def missing(self, listed: Collection[PolicyId]) -> list[str]:
        """The listed policies the handler has not seen yet, by ``namespace/name``."""
        with self._lock:
            seen = self._seen
            return [] if seen is None else sorted(key for key, uid in {*listed} - seen)

    async def run(self, started: asyncio.Event) -> None:
        """After `started` (kopf's ready flag): list, wait for the handler, re-list, until complete."""
        await started.wait()
        began = time.monotonic()
        self._set_problem("listing RemediationPolicies to check that the policy index is complete")
        while True:
            try:
                listed = await asyncio.to_thread(self._lister)
            except PolicyListError as exc:
                self._set_problem(
                    f"cannot list RemediationPolicies to check that the policy index is complete: {exc}", warn=True
                )
            except Exception as exc:  # whatever it is, it must keep the process not ready, never kill it
                log.exception("listing RemediationPolicies failed")
                self._set_problem(f"cannot list RemediationPolicies: {type(exc).__name__}: {str(exc)[:300]}")
            else:
                if await self._wait_for_handler(listed):
                    with self._lock:
                        self._seen = None
                    self._problem = None
                    log.info(
                        "policy index complete: every RemediationPolicy listed has been handled",
                        extra={"policies": len(listed), "seconds": round(time.monotonic() - began, 2)},
                    )
                    return
                continue  # re-list at once: a policy deleted meanwhile is no longer waited for
            await asyncio.sleep(self.relist_s)

    async def _wait_for_handler(self, listed: Collection[PolicyId]) -> bool:
        """True once every listed policy was seen; False after `relist_s` with some still missing."""
        deadline = time.monotonic() + self.relist_s
        while True:
            missing = self.missing(listed)
            if not missing:
                return True
            names = ", ".join(missing[:MAX_NAMES]) + (
                f" and {len(missing) - MAX_NAMES} more" if len(missing) > MAX_NAMES else ""
            )
            self._set_problem(
                f"the policy index is incomplete: the operator has not yet handled {len(missing)} of the "
                f"{len(listed)} RemediationPolicies listed ({names})"
            )
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll_s)

    def _set_problem(self, problem: str, *, warn: bool = False) -> None:
        if warn and problem != self._problem:
            log.warning("not ready: %s", problem)  # once per distinct failure, not every re-list
        self._problem = problem
