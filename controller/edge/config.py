"""What the edge is configured with: request limits, the bearer token, and Knative's sender identity.

These are sections of the one settings model (`controller.settings.Settings`);
they live here, beside the code that enforces them, so the edge never imports
the wiring layer above it.
"""

from __future__ import annotations

import hmac
import logging
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

log = logging.getLogger(__name__)

TOKEN_ENV = "TRM_SRE_WEBHOOK_TOKEN"
APPROVER_TOKEN_ENV = "TRM_SRE_APPROVER_TOKEN"

# The username the apiserver gives a ServiceAccount token: system:serviceaccount:<namespace>:<name>.
_SERVICE_ACCOUNT_USER = re.compile(
    r"system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?"
)


class Limits(BaseModel):
    """Bounds on what one request may carry; each exists so one sender cannot exhaust the process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Largest request body in bytes. Alertmanager groups rarely exceed a few hundred KiB;
    #: 4 MiB leaves room for 1,000 alerts with long annotations.
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest request body in bytes; larger ones get 413"
    )
    #: Alerts per webhook payload (Alertmanager's `max_alerts` can cap this on the sender's side).
    max_alerts: int = Field(1_000, ge=1, description="alerts per webhook payload")
    #: Labels per alert, and annotations per alert.
    max_labels: int = Field(64, ge=1, description="labels per alert, and annotations per alert")
    #: Characters in a label or annotation name.
    max_name_length: int = Field(256, ge=1, description="characters in a label or annotation name")
    #: Characters in a label value (label values are identifiers, not prose).
    max_label_value_length: int = Field(2_048, ge=1, description="characters in a label value")
    #: Characters in an annotation value (descriptions and runbook text can be long).
    max_annotation_value_length: int = Field(16_384, ge=1, description="characters in an annotation value")
    #: Requests handled at once on the POST endpoints; more wait up to `queue_wait_s`, then get 503.
    max_in_flight: int = Field(64, ge=1, description="POST requests handled at once")
    #: How long a request waits for a free slot before it is answered 503 + Retry-After.
    queue_wait_s: float = Field(2.0, gt=0, description="seconds a request waits for a free slot before 503")
    #: Seconds a 503 asks the sender to wait (Retry-After).
    retry_after_s: int = Field(5, ge=1, description="Retry-After seconds on 503")
    #: Seconds to receive a whole request body; read before a slot is taken, so a stalled sender holds none.
    body_timeout_s: float = Field(10.0, gt=0, description="seconds to receive a request body (else 408)")
    #: Seconds to receive a request's line and headers, from connect or the previous response.
    header_timeout_s: float = Field(10.0, gt=0, description="seconds to receive request headers (else disconnect)")
    #: Open connections (and requests) at once; beyond, uvicorn answers 503 (uvicorn's limit_concurrency).
    max_connections: int = Field(512, ge=8, description="open connections at once; more get 503")
    #: Seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive).
    keep_alive_s: float = Field(5.0, gt=0, description="seconds an idle keep-alive connection stays open")


class KnativeOIDC(BaseModel):
    """Knative's sender identity on `/events`: service-account tokens for `audience`, from `allowed_subjects`.

    Knative Eventing (feature `authentication-oidc`) sends each delivery with
    `Authorization: Bearer <JWT>`, a token of the Trigger's own ServiceAccount
    whose audience is the subscriber's. The controller checks it with the
    TokenReview API (controller/edge/knative_auth.py); the static token keeps working.
    Off (None audience) unless configured.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    audience: str | None = Field(
        None,
        max_length=253,
        description="accept Knative OIDC tokens issued for this audience on /events (cluster mode)",
    )
    #: Usernames accepted, e.g. `system:serviceaccount:trm-sre:trm-sre-alert-fired-oidc-eventing.knative.dev-trigger`.
    allowed_subjects: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "ServiceAccounts allowed to send them, system:serviceaccount:NS:NAME (comma-separated in the environment)"
        ),
    )

    @field_validator("audience", mode="before")
    @classmethod
    def _audience(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
            if value is not None and any(ch.isspace() or ch == "," for ch in value):
                raise ValueError(f"{value[:80]!r} is not a valid audience (no spaces or commas)")
        return value

    @field_validator("allowed_subjects", mode="before")
    @classmethod
    def _subjects(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            given = [str(s).strip() for s in value if str(s).strip()]
            for subject in given:
                if not _SERVICE_ACCOUNT_USER.fullmatch(subject):
                    raise ValueError(
                        f"{subject[:120]!r} is not a ServiceAccount username (system:serviceaccount:NAMESPACE:NAME)"
                    )
            return tuple(dict.fromkeys(given))
        return value

    @model_validator(mode="after")
    def _together(self) -> KnativeOIDC:
        if self.audience is None and self.allowed_subjects:
            raise ValueError("allowed subjects need an audience (--events-audience)")
        if self.audience is not None and not self.allowed_subjects:
            raise ValueError(
                "--events-audience needs at least one --events-allowed-subject: the ServiceAccount a Knative Trigger "
                "sends as, e.g. system:serviceaccount:trm-sre:trm-sre-alert-fired-oidc-eventing.knative.dev-trigger "
                "(kubectl get trigger NAME -o jsonpath='{.status.auth.serviceAccountName}')"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.audience is not None


class BearerToken:
    """The webhook bearer token, from the environment or a file that is re-read when it changes.

    With a file, rotation works without a restart: the file (e.g. a mounted
    Secret, which Kubernetes swaps atomically) is re-read whenever its mtime,
    size or inode changes. A configured file that becomes unreadable or empty
    fails closed: no request authenticates until it is readable again.
    """

    def __init__(self, *, value: str | None = None, file: Path | None = None, env_name: str = TOKEN_ENV) -> None:
        self._value = value.strip() if value else None
        self._file = file
        self._env_name = env_name
        self._stamp: tuple[int, int, int] | None = None
        self._file_value: str | None = None
        if file is not None:
            self._refresh()

    @property
    def configured(self) -> bool:
        return self._file is not None or bool(self._value)

    @property
    def source(self) -> str:
        if self._file is not None:
            return f"file {self._file}"
        return f"env {self._env_name}" if self._value else "none"

    def _refresh(self) -> None:
        assert self._file is not None
        try:
            stat = self._file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if stamp != self._stamp:
                # Trailing newline from `echo token > file` or a Secret's data is not part of the token.
                self._file_value = self._file.read_text().strip() or None
                self._stamp = stamp
                if self._file_value is None:
                    log.error("token file %s is empty: every authenticated request is refused", self._file)
        except OSError as exc:
            if self._file_value is not None or self._stamp is not None:
                log.error("token file %s is unreadable (%s): every authenticated request is refused", self._file, exc)
            self._file_value, self._stamp = None, None

    def current(self) -> str | None:
        if self._file is not None:
            self._refresh()
            return self._file_value
        return self._value

    def check(self, presented: str | None) -> bool:
        """Constant-time comparison; False when a token is configured but missing or unreadable."""
        expected = self.current()
        if expected is None or presented is None:
            return False
        return hmac.compare_digest(presented.encode(), expected.encode())
