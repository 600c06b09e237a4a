"""Knative's sender identity on `/events`: service-account tokens, checked with the TokenReview API.

With Knative Eventing's `authentication-oidc` feature enabled, the broker's
filter delivers each event a Trigger lets through with `Authorization: Bearer
<JWT>`: a token of the Trigger's own ServiceAccount (named in the Trigger's
`status.auth.serviceAccountName`) requested for the subscriber's audience
(`spec.subscriber.audience`). Such a token cannot be the static webhook token,
so `/events` accepts either (docs/api.md, "Authentication"):

* A token that is not shaped like a JWT is refused without asking anyone.
* Otherwise the apiserver is asked (TokenReview, authentication.k8s.io/v1,
  `spec.audiences=[audience]`, with the controller's own credentials): the
  token must be authenticated, valid for the audience, and its username one
  of the allowed subjects.
* An accepted token is remembered for at most `ttl_s` (60 s) and never past
  its own `exp`, keyed by its SHA-256, at most `max_entries` of them; requests
  that carry the same token at the same time share one review. Errors are
  never remembered.
* A refused token is remembered too, for `negative_ttl_s` (10 s), keyed by its
  SHA-256 (at most `max_entries`): any JWT-shaped string costs a TokenReview,
  and without this one unauthenticated caller could make the apiserver review
  the same garbage at the request rate (issue #13.6).
* At most `max_pending` reviews are in flight; beyond that a new token gets
  `ReviewUnavailable` (503 + Retry-After) without asking anyone.
* Refusals are logged at WARNING at most once per `log_interval_s` (10 s),
  with the number suppressed meanwhile; the counter metric counts them all.
* When the apiserver cannot answer (unreachable, 5xx, or 403 because the
  ClusterRole lacks `create tokenreviews`) `ReviewUnavailable` is raised and
  the API answers 503 + Retry-After, which Knative retries; it is never taken
  for a refusal (401, which Knative does not retry) nor for an acceptance.

Tokens are never logged: only the username and the apiserver's reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from controller.operator.kube import LazyApi

log = logging.getLogger(__name__)

# header.payload.signature, base64url without padding (RFC 7515 compact serialization).
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
#: Longer bearer values are refused unread (service-account tokens are about 1 KiB).
MAX_TOKEN_LENGTH = 16 * 1024


class ReviewUnavailable(RuntimeError):
    """The apiserver could not be asked, or did not answer: the token is neither accepted nor refused."""


@dataclass(frozen=True)
class Review:
    """What the apiserver said about one token (TokenReview `status`)."""

    authenticated: bool
    username: str | None = None
    audiences: tuple[str, ...] = ()
    error: str | None = None


#: `(token, audience) -> Review`, blocking (run in a worker thread); raises ReviewUnavailable.
Reviewer = Callable[[str, str], Review]


class KubernetesTokenReviewer:
    """Creates TokenReviews with the controller's own credentials: the in-cluster ServiceAccount, else $KUBECONFIG.

    Its own API client (not the kubernetes package's global default), built at
    the first review; a failure to build it is retried at the next.
    """

    def __init__(self, *, kubeconfig: str | None = None, timeout_s: float = 5.0) -> None:
        self._timeout = timeout_s
        self._api = LazyApi("AuthenticationV1Api", kubeconfig)

    def __call__(self, token: str, audience: str) -> Review:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config import ConfigException

        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[audience]))
        try:
            answer = self._api.get().create_token_review(
                body, _request_timeout=(min(2.0, self._timeout), self._timeout)
            )
        except ApiException as exc:  # its text holds the response body: name only the status
            raise ReviewUnavailable(f"the apiserver answered {exc.status} {exc.reason}") from None
        except ConfigException as exc:
            raise ReviewUnavailable(f"no Kubernetes credentials ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - urllib3 and socket errors: the apiserver did not answer
            raise ReviewUnavailable(f"the apiserver did not answer ({type(exc).__name__}: {str(exc)[:200]})") from None
        status = answer.status
        if status is None:
            raise ReviewUnavailable("the apiserver answered a TokenReview without a status")
        return Review(
            authenticated=bool(status.authenticated),
            username=status.user.username if status.user is not None else None,
            audiences=tuple(status.audiences or ()),
            error=status.error,
        )


def _expires_in(token: str, now: float) -> float | None:
    """Seconds until the token's `exp` (read after the apiserver verified it), None when it has none."""
    try:
        segment = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (ValueError, binascii.Error, IndexError, UnicodeDecodeError):
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp) - now


