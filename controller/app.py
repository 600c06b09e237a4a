"""Wiring: the one place that builds the controller's objects and runs its loops.

One process, one asyncio loop: the HTTP API (uvicorn), the pipeline's workers
and outbox loop, and — in cluster mode — the kopf operator that keeps the
policy index current and writes policy status. Everything is built here from
`Settings` and passed explicitly; nothing is a module-level singleton.

Shutdown order (SIGTERM, SIGINT, or a component failing): stop accepting HTTP
requests (in-flight ones finish), drain the pipeline (decide what was
accepted, give the outbox one more delivery pass), then stop the operator so
its last status flush sees the final counts. The whole sequence is bounded
by `Settings.shutdown_timeout_s` (25 s: inside Kubernetes' 30 s grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from fastapi import FastAPI
from pydantic import ValidationError

from controller.decision.policy_checks import scope_problems
from controller.decision.policy_index import PolicyIndex
from controller.decision.stages import StageClients
from controller.defaults import load_default_policy, policy_from_manifest
from controller.edge.api import ApiDeps, build_api
from controller.edge.approver_auth import ApproverAuth, KubernetesApprover, NoApprover, StaticApprover
from controller.edge.cloudevents_in import summarize_validation
from controller.edge.connections import HeaderDeadlineH11
from controller.edge.knative_auth import EventsAuthenticator, KubernetesTokenReviewer
from controller.engine.gpu import gpu_utilization_reader
from controller.engine.llm_http import HttpChatTransport
from controller.engine.model_batcher import ModelBatcher
from controller.engine.model_loader import ModelState, load_model
from controller.engine.pipeline import Pipeline
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.replicas import Singleton
from controller.engine.store import StoreBackend, open_store
from controller.observability import tracing
from controller.observability.metrics import Metrics
from controller.operator.readiness import IndexSync, KubernetesPolicyLister
from controller.operator.secrets import KubernetesSecrets
from controller.schemas.policy import Policy
from controller.settings import Settings, SettingsError
from runbooks import Catalog, default_catalog

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# Policies from files (standalone mode)
# --------------------------------------------------------------------------


class PolicyFileError(SettingsError):
    """A policy file is unreadable or holds an invalid RemediationPolicy; the message names the file."""


def policy_from_file_document(doc: Any, origin: str, default_namespace: str = "default") -> Policy:
    """One RemediationPolicy manifest from a file → Policy; the namespace defaults as with `kubectl apply -n`."""
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict) and not doc["metadata"].get("namespace"):
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": default_namespace}}
    try:
        return policy_from_manifest(doc)
    except ValidationError as exc:
        raise PolicyFileError(f"{origin}: invalid spec: {summarize_validation(exc, limit=10)}") from exc
    except (ValueError, TypeError) as exc:
        raise PolicyFileError(f"{origin}: {exc}") from exc


def load_policy_files(paths: tuple[Path, ...] | list[Path], default_namespace: str = "default") -> list[Policy]:
    """Every RemediationPolicy in the files (multi-document YAML); duplicates are an error.

    A document without metadata.namespace gets `default_namespace` (standalone: the system namespace, as if
    applied with `kubectl apply -n trm-sre`, where deploy/samples go).
    """
    policies: dict[str, Policy] = {}
    for path in paths:
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyFileError(f"{path}: cannot read policies: {exc}") from exc
        for number, doc in enumerate(docs, start=1):
            if doc is None:
                continue  # an empty document (a trailing `---`)
            policy = policy_from_file_document(doc, f"{path} document {number}", default_namespace)
            if policy.key in policies:
                raise PolicyFileError(f"{path}: policy {policy.key} is defined twice")
            policies[policy.key] = policy
    return list(policies.values())


def _check_tenancy(policy: Policy, index: PolicyIndex) -> None:
    """Standalone files follow the cluster's rule by their metadata.namespace (`scope_problems`)."""
    spec = policy.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    problems = scope_problems(policy.namespace, spec, index.system_namespace)
    if problems:
        raise PolicyFileError(f"policy {policy.key}: " + "; ".join(map(str, problems)))


def standalone_policies(paths: tuple[Path, ...], default_namespace: str = "default") -> list[Policy]:
    """The policies of `--policies`, or the embedded default policy when none are given."""
    if paths:
        policies = load_policy_files(paths, default_namespace)
        if not policies:
            raise PolicyFileError(f"no RemediationPolicy in {', '.join(map(str, paths))}")
        return policies
    return [load_default_policy()]


