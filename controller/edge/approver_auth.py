"""Who may answer an approval request: an approver credential of its own, never the webhook token.

Whoever holds the webhook token (Alertmanager, the Knative broker, agents
that ask `/reason`) sends alerts; it must not also be able to release the
remediations a policy holds for a human. So `/approvals/{id}` accepts only:

* standalone: the approver token (`--approver-token-file`, or
  `TRM_SRE_APPROVER_TOKEN`), compared in constant time; the recorded actor is
  `approver-token`;
* cluster mode: a Kubernetes identity. The bearer token is checked with a
  TokenReview (the apiserver's own audiences), then a SubjectAccessReview asks
  whether that user may `approve` `remediationpolicies`
  (remediation.homelab.io) in the policy's namespace, named after the policy,
  as Kubernetes does for CertificateSigningRequests (verb `approve` on
  `signers`). The recorded actor is the reviewed username.

The body's `actor` is never the record: it is the authenticated identity.
The webhook token is answered 403 (it is a credential, just not this one); a
missing or unknown credential 401; an authenticated user without the RBAC
permission 403. An apiserver that cannot answer is 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.edge.config import BearerToken
from controller.edge.knative_auth import MAX_TOKEN_LENGTH, ReviewUnavailable
from controller.operator.kube import LazyApi
from controller.schemas.crd import GROUP, PLURAL

log = logging.getLogger(__name__)

APPROVER_TOKEN_ACTOR = "approver-token"


@dataclass(frozen=True)
class Identity:
    """An authenticated approver: the username recorded as the actor, and what a SubjectAccessReview needs."""

    username: str
    uid: str | None = None
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


class ApproverAuth(Protocol):
    """Authenticate a bearer token, then authorise that identity for one policy's approvals."""

    async def authenticate(self, token: str) -> Identity | None: ...

    async def authorize(self, identity: Identity, namespace: str, name: str) -> bool: ...


class NoApprover:
    """No approver credential configured: nobody can approve (the safe default)."""

    async def authenticate(self, token: str) -> Identity | None:
        return None

    async def authorize(self, identity: Identity, namespace: str, name: str) -> bool:
        return False


class StaticApprover:
    """Standalone: one approver token, from the environment or a file re-read when it changes."""

    def __init__(self, token: BearerToken) -> None:
        self._token = token

    @property
    def configured(self) -> bool:
        return self._token.configured

    async def authenticate(self, token: str) -> Identity | None:
        return Identity(APPROVER_TOKEN_ACTOR) if self._token.check(token) else None

    async def authorize(self, identity: Identity, namespace: str, name: str) -> bool:
        return identity.username == APPROVER_TOKEN_ACTOR


#: `token -> Identity | None` and `(identity, namespace, name) -> bool`, both blocking; raise ReviewUnavailable.
TokenReviewFn = Callable[[str], "Identity | None"]
AccessReviewFn = Callable[[Identity, str, str], bool]


class KubernetesApproverReviews:
    """TokenReview + SubjectAccessReview with the controller's own credentials (blocking calls)."""

    def __init__(self, *, kubeconfig: str | None = None, timeout_s: float = 5.0) -> None:
        self._timeout = timeout_s
        self._authn = LazyApi("AuthenticationV1Api", kubeconfig)
        self._authz = LazyApi("AuthorizationV1Api", kubeconfig)

    def review_token(self, token: str) -> Identity | None:
        from kubernetes.client import V1TokenReview, V1TokenReviewSpec
        from kubernetes.client.exceptions import ApiException

        try:
            result = self._authn.get().create_token_review(
                V1TokenReview(spec=V1TokenReviewSpec(token=token)), _request_timeout=self._timeout
            )
        except ApiException as exc:
            raise ReviewUnavailable(f"TokenReview answered {exc.status}") from None
        except Exception as exc:  # noqa: BLE001 - unreachable, TLS, a bad kubeconfig: not an answer
            raise ReviewUnavailable(f"TokenReview failed ({type(exc).__name__})") from None
        status = result.status
        if status is None or not status.authenticated or status.user is None or not status.user.username:
            return None
        user = status.user
        return Identity(
            username=str(user.username),
            uid=user.uid,
            groups=tuple(user.groups or ()),
            extra={str(k): [str(x) for x in v] for k, v in (user.extra or {}).items()},
        )

    def review_access(self, identity: Identity, namespace: str, name: str) -> bool:
        from kubernetes.client import V1ResourceAttributes, V1SubjectAccessReview, V1SubjectAccessReviewSpec
        from kubernetes.client.exceptions import ApiException

        spec = V1SubjectAccessReviewSpec(
            user=identity.username,
            uid=identity.uid,
            groups=list(identity.groups),
            extra=identity.extra or None,
            resource_attributes=V1ResourceAttributes(
                group=GROUP, resource=PLURAL, verb="approve", namespace=namespace, name=name
            ),
        )
        try:
            result = self._authz.get().create_subject_access_review(
                V1SubjectAccessReview(spec=spec), _request_timeout=self._timeout
            )
        except ApiException as exc:
            raise ReviewUnavailable(f"SubjectAccessReview answered {exc.status}") from None
        except Exception as exc:  # noqa: BLE001
            raise ReviewUnavailable(f"SubjectAccessReview failed ({type(exc).__name__})") from None
        return bool(result.status is not None and result.status.allowed)


class KubernetesApprover:
    """Cluster mode: the approver is a Kubernetes user with `approve` on the policy (see the module docstring)."""

    def __init__(self, review_token: TokenReviewFn, review_access: AccessReviewFn, workers: int = 4) -> None:
        self._review_token = review_token
        self._review_access = review_access
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="approver-review")

    @classmethod
    def in_cluster(cls) -> KubernetesApprover:
        reviews = KubernetesApproverReviews()
        return cls(reviews.review_token, reviews.review_access)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except ReviewUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - never an acceptance
            raise ReviewUnavailable(f"review failed ({type(exc).__name__})") from None

    async def authenticate(self, token: str) -> Identity | None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        return await self._call(self._review_token, token)

    async def authorize(self, identity: Identity, namespace: str, name: str) -> bool:
        allowed = bool(await self._call(self._review_access, identity, namespace, name))
        if not allowed:
            log.warning(
                "approval refused: %s may not approve remediationpolicies in %s",
                identity.username[:200],
                namespace,
            )
        return allowed

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
