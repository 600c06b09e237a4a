"""Run-time settings of the controller process: one root object, built once at start-up.

Everything the process reads from its environment (`K_SINK`, `K_CE_OVERRIDES`,
`TRM_SRE_WEBHOOK_TOKEN`, `TRM_SRE_EVENTS_AUDIENCE`, `TRM_SRE_EVENTS_ALLOWED_SUBJECTS`,
`TRM_SRE_RETENTION_DAYS`)
is read here, in `settings_from_args`, when the CLI asks for it — never at
import time — and passed down explicitly. Invalid settings fail at start-up
with a message that names the setting (`SettingsError`), not at the first alert.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

TOKEN_ENV = "TRM_SRE_WEBHOOK_TOKEN"
EVENTS_AUDIENCE_ENV = "TRM_SRE_EVENTS_AUDIENCE"
EVENTS_SUBJECTS_ENV = "TRM_SRE_EVENTS_ALLOWED_SUBJECTS"
SINK_ENV = "K_SINK"
CE_OVERRIDES_ENV = "K_CE_OVERRIDES"
RETENTION_ENV = "TRM_SRE_RETENTION_DAYS"

#: Days a finished incident is kept in the store (0 = forever), and the most a setting may ask for.
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 36_500

# CloudEvents extension attribute names: lowercase alphanumerics, at most 20 (spec + SDK 2.x validation).
_CE_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# Attributes an override must not touch: Knative's SinkBinding only adds extensions.
_CE_CORE_ATTRIBUTES = {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time", "data"}
# The username the apiserver gives a ServiceAccount token: system:serviceaccount:<namespace>:<name>.
_SERVICE_ACCOUNT_USER = re.compile(r"^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it and says what would be valid."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry; each exists so one sender cannot exhaust the process."""

    #: Largest request body in bytes. Alertmanager groups rarely exceed a few hundred KiB;
    #: 4 MiB leaves room for 1,000 alerts with long annotations.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Alerts per webhook payload (Alertmanager's `max_alerts` can cap this on the sender's side).
    max_alerts: int = 1_000
    #: Labels per alert, and annotations per alert.
    max_labels: int = 64
    #: Characters in a label or annotation name.
    max_name_length: int = 256
    #: Characters in a label value (label values are identifiers, not prose).
    max_label_value_length: int = 2_048
    #: Characters in an annotation value (descriptions and runbook text can be long).
    max_annotation_value_length: int = 16_384
    #: Requests handled at once on the POST endpoints; more wait up to `queue_wait_s`, then get 503.
    max_in_flight: int = 64
    #: How long a request waits for a free slot before it is answered 503 + Retry-After.
    queue_wait_s: float = 2.0
    #: Seconds a 503 asks the sender to wait (Retry-After).
    retry_after_s: int = 5


class BearerToken:
    """The webhook bearer token, from the environment or a file that is re-read when it changes.

    With a file, rotation works without a restart: the file (e.g. a mounted
    Secret, which Kubernetes swaps atomically) is re-read whenever its mtime,
    size or inode changes. A configured file that becomes unreadable or empty
    fails closed: no request authenticates until it is readable again.
    """

    def __init__(self, *, value: str | None = None, file: Path | None = None) -> None:
        self._value = value.strip() if value else None
        self._file = file
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
        return f"env {TOKEN_ENV}" if self._value else "none"

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


@dataclass(frozen=True)
class EventsOIDC:
    """Knative's sender identity on `/events`: service-account tokens for `audience`, from `allowed_subjects`.

    Knative Eventing (feature `authentication-oidc`) sends each delivery with
    `Authorization: Bearer <JWT>`, a token of the Trigger's own ServiceAccount
    whose audience is the subscriber's. The controller checks it with the
    TokenReview API (controller/edge/knative_auth.py); the static token keeps working.
    """

    audience: str
    #: Usernames accepted, e.g. `system:serviceaccount:trm-sre:trm-sre-alert-fired-oidc-eventing.knative.dev-trigger`.
    allowed_subjects: tuple[str, ...]