# --------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------


@dataclass
class Readiness:
    """What must hold, beyond the pipeline's own checks, before the process takes traffic."""

    standalone: bool
    index: PolicyIndex
    model: ModelState
    # Cluster mode: kopf's ready flag, raised once its startup activities ran and it starts watching.
    operator_started: asyncio.Event = field(default_factory=asyncio.Event)
    # Cluster mode: complete once the operator has handled every RemediationPolicy there is
    # (controller/operator/readiness.py); until then alerts could find the index empty or partial.
    index_sync: IndexSync | None = None

    def __call__(self) -> list[str]:
        problems = []
        if self.standalone:
            if len(self.index) == 0:
                problems.append("no RemediationPolicy loaded")
        elif not self.operator_started.is_set():
            problems.append("the operator has not started watching RemediationPolicies yet")
        elif self.index_sync is not None and (problem := self.index_sync.problem()):
            problems.append(problem)
        model = self.model.readiness_problem()
        if model:
            problems.append(model)
        return problems


@dataclass
class Components:
    """Everything one controller process is made of (also what tests build in-process)."""

    settings: Settings
    catalog: Catalog
    metrics: Metrics
    index: PolicyIndex
    recorder: PolicyStatusRecorder
    store: StoreBackend
    model: ModelState
    clients: StageClients
    pipeline: Pipeline
    readiness: Readiness
    api: FastAPI
    http: httpx.AsyncClient
    #: `/events` accepts Knative OIDC tokens (--events-audience); None: the static token only.
    events_auth: EventsAuthenticator | None = None


def build_components(settings: Settings, *, model: ModelState | None = None) -> Components:
    """Build (not start) every object; raises SettingsError/PolicyFileError or the store's error."""
    catalog = default_catalog()
    metrics = Metrics()
    index = PolicyIndex(system_namespace=settings.effective_system_namespace)
    if settings.standalone:
        for policy in standalone_policies(settings.policy_files, settings.effective_system_namespace):
            if settings.policy_files:
                _check_tenancy(policy, index)
            else:  # the embedded default belongs to the controller, whatever its namespace is called
                policy = policy.model_copy(update={"namespace": settings.effective_system_namespace})
            index.upsert(policy)
    if model is None:
        model = load_model(
            settings.model.enabled,
            settings.model.checkpoint_dir,
            settings.model.device,
            catalog,
            runtime=settings.model.runtime,
        )
    metrics.model_loaded.set(1 if model.selector is not None else 0)
    metrics.model_device.labels(model.requested_device, model.actual_device, model.runtime).set(1)
    gpu_reader = gpu_utilization_reader(str(getattr(model.selector, "device", "cpu")))
    if gpu_reader is not None:
        metrics.enable_gpu_utilization(gpu_reader)
    # The SQLite file in the state directory, or the PostgreSQL database replicas share (--store);
    # an unusable one is a StoreError (exit 1).
    store = open_store(
        settings.store_url,
        settings.state_dir,
        pool_size=settings.store_pool_size,
        lease_s=settings.engine.claim_lease_s,
    )
    http = httpx.AsyncClient(follow_redirects=False)
    # Batched: under a storm the pipeline's workers ask the model together, and one call for many alerts
    # costs little more than one for a single alert (controller/engine/model_batcher.py).
    trm = ModelBatcher(model.selector, on_batch=metrics.trm_batch_size.observe) if model.selector is not None else None
    clients = StageClients(
        trm=trm, chat=HttpChatTransport(http), secrets=None if settings.standalone else KubernetesSecrets()
    )
    recorder = PolicyStatusRecorder()
    index_sync = None if settings.standalone else IndexSync(KubernetesPolicyLister(settings.namespaces))
    pipeline = Pipeline(
        settings.engine,
        store,
        index,
        catalog,
        clients,
        recorder,
        metrics,
        # Until the operator has handled every policy there is, a policy missing from the index may
        # simply not be loaded yet: its pending approvals must not be cancelled as deleted.
        index_complete=(lambda: index_sync.complete) if index_sync is not None else (lambda: True),
    )
    readiness = Readiness(standalone=settings.standalone, index=index, model=model, index_sync=index_sync)
    events_auth = None
    if settings.knative.audience is not None:
        events_auth = EventsAuthenticator(
            settings.knative.audience,
            settings.knative.allowed_subjects,
            KubernetesTokenReviewer(),
            observe=lambda result: metrics.token_reviews.labels(result=result).inc(),
        )
    api = build_api(
        ApiDeps(
            pipeline=pipeline,
            metrics=metrics,
            token=settings.token,
            limits=settings.limits,
            readiness_checks=readiness,
            ce_source=settings.engine.ce_source,
            events_auth=events_auth,
            approvers=_approvers(settings),
        )
    )
    return Components(
        settings=settings,
        catalog=catalog,
        metrics=metrics,
        index=index,
        recorder=recorder,
        store=store,
        model=model,
        clients=clients,
        pipeline=pipeline,
        readiness=readiness,
        api=api,
        http=http,
        events_auth=events_auth,
    )


