"""The HTTP API: where alerts, CloudEvents, reasoning requests and approvals come in.

Routes only check and translate: authenticate, bound the body, parse into the
typed models, call the pipeline, map its answer (or its refusal) onto HTTP.
The status codes follow what the senders do with them:

* Alertmanager retries only 5xx, never 429 (prometheus/alertmanager#2121), so
  "try again later" is always 503 + Retry-After, and 2xx is only sent after
  the pipeline has durably recorded the alerts.
* Malformed input is 400 with a message that says what is wrong (and which
  limit was exceeded), so a sender can fix it; a retry would not help.
* Knative treats a 200 with a CloudEvent as a reply and re-ingests it; we reply
  that way only to `io.homelab.reasoning.requested`, and answer everything
  else with 202 (never a reply).

`build_api(deps)` returns a FastAPI app; there is no module-level app object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from pydantic import ValidationError

from controller.client import (
    REMEDIATION_TASK,
    ReasonRequest,
    ReasonResult,
)
from controller.edge.approver_auth import ApproverAuth, Identity, NoApprover
from controller.edge.cloudevents_in import (
    ACCEPTED_TYPES,
    CloudEventRejected,
    InboundAlert,
    InboundLambdaResponse,
    InboundReasoning,
    parse_inbound,
    summarize_validation,
)
from controller.edge.config import BearerToken, Limits
from controller.edge.knative_auth import EventsAuthenticator, ReviewUnavailable
from controller.edge.limits import (
    LimitExceeded,
    Slots,
    check_alert_limits,
    check_payload_size,
    json_object,
    read_body,
    unavailable,
    unavailable_response,
)
from controller.edge.middleware import RequestMetrics, request_counter
from controller.edge.reasoning import answer_reasoning
from controller.edge.wire import (
    ERRORS,
    EVENTS_ERRORS,
    ApprovalRequest,
    ApprovalResponse,
    ErrorBody,
    EventAccepted,
    IngestResponse,
    Readiness,
    body_doc,
    document_hand_read_bodies,
)
from controller.engine.pipeline import Overloaded, StoreUnavailable
from controller.engine.trace_hooks import steps_in
from controller.observability import tracing
from controller.observability.logging import correlation
from controller.observability.metrics import REMEDIATION_TASK_TYPE
from controller.schemas.alerts import (
    AlertEvent,
    AlertmanagerPayload,
    split_payload,
)
from controller.schemas.decision import REASONING_COMPLETED, REASONING_FAILED

if TYPE_CHECKING:
    from controller.engine.pipeline import Pipeline
    from controller.observability.metrics import Metrics

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Dependencies the app is built from
# --------------------------------------------------------------------------


@dataclass
class ApiDeps:
    pipeline: Pipeline
    metrics: Metrics
    token: BearerToken
    limits: Limits
    # Reasons the process is not ready beyond the pipeline's own (policies not listed, model not loaded).
    readiness_checks: Callable[[], list[str]] = list
    ce_source: str = "/trm-sre"
    # `/events` only: Knative's OIDC tokens (TokenReview) besides the static token; None: the static token only.
    events_auth: EventsAuthenticator | None = None
    # `/approvals` only: the approver credential (never the webhook token); the default lets nobody approve.
    approvers: ApproverAuth = field(default_factory=NoApprover)


def _unauthorized() -> HTTPException:
    # One generic answer for a missing, wrong or refused token: nothing about which check failed.
    return HTTPException(status_code=401, detail="unauthorized", headers={"WWW-Authenticate": "Bearer"})


# --------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------


# The scheme only names where the token is read from; the token itself lives in ApiDeps.
_BEARER = HTTPBearer(auto_error=False, description="TRM_SRE_WEBHOOK_TOKEN (or --token-file)")


class _Routes:
    """The handlers of one app, sharing its dependencies; `build_api` registers them."""

    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        self.pipeline = deps.pipeline
        self.limits = deps.limits
        self.metrics = deps.metrics
        self.slots = Slots(deps.limits)

    # -- guards and error mapping

    async def authenticated(self, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:  # noqa: B008
        if not self.deps.token.configured:
            return  # loopback-only mode: the CLI refuses any other bind without a token
        presented = credentials.credentials if credentials is not None else None
        if not self.deps.token.check(presented):
            raise _unauthorized()

    async def events_authenticated(self, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:  # noqa: B008
        """`/events`: the static token, or (with --events-audience) a Knative OIDC token checked by TokenReview."""
        auth = self.deps.events_auth
        if auth is None:
            await self.authenticated(credentials)
            return
        presented = credentials.credentials if credentials is not None else None
        if presented is None:
            raise _unauthorized()
        if self.deps.token.configured and self.deps.token.check(presented):
            return
        try:
            accepted = await auth.authenticate(presented)
        except ReviewUnavailable:
            # Not a refusal: Knative retries a 5xx, and a 401 would drop the event.
            raise unavailable("cannot check the token now", self.limits.retry_after_s) from None
        if not accepted:
            raise _unauthorized()

    async def overloaded(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Overloaded)
        log.warning("overloaded, answering 503: %s", exc)
        return unavailable_response(f"overloaded ({exc})", exc.retry_after)

    async def store_unavailable(self, request: Request, exc: Exception) -> JSONResponse:
        log.error("store unavailable, answering 503: %s", exc)
        return unavailable_response("store unavailable", self.limits.retry_after_s)

    async def _body(self, request: Request) -> bytes:
        """The bounded body, under its deadline (413 / 408); read before any slot is taken."""
        return await read_body(request, self.limits.max_body_bytes, self.limits.body_timeout_s)

    async def _ingest(self, events: list[AlertEvent]) -> IngestResponse:
        result = await self.pipeline.ingest(events)  # Overloaded / StoreUnavailable -> 503 (handlers above)
        return IngestResponse(
            accepted=result.accepted,
            new_incidents=result.new_incidents,
            duplicates=result.duplicates,
            resolved=result.resolved,
        )

    # -- receive

    async def alertmanager(self, request: Request) -> IngestResponse:
        """Record every alert of the group durably, then answer 200; decisions follow asynchronously."""
        body = await self._body(request)  # before the slot: a stalled sender must not hold one
        async with self.slots.slot():
            doc = json_object(body, "Alertmanager payload")
            try:
                check_payload_size(doc, self.limits)
                if str(doc.get("version", "4")) != "4":
                    raise HTTPException(
                        status_code=400, detail=f'unsupported payload version {doc.get("version")!r}; expected "4"'
                    )
                payload = AlertmanagerPayload.model_validate(doc)
                events = split_payload(payload)
                check_alert_limits(events, self.limits)
            except ValidationError as exc:
                raise HTTPException(
                    status_code=400, detail=f"invalid Alertmanager payload: {summarize_validation(exc)}"
                ) from exc
            except LimitExceeded as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from exc
            with tracing.span(
                "receive alertmanager",
                parent=tracing.incoming_parent(_http_trace_context(request)),
                kind=SpanKind.SERVER,
                attributes={"trm_sre.alerts": len(events), "trm_sre.alert.source": "alertmanager"},
            ):
                result = await self._ingest(events)
            # DEBUG: at storm rates one line per webhook was a third of the log; the decision and delivery lines
            # that follow carry the audit trail, and agent_sre_alerts_received_total / dedup_hits count these.
            log.debug(
                "alertmanager payload recorded", extra={"group_key": payload.groupKey[:200], **result.model_dump()}
            )
            return result

    async def events(self, request: Request) -> Response:
        body = await self._body(request)
        async with self.slots.slot():
            try:
                inbound = parse_inbound(request.headers, body)
            except CloudEventRejected as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from exc
            envelope = inbound.envelope
            with (
                correlation(envelope.correlation_id or envelope.id),
                tracing.span(
                    f"receive {envelope.type}",
                    # The event's own context (distributed-tracing extension) first, then the request's.
                    parent=tracing.incoming_parent(
                        (envelope.traceparent, envelope.tracestate), _http_trace_context(request)
                    ),
                    kind=SpanKind.SERVER,
                    attributes={
                        "cloudevents.event_id": envelope.id,
                        "cloudevents.event_type": envelope.type,
                        "cloudevents.event_source": envelope.source,
                        "trm_sre.content_mode": envelope.mode,
                    },
                ),
            ):
                if isinstance(inbound, InboundAlert):
                    try:
                        check_alert_limits([inbound.event], self.limits)
                    except LimitExceeded as exc:
                        raise HTTPException(status_code=400, detail=str(exc)) from exc
                    result = await self._ingest([inbound.event])
                    return _accepted(inbound.envelope.type, inbound.envelope.id, result.model_dump())
                if isinstance(inbound, InboundReasoning):
                    return await self._reasoning_reply(inbound)
                return await self._lambda_response(inbound)

    async def _lambda_response(self, inbound: InboundLambdaResponse) -> Response:
        # The span is in the decision's trace when the response carries the trigger's traceparent.
        tracing.set_attributes({"trm_sre.decision.id": inbound.correlation_id, "trm_sre.success": inbound.success})
        recorded = await self.pipeline.record_lambda_response(inbound.correlation_id, inbound.success, inbound.data)
        if not recorded:
            # 2xx anyway: a retry would not make the id known, and Knative would retry a 4xx/5xx.
            log.warning("lambda response for an unknown correlation id", extra={"function": inbound.function_name})
        return _accepted(inbound.envelope.type, inbound.envelope.id, {"recorded": recorded})

    async def _reasoning_reply(self, inbound: InboundReasoning) -> Response:
        """Knative's reply convention: a 200 carrying a CloudEvent, which the broker re-ingests."""
        started = time.perf_counter()
        status = "completed"
        try:
            result = await answer_reasoning(self.pipeline, inbound.request, self.limits)
            ce_type, data = REASONING_COMPLETED, result.model_dump(mode="json")
        except HTTPException as exc:
            status = "failed"
            ce_type = REASONING_FAILED
            data = {"error": exc.detail, "conversation_id": inbound.request.conversation_id}
        self._observe_reasoning(inbound.request.task_type, status, started, result if status == "completed" else None)
        attributes = {
            "type": ce_type,
            "source": self.deps.ce_source,
            # Deterministic: a redelivered request gets the same reply id, so the broker can de-duplicate.
            "id": f"{inbound.envelope.id}-{status}"[:256],
            "datacontenttype": "application/json",
            "correlationid": inbound.envelope.correlation_id or inbound.envelope.id,
            **tracing.carrier(),  # traceparent/tracestate: the reply continues the request's trace
        }
        message = to_binary_event(CloudEvent(attributes=attributes, data=data))
        return Response(content=message.body, status_code=200, headers=message.headers, media_type=None)

    def _observe_reasoning(
        self, task_type: str, status: str, started: float, result: ReasonResult | None = None
    ) -> None:
        task = task_type if task_type == REMEDIATION_TASK else "other"  # bounded label values
        self.metrics.reasoning_requests.labels(task_type=task, status=status).inc()
        self.metrics.reasoning_duration.labels(task_type=task).observe(
            time.perf_counter() - started, tracing.exemplar()
        )
        for stage in result.reasoning_trace if result is not None else ():
            if stage.get("stage") == "trm":
                steps = steps_in(str(stage.get("reason", "")))
                self.metrics.observe_trm(steps, stage.get("confidence"), REMEDIATION_TASK_TYPE)

    # -- reason, approvals, decisions

    async def reason(self, request: Request) -> ReasonResult:
        body = await self._body(request)
        async with self.slots.slot():
            doc = json_object(body, "reason request")
            started = time.perf_counter()
            try:
                reason_request = ReasonRequest.model_validate(doc)
            except ValidationError as exc:
                raise HTTPException(
                    status_code=422, detail=f"invalid reason request: {summarize_validation(exc)}"
                ) from exc
            try:
                with tracing.span(
                    "reason",
                    parent=tracing.incoming_parent(_http_trace_context(request)),
                    kind=SpanKind.SERVER,
                    attributes={"trm_sre.task_type": reason_request.task_type[:100]},
                ):
                    result = await answer_reasoning(self.pipeline, reason_request, self.limits)
            except HTTPException:
                self._observe_reasoning(reason_request.task_type, "rejected", started)
                raise
            self._observe_reasoning(reason_request.task_type, "completed", started, result)
            return result

    async def approver(self, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> Identity:  # noqa: B008
        """`/approvals`: the approver credential (docs/api.md, "Approvals"); the webhook token is 403."""
        presented = credentials.credentials if credentials is not None else None
        if presented is None:
            raise _unauthorized()
        if self.deps.token.configured and self.deps.token.check(presented):
            raise HTTPException(status_code=403, detail="the webhook token cannot answer approvals")
        try:
            identity = await self.deps.approvers.authenticate(presented)
        except ReviewUnavailable:
            raise unavailable("cannot check the approver now", self.limits.retry_after_s) from None
        if identity is None:
            raise _unauthorized()
        return identity

    async def approve(self, approval_id: str, request: Request, identity: Identity) -> Response:
        body = await self._body(request)
        async with self.slots.slot():
            doc = json_object(body, "approval")
            try:
                body = ApprovalRequest.model_validate(doc)
            except ValidationError as exc:
                raise HTTPException(status_code=400, detail=f"invalid approval: {summarize_validation(exc)}") from exc
            approve_it = body.decision == "approve"
            correction = None
            if body.correction is not None:
                try:
                    correction = self.pipeline.check_correction(
                        (body.correction.function, dict(body.correction.parameters))
                    )
                except ValueError as exc:
                    raise HTTPException(status_code=400, detail=f"invalid correction: {exc}") from exc
            with correlation(approval_id):
                owner = await asyncio.to_thread(self.pipeline.approval_policy, approval_id)
                if owner is None:
                    raise HTTPException(status_code=404, detail=f"no approval {approval_id[:100]!r}")
                try:
                    allowed = await self.deps.approvers.authorize(identity, *owner)
                except ReviewUnavailable:
                    raise unavailable("cannot check the approver now", self.limits.retry_after_s) from None
                if not allowed:
                    raise HTTPException(status_code=403, detail="not allowed to approve this policy's remediations")
                state, why = await self.pipeline.answer_approval(approval_id, approve_it, identity.username, correction)
                log.info(
                    "approval resolved",
                    extra={"actor": identity.username, "decision": body.decision, "state": state},
                )
            if state == "unknown":
                raise HTTPException(status_code=404, detail=f"no approval {approval_id[:100]!r}")
            answer = ApprovalResponse(approval_id=approval_id, state=state, reason=why)
            wanted = "approved" if approve_it else "rejected"
            return JSONResponse(answer.model_dump(exclude_none=True), status_code=200 if state == wanted else 409)

    async def decision(self, decision_id: str) -> dict[str, Any]:
        found = await asyncio.to_thread(self.pipeline.get_decision, decision_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no decision {decision_id[:100]!r}")
        return found

    # -- probes and metrics

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        ok, reasons = self.pipeline.readiness()
        reasons = [*reasons, *self.deps.readiness_checks()]
        ready = ok and not reasons
        return JSONResponse(Readiness(ready=ready, reasons=reasons).model_dump(), status_code=200 if ready else 503)

    async def metrics_exposition(self, request: Request) -> Response:
        # OpenMetrics when the scraper asks for it: only that format carries exemplars (trace ids).
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            return Response(
                openmetrics.generate_latest(self.metrics.registry), media_type=openmetrics.CONTENT_TYPE_LATEST
            )
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def build_api(deps: ApiDeps) -> FastAPI:
    """The FastAPI app for one controller process: every route, its documentation and its guards."""
    app = FastAPI(
        title="trm-sre",
        summary="Turns Prometheus alerts into safe, automatic remediations.",
        version=_version(),
        docs_url=None,
        redoc_url=None,
    )
    r = _Routes(deps)
    auth = [Depends(r.authenticated)]
    events_auth = [Depends(r.events_authenticated)]
    app.add_exception_handler(Overloaded, r.overloaded)
    app.add_exception_handler(StoreUnavailable, r.store_unavailable)

    app.add_api_route(
        "/alertmanager",
        r.alertmanager,
        methods=["POST"],
        response_model=IngestResponse,
        dependencies=auth,
        responses=ERRORS,
        openapi_extra=body_doc(AlertmanagerPayload),
        summary="Alertmanager webhook (payload version 4)",
    )
    app.add_api_route(
        "/events",
        r.events,
        methods=["POST"],
        dependencies=events_auth,
        status_code=202,
        responses={
            200: {"description": f"{REASONING_COMPLETED} / {REASONING_FAILED} reply (binary mode)"},
            202: {"model": EventAccepted, "description": "alert recorded, or lambda response recorded"},
            **EVENTS_ERRORS,
        },
        summary="CloudEvents (binary or structured mode)",
        description="Accepted types: " + ", ".join(ACCEPTED_TYPES) + ". Authentication: the bearer token, or with "
        "--events-audience a Knative Eventing OIDC token (a ServiceAccount token for that audience, checked with "
        "the TokenReview API).",
    )
    app.add_api_route(
        "/reason",
        r.reason,
        methods=["POST"],
        response_model=ReasonResult,
        dependencies=auth,
        responses={
            422: {"model": ErrorBody, "description": "not a remediation request, or no alert in context"},
            **ERRORS,
        },
        openapi_extra=body_doc(ReasonRequest),
        summary="Which remediation fits this alert? (no side effects)",
    )

    async def approve(approval_id: str, request: Request, identity: Identity = Depends(r.approver)) -> Response:  # noqa: B008
        return await r.approve(approval_id, request, identity)

    app.add_api_route(
        "/approvals/{approval_id}",
        approve,
        methods=["POST"],
        response_model=ApprovalResponse,
        responses={
            403: {"model": ErrorBody, "description": "the webhook token, or an approver not allowed for this policy"},
            404: {"model": ErrorBody, "description": "no such approval"},
            409: {"model": ApprovalResponse, "description": "already resolved otherwise, expired or cancelled"},
            **ERRORS,
        },
        openapi_extra=body_doc(ApprovalRequest),
        summary="Approve or reject a pending remediation",
    )
    app.add_api_route(
        "/decisions/{decision_id}",
        r.decision,
        methods=["GET"],
        dependencies=auth,
        responses={404: {"model": ErrorBody, "description": "no such decision"}, 401: ERRORS[401]},
        summary="A decision with its stage-by-stage trace and its delivery, approval and outcome history",
    )
    app.add_api_route("/healthz", r.healthz, methods=["GET"], summary="Liveness: the process answers")
    app.add_api_route(
        "/readyz",
        r.readyz,
        methods=["GET"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready; reasons say why"}},
        summary="Readiness: store open, policies loaded, model loaded (or disabled)",
    )
    app.add_api_route(
        "/metrics", r.metrics_exposition, methods=["GET"], response_class=Response, summary="Prometheus metrics"
    )

    document_hand_read_bodies(app, [AlertmanagerPayload, ReasonRequest, ApprovalRequest])
    app.add_middleware(RequestMetrics, count=request_counter(deps.metrics))
    return app


def _http_trace_context(request: Request) -> tuple[str | None, str | None]:
    return request.headers.get("traceparent"), request.headers.get("tracestate")


def _accepted(ce_type: str, ce_id: str, result: dict[str, Any]) -> JSONResponse:
    return JSONResponse(EventAccepted(type=ce_type, id=ce_id, result=result).model_dump(), status_code=202)


def _version() -> str:
    from controller import __version__

    return __version__