def events_oidc_from_args(
    audience: str | None, subjects: list[str] | None, env: Mapping[str, str]
) -> EventsOIDC | None:
    """`--events-audience` / `--events-allowed-subject` (or their environment variables), checked; None when unset."""
    audience = (audience if audience is not None else env.get(EVENTS_AUDIENCE_ENV) or "").strip()
    if subjects:
        given = [s.strip() for s in subjects]
    else:
        given = [s.strip() for s in (env.get(EVENTS_SUBJECTS_ENV) or "").split(",") if s.strip()]
    if not audience:
        if given:
            raise SettingsError(
                f"--events-allowed-subject ({EVENTS_SUBJECTS_ENV}) needs --events-audience ({EVENTS_AUDIENCE_ENV})"
            )
        return None
    if any(ch.isspace() or ch == "," for ch in audience) or len(audience) > 253:
        raise SettingsError(
            f"--events-audience {audience[:80]!r} is not a valid audience (no spaces or commas, at most 253 characters)"
        )
    if not given:
        raise SettingsError(
            f"--events-audience needs at least one --events-allowed-subject ({EVENTS_SUBJECTS_ENV}, comma-separated): "
            "the ServiceAccount a Knative Trigger sends as, "
            "e.g. system:serviceaccount:trm-sre:trm-sre-alert-fired-oidc-eventing.knative.dev-trigger "
            "(kubectl get trigger NAME -o jsonpath='{.status.auth.serviceAccountName}')"
        )
    for subject in given:
        if not _SERVICE_ACCOUNT_USER.match(subject):
            raise SettingsError(
                f"--events-allowed-subject {subject[:120]!r} is not a ServiceAccount username "
                "(system:serviceaccount:NAMESPACE:NAME)"
            )
    return EventsOIDC(audience=audience, allowed_subjects=tuple(dict.fromkeys(given)))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; anything else (0.0.0.0 included) is reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_ce_overrides(raw: str | None) -> dict[str, str]:
    """`K_CE_OVERRIDES` (Knative SinkBinding): `{"extensions": {...}}`, possibly an empty string."""
    if raw is None or not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{CE_OVERRIDES_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SettingsError(f'{CE_OVERRIDES_ENV} must be a JSON object like {{"extensions": {{"name": "value"}}}}')
    extensions = doc.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise SettingsError(f"{CE_OVERRIDES_ENV}.extensions must be an object")
    out: dict[str, str] = {}
    for name, value in extensions.items():
        if name in _CE_CORE_ATTRIBUTES or not _CE_EXTENSION_NAME.match(str(name)):
            raise SettingsError(
                f"{CE_OVERRIDES_ENV}: extension name {name!r} is invalid "
                "(lowercase letters and digits, at most 20, and not a core attribute)"
            )
        out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


@dataclass(frozen=True)
class TLSFiles:
    """HTTPS for the API: the server's certificate and key, and optionally a CA for client certificates.

    With `client_ca_file` every connection must present a certificate signed by
    that CA (mutual TLS, `ssl.CERT_REQUIRED`); the bearer token is still checked.
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def tls_from_args(cert_file: str | None, key_file: str | None, client_ca_file: str | None) -> TLSFiles | None:
    """Check the TLS flags together, and that the files load, so a mistake fails at start-up, not at a handshake."""
    if not (cert_file or key_file or client_ca_file):
        return None
    if not cert_file or not key_file:
        missing = "--tls-key-file" if cert_file else "--tls-cert-file"
        given = [flag for flag, value in (("--tls-cert-file", cert_file), ("--tls-key-file", key_file),
                                          ("--client-ca-file", client_ca_file)) if value]
        raise SettingsError(f"{' and '.join(given)} also needs {missing} (TLS needs a certificate and its key)")
    paths = {"--tls-cert-file": Path(cert_file), "--tls-key-file": Path(key_file)}
    if client_ca_file:
        paths["--client-ca-file"] = Path(client_ca_file)
    for flag, path in paths.items():
        if not path.is_file():
            raise SettingsError(f"{flag} {path} does not exist or is not a file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(paths["--tls-cert-file"]), str(paths["--tls-key-file"]))
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"--tls-cert-file {cert_file} with --tls-key-file {key_file}: not a PEM certificate and its key ({exc})"
        ) from exc
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=str(paths["--client-ca-file"]))
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(f"--client-ca-file {client_ca_file}: not a PEM CA certificate ({exc})") from exc
    return TLSFiles(paths["--tls-cert-file"], paths["--tls-key-file"], paths.get("--client-ca-file"))


def default_state_dir() -> Path:
    import platformdirs  # only when no --state-dir is given

    return Path(platformdirs.user_data_dir("trm-sre", appauthor=False))


@dataclass(frozen=True)
class RunSettings:
    """Everything `trm-sre run` needs, validated."""

    standalone: bool
    policy_files: tuple[Path, ...]
    host: str
    port: int
    state_dir: Path
    token: BearerToken
    namespaces: tuple[str, ...]
    device: Literal["cpu", "cuda", "auto"]
    model_enabled: bool
    checkpoint_dir: Path | None
    sink: str | None
    ce_overrides: dict[str, str]
    liveness_port: int
    log_level: str
    limits: Limits = field(default_factory=Limits)
    #: SIGTERM to exit: Kubernetes' default grace period is 30 s, so finish within 25.
    shutdown_timeout_s: float = 25.0
    ce_source: str = "/trm-sre"
    #: HTTPS (and optionally mutual TLS) for the API; None: plain HTTP.
    tls: TLSFiles | None = None
    #: Alerts waiting for a decision; beyond it new alerts get 503 + Retry-After (bounds memory under a flood).
    queue_size: int = 10_000
    #: `/events` also accepts Knative's OIDC tokens (cluster mode only); None: only the static token.
    events_oidc: EventsOIDC | None = None
    #: Finished incidents idle this many days are deleted from the store; 0 keeps everything.
    retention_days: int = DEFAULT_RETENTION_DAYS

    @property
    def authenticated(self) -> bool:
        return self.token.configured

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def triggers_file(self) -> Path:
        """Where triggers go when there is no sink (the engine appends JSON lines here)."""
        return self.state_dir / "triggers.jsonl"

    @property
    def trigger_destination(self) -> str:
        return self.sink if self.sink else f"file {self.triggers_file}"


def retention_days_from_args(days: int | None, env: Mapping[str, str]) -> int:
    """`--retention-days`, else `TRM_SRE_RETENTION_DAYS`, else 30; whole days from 0 (keep forever) up."""
    name = "--retention-days"
    if days is None:
        raw = (env.get(RETENTION_ENV) or "").strip()
        if not raw:
            return DEFAULT_RETENTION_DAYS
        name = RETENTION_ENV
        try:
            days = int(raw)
        except ValueError:
            raise SettingsError(f"{RETENTION_ENV} {raw[:40]!r} is not a whole number of days (0 keeps everything)") from None
    if not 0 <= days <= MAX_RETENTION_DAYS:
        raise SettingsError(
            f"{name} {days} must be between 0 (keep everything) and {MAX_RETENTION_DAYS} days; "
            "keep it longer than Alertmanager's repeat_interval (docs/operations.md)"
        )
    return days


def check_bind(host: str, token: BearerToken) -> None:
    """Without a token the server answers anyone who can reach it, so it may only listen on loopback."""
    if not token.configured and not is_loopback(host):
        raise SettingsError(
            f"refusing to listen on {host} without authentication: set {TOKEN_ENV} or --token-file, "
            "or listen on 127.0.0.1 (the default)"
        )


def settings_from_args(
    *,
    standalone: bool,
    policy_files: list[str] | None,
    host: str,
    port: int,
    state_dir: str | None,
    token_file: str | None,
    namespaces: list[str] | None,
    device: str,
    no_model: bool,
    checkpoint: str | None,
    sink: str | None,
    liveness_port: int,
    log_level: str,
    environ: Mapping[str, str] | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    client_ca_file: str | None = None,
    max_body_bytes: int | None = None,
    queue_size: int | None = None,
    events_audience: str | None = None,
    events_allowed_subjects: list[str] | None = None,
    retention_days: int | None = None,
) -> RunSettings:
    """Combine command-line values with the environment; raise SettingsError on anything invalid."""
    env = os.environ if environ is None else environ
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise SettingsError(f"--token-file {path} does not exist or is not a file")
        token = BearerToken(file=path)
        if token.current() is None:
            raise SettingsError(f"--token-file {path} is empty or unreadable")
    else:
        token = BearerToken(value=env.get(TOKEN_ENV) or None)
    check_bind(host, token)
    if not 0 <= port < 65536:
        raise SettingsError(f"--port {port} is not a TCP port (0 picks a free one, announced at start)")
    if not 0 <= liveness_port < 65536:
        raise SettingsError(f"--liveness-port {liveness_port} is not a TCP port (0 disables it)")
    if device not in ("cpu", "cuda", "auto"):
        raise SettingsError(f"--device must be cpu, cuda or auto, not {device!r}")
    sink_url = sink if sink is not None else env.get(SINK_ENV)
    sink_url = sink_url.strip() if sink_url else None
    if sink_url and not re.match(r"^https?://", sink_url):
        raise SettingsError(f"sink {sink_url!r} must be an http:// or https:// URL")
    files = tuple(Path(p) for p in (policy_files or ()))
    for path in files:
        if not path.is_file():
            raise SettingsError(f"--policies {path} does not exist or is not a file")
    if files and not standalone:
        raise SettingsError("--policies only applies with --standalone (in a cluster, policies are custom resources)")
    tls = tls_from_args(tls_cert_file, tls_key_file, client_ca_file)
    limits = Limits()
    if max_body_bytes is not None:
        if max_body_bytes < 1024:
            raise SettingsError(f"--max-body-bytes {max_body_bytes} is too small (at least 1024)")
        limits = Limits(max_body_bytes=max_body_bytes)
    if queue_size is not None and queue_size < 1:
        raise SettingsError(f"--queue-size {queue_size} must be at least 1")
    retention = retention_days_from_args(retention_days, env)
    events_oidc = events_oidc_from_args(events_audience, events_allowed_subjects, env)
    if events_oidc is not None:
        if standalone:
            raise SettingsError(
                "--events-audience needs cluster mode: tokens are checked with the Kubernetes TokenReview API, "
                "and --standalone has no cluster"
            )
        if not token.configured:
            raise SettingsError(
                f"--events-audience needs the bearer token too ({TOKEN_ENV} or --token-file): "
                "/alertmanager, /reason and /approvals still require it"
            )
    return RunSettings(
        standalone=standalone,
        policy_files=files,
        host=host,
        port=port,
        state_dir=Path(state_dir) if state_dir else default_state_dir(),
        token=token,
        namespaces=tuple(namespaces or ()),
        device=device,  # type: ignore[arg-type]  # checked above
        model_enabled=not no_model,
        checkpoint_dir=Path(checkpoint) if checkpoint else None,
        sink=sink_url or None,
        ce_overrides=parse_ce_overrides(env.get(CE_OVERRIDES_ENV)),
        liveness_port=liveness_port,
        log_level=log_level.upper(),
        limits=limits,
        tls=tls,
        queue_size=queue_size if queue_size is not None else RunSettings.queue_size,
        events_oidc=events_oidc,
        retention_days=retention,
    )