def _approvers(settings: Settings) -> ApproverAuth:
    """Standalone: the approver token (none configured: nobody approves); cluster: Kubernetes RBAC."""
    if settings.standalone:
        token = settings.approver_token_source
        return StaticApprover(token) if token.configured else NoApprover()
    return KubernetesApprover.in_cluster()


def _tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's ssl options: HTTPS with the given certificate; client certificates required with a client CA."""
    tls = settings.tls
    if not tls.enabled:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
    if tls.client_ca_file is not None:
        options |= {"ssl_ca_certs": str(tls.client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this module decides when and how the process stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ComponentFailed(RuntimeError):
    """The HTTP server or the operator stopped on its own."""


async def _serve_http(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits the process when it cannot bind; we want a clean shutdown
        raise ComponentFailed(f"the HTTP server could not start (exit {exc.code}); is the port in use?") from None


def bound_port(server: uvicorn.Server) -> int | None:
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return None


class Controller:
    """Runs the built components until a signal (or a failure) and stops them in order."""

    def __init__(
        self,
        components: Components,
        announce: Callable[[str], None] = print,
        report_error: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.c = components
        self.announce = announce
        self.report_error = report_error
        self.stop_requested = asyncio.Event()
        self.operator_stop = asyncio.Event()
        settings = components.settings
        config = uvicorn.Config(
            components.api,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
            # Stalled clients (issue #13.5): bounded connections, idle keep-alive and header deadlines;
            # the body's deadline is the routes' (controller/edge/limits.py).
            http=HeaderDeadlineH11.with_timeout(settings.limits.header_timeout_s),
            limit_concurrency=settings.limits.max_connections,
            timeout_keep_alive=settings.limits.keep_alive_s,
            **_tls_options(settings),
        )
        self.server = _Server(config)
        self.port: int | None = None

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self, *, install_signal_handlers: bool = True) -> int:
        """Serve until stopped; 0 after a requested stop, 1 when a component failed."""
        if install_signal_handlers:
            self._handle_signals()
        tracing.configure()  # OTEL_* environment variables; off when none configures an exporter
        await self.c.pipeline.start()
        tasks: dict[str, asyncio.Task[Any]] = {"http": asyncio.create_task(_serve_http(self.server), name="http")}
        helpers = [asyncio.create_task(self._announce_when_started(), name="announce")]
        if not self.c.settings.standalone:
            tasks["operator"] = asyncio.create_task(self._run_operator(), name="operator")
            if self.c.readiness.index_sync is not None:
                sync = self.c.readiness.index_sync.run(self.c.readiness.operator_started)
                helpers.append(asyncio.create_task(sync, name="index-sync"))
            if install_signal_handlers:
                helpers.append(asyncio.create_task(self._reclaim_signals(), name="reclaim-signals"))
        stopper = asyncio.create_task(self.stop_requested.wait(), name="stop-request")
        done, _ = await asyncio.wait([*tasks.values(), stopper], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper and (t.cancelled() or t.exception() is not None)]
        for task in failed:
            exc = None if task.cancelled() else task.exception()
            expected = isinstance(exc, ComponentFailed)  # already explained: no traceback
            log.error("%s stopped: %s", task.get_name(), exc or "cancelled", exc_info=None if expected else exc)
            self.report_error(f"error: {task.get_name()} failed: {exc or 'cancelled'}")
        if not failed and stopper not in done:
            log.info(
                "%s stopped on its own (a signal it handled); shutting down", ", ".join(t.get_name() for t in done)
            )
        for helper in helpers:
            helper.cancel()
        stopper.cancel()
        await self._shutdown(tasks)
        return 1 if failed else 0

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def _reclaim_signals(self) -> None:
        """kopf installs its own SIGTERM/SIGINT handlers when it starts; take them back.

        With kopf's handlers a SIGTERM stops the operator first, before the
        pipeline has drained, and its last status flush misses the final
        decisions. With ours, the operator is stopped last, through its stop flag.
        """
        await self.c.readiness.operator_started.wait()  # raised after kopf's startup activities
        self._handle_signals()
        # kopf adds its handlers one loop tick after it spawns its tasks, long before its startup
        # activities end; once more a second later in case a busy loop reordered that.
        await asyncio.sleep(1)
        self._handle_signals()

    async def _announce_when_started(self) -> None:
        while not self.server.started:
            await asyncio.sleep(0.02)
        self.port = bound_port(self.server)
        s = self.c.settings
        mode = "standalone" if s.standalone else "cluster"
        auth = "bearer token (" + s.token.source + ")" if s.authenticated else "none (loopback only)"
        if s.knative.enabled:
            count = len(s.knative.allowed_subjects)
            auth += (
                f"; /events also Knative OIDC tokens for audience {s.knative.audience!r} "
                f"from {count} {'subject' if count == 1 else 'subjects'} (TokenReview)"
            )
        if s.standalone:
            count = len(self.c.index)
            scope = f"{count} {'policy' if count == 1 else 'policies'}"
        else:
            scope = "policies in " + (", ".join(s.namespaces) if s.namespaces else "all namespaces")
        self.announce(f"trm-sre listening on {s.scheme}://{s.host}:{self.port} ({mode} mode, {scope})")
        self.announce(f"triggers go to: {s.trigger_destination}")
        self.announce(f"authentication: {auth}; model: {self.c.model.status}")
        log.info(
            "started",
            extra={
                "host": s.host,
                "port": self.port,
                "mode": mode,
                "triggers": s.trigger_destination,
                "model": self.c.model.status,
                "state_dir": str(s.state_dir),
            },
        )

    async def _run_operator(self) -> None:
        from controller.operator.handlers import build_registry, run_operator

        s = self.c.settings
        # Replicas on PostgreSQL: each keeps its own policy index; only the lock holder writes status.
        status_singleton = (
            Singleton(self.c.store, "policy-status", s.engine.claim_interval_s) if self.c.store.shared else None
        )
        registry = build_registry(
            self.c.index,
            self.c.recorder,
            self.c.catalog,
            index_sync=self.c.readiness.index_sync,
            status_singleton=status_singleton,
            reset_circuit=self.c.pipeline.outcomes.reset_circuit,
        )
        liveness = f"http://{s.host}:{s.liveness_port}/healthz" if s.liveness_port else None
        await run_operator(
            registry,
            namespaces=list(s.namespaces),
            stop_flag=self.operator_stop,
            liveness_endpoint=liveness,
            # Raised by kopf once its startup handlers ran and it starts watching; readiness then
            # waits for the index too (Readiness.index_sync).
            ready_flag=self.c.readiness.operator_started,
        )

    async def _shutdown(self, tasks: dict[str, asyncio.Task[Any]]) -> None:
        deadline = time.monotonic() + self.c.settings.shutdown_timeout_s

        def left(cap: float) -> float:
            return max(0.1, min(cap, deadline - time.monotonic()))

        self.server.should_exit = True
        await _settle(tasks["http"], left(7))
        try:
            await self.c.pipeline.stop(drain_timeout_s=left(15))
        except Exception:  # stopping must go on: the operator and the store still need closing
            log.exception("pipeline did not stop cleanly")
        self.operator_stop.set()
        if "operator" in tasks:
            await _settle(tasks["operator"], left(10))
        if self.c.store.is_open:
            self.c.store.close()
        if isinstance(self.c.clients.trm, ModelBatcher):
            await self.c.clients.trm.aclose()
        await self.c.http.aclose()
        if self.c.events_auth is not None:
            self.c.events_auth.close()
        # Flushes the spans still queued, bounded: a dead collector must not hold up the exit.
        await asyncio.to_thread(tracing.shutdown, int(left(3) * 1000))
        log.info("stopped")


async def _settle(task: asyncio.Task[Any], timeout: float) -> None:
    """Wait for a task to end; cancel it if it does not within `timeout`. Its failure was already logged."""
    if not task.done():
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            log.warning("%s did not stop within %.1f s; cancelling it", task.get_name(), timeout)
            task.cancel()
            await asyncio.wait([task], timeout=2)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not warn about it


async def run_controller(settings: Settings, announce: Callable[[str], None] = print) -> int:
    """`trm-sre run`: build, serve until SIGTERM/SIGINT, stop in order. Returns the exit code."""
    components = build_components(settings)
    return await Controller(components, announce).run()
