"""The controller's settings: one pydantic-settings model, built once at start-up and passed down.

Sources, highest first: command-line flags (`trm-sre run`), the environment
(`TRM_SRE_<FIELD>`, sections as `TRM_SRE_<SECTION>__<FIELD>`, plus Knative's
own `K_SINK` and `K_CE_OVERRIDES`), then the defaults below. Nothing is read at
import time. Invalid settings fail at start-up with a message that names the
setting (`SettingsError`), not at the first alert.

Sections: `limits` and `knative` (the edge's, `controller.edge.config`),
`tls`, `engine` (`controller.engine.config`) and `model`. Adding an option
touches this model (or its section) and, if it needs a flag, the parser in
`controller.tools.cli`, whose `dest` is the setting's dotted path. Every
environment variable is listed in `docs/operations.md` (a test checks it
against `environment_variables()`).
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from controller.edge.config import APPROVER_TOKEN_ENV, TOKEN_ENV, BearerToken, KnativeOIDC, Limits
from controller.engine.config import EngineSettings

ENV_PREFIX = "TRM_SRE_"
#: Knative's conventions (SinkBinding, ContainerSource): read as they are named, into the engine section.
KNATIVE_ENV = {"K_SINK": ("engine", "sink"), "K_CE_OVERRIDES": ("engine", "ce_overrides")}

# CloudEvents extension attribute names: lowercase alphanumerics, at most 20 (spec + SDK 2.x validation).
_CE_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
# Attributes an override must not touch: Knative's SinkBinding only adds extensions.
_CE_CORE_ATTRIBUTES = {
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
}

# The environment the settings read; `Settings.load(environ=...)` sets it for one build (tests pass their own).
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("trm_sre_environ", default=None)


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it and says what would be valid."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; anything else (0.0.0.0 included) is reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: BearerToken) -> None:
    """Without a token the server answers anyone who can reach it, so it may only listen on loopback."""
    if not token.configured and not is_loopback(host):
        raise SettingsError(
            f"refusing to listen on {host} without authentication: set {TOKEN_ENV} or --token-file, "
            "or listen on 127.0.0.1 (the default)"
        )


def parse_ce_overrides(raw: str | None) -> dict[str, str]:
    """`K_CE_OVERRIDES` (Knative SinkBinding): `{"extensions": {...}}`, possibly an empty string."""
    if raw is None or not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"K_CE_OVERRIDES is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SettingsError('K_CE_OVERRIDES must be a JSON object like {"extensions": {"name": "value"}}')
    extensions = doc.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise SettingsError("K_CE_OVERRIDES.extensions must be an object")
    out: dict[str, str] = {}
    for name, value in extensions.items():
        if name in _CE_CORE_ATTRIBUTES or not _CE_EXTENSION_NAME.fullmatch(str(name)):
            raise SettingsError(
                f"K_CE_OVERRIDES: extension name {name!r} is invalid "
                "(lowercase letters and digits, at most 20, and not a core attribute)"
            )
        out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STANDALONE_SYSTEM_NAMESPACE = "trm-sre"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def pod_namespace(environ: Mapping[str, str] | None = None, sa_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE) -> str:
    """The pod's namespace: POD_NAMESPACE (the downward API), else the ServiceAccount's file, else trm-sre."""
    value = (os.environ if environ is None else environ).get("POD_NAMESPACE", "").strip()
    if value:
        return value
    try:
        value = sa_file.read_text().strip()
    except OSError:
        value = ""
    return value or STANDALONE_SYSTEM_NAMESPACE


def default_state_dir() -> Path:
    import platformdirs  # only when no --state-dir is given

    return Path(platformdirs.user_data_dir("trm-sre", appauthor=False))


class TLSFiles(BaseModel):
    """HTTPS for the API: the server's certificate and key, and optionally a CA for client certificates.

    With `client_ca_file` every connection must present a certificate signed by
    that CA (mutual TLS, `ssl.CERT_REQUIRED`); the bearer token is still checked.
    The files are loaded at start-up, so a mistake fails there, not at a handshake.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: Path | None = Field(None, description="serve HTTPS with this PEM certificate (chain)")
    key_file: Path | None = Field(None, description="the PEM private key of the certificate")
    client_ca_file: Path | None = Field(
        None, description="require client certificates signed by this PEM CA (mutual TLS)"
    )

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _loadable(self) -> TLSFiles:
        given = {
            "--tls-cert-file": self.cert_file,
            "--tls-key-file": self.key_file,
            "--client-ca-file": self.client_ca_file,
        }
        if not any(given.values()):
            return self
        if self.cert_file is None or self.key_file is None:
            missing = "--tls-key-file" if self.cert_file else "--tls-cert-file"
            named = " and ".join(flag for flag, value in given.items() if value)
            raise ValueError(f"{named} also needs {missing} (TLS needs a certificate and its key)")
        for flag, path in given.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{flag} {path} does not exist or is not a file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"--tls-cert-file {self.cert_file} with --tls-key-file {self.key_file}: not a PEM certificate and "
                f"its key ({exc})"
            ) from exc
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.client_ca_file))
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"--client-ca-file {self.client_ca_file}: not a PEM CA certificate ({exc})") from exc
        return self