class EventsAuthenticator:
    """Accepts Knative's OIDC tokens for `audience` from `allowed_subjects` (see the module docstring)."""

    def __init__(
        self,
        audience: str,
        allowed_subjects: Iterable[str],
        reviewer: Reviewer,
        *,
        ttl_s: float = 60.0,
        negative_ttl_s: float = 10.0,
        max_entries: int = 1024,
        max_pending: int = 16,
        log_interval_s: float = 10.0,
        workers: int = 4,
        observe: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self.allowed_subjects = frozenset(allowed_subjects)
        #: Asks the apiserver (`KubernetesTokenReviewer` in the controller); tests may wrap it.
        self.reviewer = reviewer
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._max_entries = max_entries
        self._max_pending = max_pending
        self._log_interval = log_interval_s
        self._last_log = float("-inf")
        self._suppressed = 0
        # sha256(token) -> monotonic time until which it counts as refused; oldest first.
        self._refused: OrderedDict[str, float] = OrderedDict()
        self._observe = observe or (lambda result: None)
        self._clock = clock
        self._wall_clock = wall_clock
        # sha256(token) -> monotonic time until which it counts as accepted; oldest first.
        self._accepted: OrderedDict[str, float] = OrderedDict()
        self._pending: dict[str, asyncio.Future[bool]] = {}
        # Its own threads: a slow apiserver must not occupy the loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="token-review")

    async def authenticate(self, token: str) -> bool:
        """True for an accepted token, False for a refused one; ReviewUnavailable when the apiserver cannot tell."""
        if len(token) > MAX_TOKEN_LENGTH or not _JWT.fullmatch(token):
            return False
        key = hashlib.sha256(token.encode()).hexdigest()
        if self._remembered(key):
            return True
        if self._refused_recently(key):
            self._observe("rejected_cached")
            return False
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self._pending) >= self._max_pending:
            self._observe("busy")
            raise ReviewUnavailable(f"{self._max_pending} token reviews already in flight")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # Retrieve the outcome even when nobody else waited for it (no "exception never retrieved").
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending[key] = future
        try:
            accepted = await self._review(token, key)
        except ReviewUnavailable as exc:
            future.set_exception(ReviewUnavailable(str(exc)))
            raise
        except BaseException:
            future.set_exception(ReviewUnavailable("the review was interrupted"))
            raise
        else:
            future.set_result(accepted)
            return accepted
        finally:
            del self._pending[key]

    def _remembered(self, key: str) -> bool:
        until = self._accepted.get(key)
        if until is None:
            return False
        if until <= self._clock():
            del self._accepted[key]
            return False
        self._accepted.move_to_end(key)
        return True

    def _refused_recently(self, key: str) -> bool:
        until = self._refused.get(key)
        if until is None:
            return False
        if until <= self._clock():
            del self._refused[key]
            return False
        return True

    def _remember_refusal(self, key: str) -> None:
        self._refused[key] = self._clock() + self._negative_ttl
        self._refused.move_to_end(key)
        while len(self._refused) > self._max_entries:
            self._refused.popitem(last=False)

    def _warn(self, message: str, *args: object) -> None:
        """WARNING at most once per log interval; the lines left out are counted in the next one."""
        now = self._clock()
        if now - self._last_log < self._log_interval:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} more refusals not logged in the last {self._log_interval:g} s)"
        self._last_log, self._suppressed = now, 0
        log.warning(message, *args)

    def _remember(self, key: str, token: str) -> None:
        ttl = self._ttl
        left = _expires_in(token, self._wall_clock())
        if left is not None:
            ttl = min(ttl, left)
        if ttl <= 0:
            return
        self._accepted[key] = self._clock() + ttl
        self._accepted.move_to_end(key)
        while len(self._accepted) > self._max_entries:
            self._accepted.popitem(last=False)

    async def _review(self, token: str, key: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            review = await loop.run_in_executor(self._executor, self.reviewer, token, self.audience)
        except ReviewUnavailable as exc:
            self._observe("error")
            log.error("cannot check a /events token with the TokenReview API, answering 503: %s", exc)
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is not an answer either; never an acceptance
            self._observe("error")
            log.error("TokenReview failed (%s), answering 503", type(exc).__name__)
            raise ReviewUnavailable(f"TokenReview failed ({type(exc).__name__})") from None
        if not review.authenticated:
            self._observe("rejected")
            self._remember_refusal(key)
            self._warn("/events token refused by the apiserver: %s", (review.error or "not authenticated")[:300])
            return False
        if self.audience not in review.audiences:
            self._observe("rejected")
            self._remember_refusal(key)
            self._warn(
                "/events token of %s refused: not issued for the audience %r",
                (review.username or "?")[:300],
                self.audience,
            )
            return False
        if review.username not in self.allowed_subjects:
            self._observe("rejected")
            self._remember_refusal(key)
            self._warn(
                "/events token of %s refused: not one of the allowed subjects (--events-allowed-subject)",
                (review.username or "?")[:300],
            )
            return False
        self._observe("accepted")
        self._remember(key, token)
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
