"""The API's wire models and its OpenAPI document.

Bodies the routes read by hand (bounded, see `controller.edge.limits`) are
not FastAPI parameters, so their schemas are added to the OpenAPI components
here, and each route's documented errors come from `ERRORS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, model_validator


class IngestResponse(BaseModel):
    accepted: int = Field(description="alerts durably recorded by this request")
    new_incidents: int = Field(description="alerts that opened an incident not seen before")
    duplicates: int = Field(description="alerts already recorded (Alertmanager re-sends whole groups)")
    resolved: int = Field(description="resolved alerts recorded against their incident")


class EventAccepted(BaseModel):
    type: str
    id: str
    result: dict[str, Any]


class Correction(BaseModel):
    """With a rejection: what the right call was. A label for shadow mode and feedback, never an action."""

    model_config = ConfigDict(extra="forbid")

    function: str | None = Field(
        ..., max_length=128, description="the function that should have been called; null: no action was right"
    )
    parameters: dict[str, str | int] = Field(
        default_factory=dict, max_length=32, description="its parameters, checked against the runbook's schema"
    )


class ApprovalRequest(BaseModel):
    decision: Literal["approve", "reject"]
    correction: Correction | None = Field(
        None, description="only with `reject`: the right call (or none), recorded as ground truth"
    )
    actor: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="ignored for the record (the authenticated identity is recorded); kept for old clients",
    )

    @model_validator(mode="after")
    def _correction_only_with_reject(self) -> ApprovalRequest:
        if self.correction is not None and self.decision != "reject":
            raise ValueError("a correction goes with a rejection")
        return self


class ApprovalResponse(BaseModel):
    approval_id: str
    state: str
    reason: str | None = Field(
        None,
        description="why an approval was cancelled (the policy, the cooldown or the storm breaker no longer allow it)",
    )


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]


class ErrorBody(BaseModel):
    detail: str


def body_doc(model: type[BaseModel], content_types: Iterable[str] = ("application/json",)) -> dict[str, Any]:
    """openapi_extra for a body read by hand (bounded), so the schema still documents it."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {ct: {"schema": ref} for ct in content_types}}}


ERRORS = {
    400: {"model": ErrorBody, "description": "malformed, or over a limit (the message names it)"},
    401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
    413: {"model": ErrorBody, "description": "body over the size limit"},
    503: {"model": ErrorBody, "description": "overloaded or the store is unavailable; retry after Retry-After"},
}

EVENTS_ERRORS = {
    **ERRORS,
    401: {
        "model": ErrorBody,
        "description": "missing or wrong bearer token (static, or a Knative OIDC token when --events-audience is set)",
    },
    503: {
        "model": ErrorBody,
        "description": "overloaded, the store is unavailable, or the apiserver cannot check "
        "a Knative token (TokenReview); retry after Retry-After",
    },
}


def document_hand_read_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the schemas of bodies we read ourselves (bounded) to the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