class ModelSettings(BaseModel):
    """The TRM stage's model: whether to load it, from where, and on which device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="load the TRM (false: the TRM stage hands over)")
    checkpoint_dir: Path | None = Field(
        None, description="checkpoint directory (default: the shipped models/checkpoints/trm)"
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where the TRM runs: cpu, cuda (strict: not ready without a usable GPU) or auto (falls back)"
    )
    runtime: Literal["onnx", "torch"] = Field(
        "onnx", description="onnx (onnxruntime, no torch) or torch (needs the trm-sre[train] extra)"
    )


class Settings(BaseSettings):
    """Everything `trm-sre run` needs, validated."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="forbid", case_sensitive=False
    )

    standalone: bool = Field(False, description="no cluster: policies come from files (or the embedded default)")
    policy_files: tuple[Path, ...] = Field((), description="RemediationPolicy YAML files (standalone only)")
    host: str = Field("127.0.0.1", description="address to listen on (anything but loopback needs a token)")
    port: int = Field(8080, ge=0, lt=65536, description="HTTP port (0 picks a free one, announced at start)")
    state_dir: Path = Field(default_factory=default_state_dir, description="where the store lives")
    #: The store: None (or sqlite:///PATH) is the embedded SQLite file, one process; postgresql://… is shared by
    #: N active replicas (`controller.engine.store.postgres`). Keep the password out of the URL: libpq reads
    #: PGPASSWORD / PGPASSFILE (the Helm chart sets PGPASSWORD from a Secret).
    store_url: str | None = Field(
        None,
        pattern=r"^(sqlite://(/\S*)?|postgres(ql)?://\S+)$",
        description="sqlite:///PATH (default: <state dir>/trm-sre.db) or postgresql://… (replicas share it)",
    )
    store_pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL store: connections per replica")
    webhook_token: SecretStr | None = Field(None, description="the bearer token every POST endpoint requires")
    token_file: Path | None = Field(
        None, description="bearer token file, re-read when it changes (wins over the token)"
    )
    approver_token: SecretStr | None = Field(
        None, description="standalone: the bearer token /approvals requires (never the webhook token)"
    )
    approver_token_file: Path | None = Field(
        None, description="standalone: approver token file, re-read when it changes (wins over the approver token)"
    )
    system_namespace: str | None = Field(
        None,
        max_length=63,
        description="the controller's own namespace: only its policies may target other namespaces or set a sink "
        "(default: the pod's namespace in a cluster, trm-sre standalone)",
    )
    namespaces: tuple[str, ...] = Field((), description="watch policies in these namespaces (default: cluster-wide)")
    liveness_port: int = Field(
        8081, ge=0, lt=65536, description="kopf's liveness endpoint port, cluster mode (0 disables)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    #: SIGTERM to exit: Kubernetes' default grace period is 30 s, so finish within 25.
    shutdown_timeout_s: float = Field(25.0, gt=0, description="seconds to finish in-flight work after SIGTERM")
    limits: Limits = Field(default_factory=Limits)
    tls: TLSFiles = Field(default_factory=TLSFiles)
    knative: KnativeOIDC = Field(default_factory=KnativeOIDC)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for path in self.policy_files:
            if not path.is_file():
                raise ValueError(f"--policies {path} does not exist or is not a file")
        if self.policy_files and not self.standalone:
            raise ValueError("--policies only applies with --standalone (in a cluster, policies are custom resources)")
        if self.token_file is not None:
            if not self.token_file.is_file():
                raise ValueError(f"--token-file {self.token_file} does not exist or is not a file")
            if not self.token_file.read_text(errors="replace").strip():
                raise ValueError(f"--token-file {self.token_file} is empty or unreadable")
        if self.approver_token_file is not None:
            if not self.approver_token_file.is_file():
                raise ValueError(f"--approver-token-file {self.approver_token_file} does not exist or is not a file")
            if not self.approver_token_file.read_text(errors="replace").strip():
                raise ValueError(f"--approver-token-file {self.approver_token_file} is empty or unreadable")
        if not self.standalone and (self.approver_token is not None or self.approver_token_file is not None):
            raise ValueError(
                "--approver-token-file is for --standalone: in a cluster, approvers are Kubernetes users with "
                "'approve' on remediationpolicies (TokenReview + SubjectAccessReview)"
            )
        if self.system_namespace is not None and not _DNS_LABEL.fullmatch(self.system_namespace):
            raise ValueError(f"--system-namespace {self.system_namespace[:80]!r} is not a namespace name")
        approver = self.approver_token.get_secret_value().strip() if self.approver_token is not None else ""
        webhook = self.webhook_token.get_secret_value().strip() if self.webhook_token is not None else ""
        if approver and approver == webhook:
            raise ValueError("the approver token must differ from the webhook token")
        if self.knative.enabled:
            if self.standalone:
                raise ValueError(
                    "--events-audience needs cluster mode: tokens are checked with the Kubernetes TokenReview API, "
                    "and --standalone has no cluster"
                )
            if self.webhook_token is None and self.token_file is None:
                raise ValueError(
                    f"--events-audience needs the bearer token too ({TOKEN_ENV} or --token-file): "
                    "/alertmanager, /reason and /approvals still require it"
                )
        return self

    @cached_property
    def token(self) -> BearerToken:
        """The one token object of the process (a file is re-read when it changes)."""
        if self.token_file is not None:
            return BearerToken(file=self.token_file)
        secret = self.webhook_token.get_secret_value() if self.webhook_token is not None else None
        return BearerToken(value=secret or None)

    @cached_property
    def effective_system_namespace(self) -> str:
        """--system-namespace, else trm-sre standalone, else the pod's namespace."""
        if self.system_namespace is not None:
            return self.system_namespace
        return STANDALONE_SYSTEM_NAMESPACE if self.standalone else pod_namespace()

    @cached_property
    def approver_token_source(self) -> BearerToken:
        """Standalone approvals' credential (a file is re-read when it changes); unconfigured: nobody approves."""
        if self.approver_token_file is not None:
            return BearerToken(file=self.approver_token_file, env_name=APPROVER_TOKEN_ENV)
        secret = self.approver_token.get_secret_value() if self.approver_token is not None else None
        return BearerToken(value=secret or None, env_name=APPROVER_TOKEN_ENV)

    @property
    def authenticated(self) -> bool:
        return self.token.configured

    @property
    def scheme(self) -> str:
        return "https" if self.tls.enabled else "http"

    @property
    def triggers_file(self) -> Path:
        """Where triggers go when there is no sink (the engine appends JSON lines here)."""
        return self.state_dir / "triggers.jsonl"

    @property
    def trigger_destination(self) -> str:
        return self.engine.sink if self.engine.sink else f"file {self.triggers_file}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls), _KnativeEnvironment(settings_cls)

    @classmethod
    def load(cls, values: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from explicit `values` (nested dicts; the CLI's flags) over `environ` (default os.environ).

        Raises SettingsError naming the setting, and its flag or environment variable, on anything invalid.
        """
        token = _ENVIRON.set(os.environ if environ is None else environ)
        try:
            settings = cls(**dict(values or {}))
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None
        finally:
            _ENVIRON.reset(token)
        check_bind(settings.host, settings.token)
        return settings


class _Environment(EnvSettingsSource):
    """`TRM_SRE_*` from the environment `Settings.load` was given (pydantic-settings reads os.environ)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        return parse_env_vars(
            os.environ if environ is None else environ, False, self.env_ignore_empty, self.env_parse_none_str
        )


class _KnativeEnvironment(PydanticBaseSettingsSource):
    """`K_SINK` and `K_CE_OVERRIDES`, named by Knative's conventions rather than ours."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = _ENVIRON.get() or os.environ
        out: dict[str, Any] = {}
        sink = (environ.get("K_SINK") or "").strip()
        if sink:
            out.setdefault("engine", {})["sink"] = sink
        overrides = environ.get("K_CE_OVERRIDES")
        if overrides is not None and overrides.strip():
            try:
                out.setdefault("engine", {})["ce_overrides"] = parse_ce_overrides(overrides)
            except SettingsError as exc:
                raise ValueError(str(exc)) from None
        return out


def _flag(loc: tuple[int | str, ...]) -> str:
    """A setting's path → how a user names it: `engine.queue_size` (--queue-size / TRM_SRE_ENGINE__QUEUE_SIZE)."""
    path = [str(part) for part in loc if isinstance(part, str)]
    if not path:
        return "settings"
    dotted = ".".join(path)
    env = ENV_PREFIX + "__".join(part.upper() for part in path)
    return f"{dotted} ({env})"


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(error.get("loc", ()))
        problems.append(message if not loc else f"{_flag(loc)}: {message}")
    return "; ".join(problems)


def environment_variables() -> Iterator[tuple[str, str]]:
    """(variable, description) for every setting the environment can carry, Knative's two included."""
    yield from (
        ("K_SINK", "default CloudEvents sink (engine.sink)"),
        ("K_CE_OVERRIDES", "CloudEvents extensions (engine.ce_overrides)"),
    )

    def walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from walk(annotation, f"{prefix}{name.upper()}__")
            else:
                yield f"{prefix}{name.upper()}", field.description or ""

    yield from walk(Settings, ENV_PREFIX)
