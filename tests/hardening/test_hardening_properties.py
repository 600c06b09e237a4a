"""Property tests on the three parsers that read untrusted input: any input → a valid result or a clean rejection.

- Alertmanager webhook bodies (`controller/schemas/alerts.py`, plus the API's
  limit checks): a payload validates into one event per alert, each with a
  computable, deterministic incident key and a body the store can write, or
  it is refused with a pydantic `ValidationError` / `LimitExceeded`.
- CloudEvents (`controller/edge/cloudevents_in.py`): any headers and body → a typed
  inbound event or `CloudEventRejected`.
- Stage output (`controller/decision/parsing.py`): decoded tool-call objects,
  round trips, and the parser → validator → chain path. tests/unit/decision
  already throws arbitrary *text* at `parse_call`; these cover what it does not.

"Clean" means exactly the documented exception type: anything else (a
KeyError, an OverflowError, a UnicodeEncodeError) would be a 500 in the API or
a dead worker in the pipeline.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.decision import StageClients, decide
from controller.decision.parsing import (
    MAX_DEPTH,
    ParseError,
    _depth,
    call_from_object,
    parse_call,
)
from controller.decision.validation import validate_proposal
from controller.edge.cloudevents_in import (
    ACCEPTED_TYPES,
    CloudEventRejected,
    InboundAlert,
    InboundLambdaResponse,
    InboundReasoning,
    parse_inbound,
)
from controller.edge.config import Limits
from controller.edge.limits import LimitExceeded, check_alert_limits, check_payload_size
from controller.schemas.alerts import (
    ALERT_FIRED,
    ALERT_RESOLVED,
    AlertEvent,
    AlertmanagerPayload,
    split_payload,
)
from controller.schemas.decision import StageOutcome
from controller.schemas.policy import Policy, PolicySpec
from runbooks import InvalidCall, default_catalog
from tests.unit.decision.helpers import assert_call_or_parse_error

CATALOG = default_catalog()
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# ----------------------------------------------------------------------------------- strategies

# Any text, lone surrogates included: `json.loads` happily returns them from "\ud800" escapes.
any_text = st.text(st.characters(codec=None), max_size=24)
# What can reach a decision: the Alert model refuses lone surrogates (the edge answers 400), so a
# property about decisions draws from valid Unicode; `any_text` keeps probing the refusal itself.
unicode_text = st.text(st.characters(codec="utf-8"), max_size=24)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=25,
)


def _offsets() -> st.SearchStrategy[timezone]:
    return st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


# Timestamps as Alertmanager writes them, and as a broken or hostile sender might: the ends of the
# calendar with extreme offsets, epoch numbers, naive times, garbage.
timestamps = st.one_of(
    st.datetimes(timezones=_offsets()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "9999-12-31T23:59:59Z",
            "2026-05-01T10:00:00Z",
            "2026-05-01T10:00:00.123456789Z",
            "2026-02-30T00:00:00Z",
            "",
            "now",
            "1e3",
        ]
    ),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    json_values,
)
label_maps = st.dictionaries(any_text, any_text, max_size=6) | json_values
alert_objects = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]) | json_values},
    optional={
        "labels": label_maps,
        "annotations": label_maps,
        "startsAt": timestamps,
        "endsAt": timestamps,
        "generatorURL": any_text | json_values,
        "fingerprint": any_text | json_values,
        "extraField": json_values,
    },
)
payloads = st.fixed_dictionaries(
    {"alerts": st.lists(alert_objects, max_size=4) | json_values},
    optional={
        "version": st.sampled_from(["4", 4, "3"]) | json_values,
        "groupKey": any_text | json_values,
        "status": st.sampled_from(["firing", "resolved"]) | json_values,
        "receiver": any_text | json_values,
        "groupLabels": label_maps,
        "commonLabels": label_maps,
        "commonAnnotations": label_maps,
        "externalURL": any_text,
        "truncatedAlerts": st.integers() | json_values,
    },
)

SMALL_LIMITS = Limits(
    max_alerts=3, max_labels=4, max_name_length=8, max_label_value_length=12, max_annotation_value_length=16
)


def _wire(doc: Any) -> Any:
    """What the API's json.loads makes of the body a sender would post for `doc`."""
    return json.loads(json.dumps(doc))


def _storable(text: str) -> None:
    text.encode("utf-8")  # SQLite and the sink both need UTF-8; a lone surrogate would raise here


def _check_events(doc: dict[str, Any], events: list[AlertEvent]) -> None:
    assert len(events) == len(doc["alerts"])
    for raw, event in zip(doc["alerts"], events, strict=True):
        assert event.alert.status == raw["status"]  # each alert by its own status, never the group's
        key = event.incident_key
        assert key == split_payload(AlertmanagerPayload.model_validate(doc))[events.index(event)].incident_key
        assert key.startswith(event.fingerprint + "@")
        _storable(key)
        _storable(json.dumps(event.as_alert_dict(), ensure_ascii=False))
        _storable(json.dumps(event.merged_annotations(), ensure_ascii=False))
        _storable(event.group_key + event.receiver)
        assert event.cloudevent_type in (ALERT_FIRED, ALERT_RESOLVED)


def _alertmanager_outcome(doc: Any, limits: Limits = SMALL_LIMITS) -> str:
    """Run the API's parsing steps; "ok" or "rejected". Any other exception fails the property."""
    if not isinstance(doc, dict):
        return "rejected"  # the API's _json_object answers 400 before any model sees it
    try:
        check_payload_size(doc, limits)
        payload = AlertmanagerPayload.model_validate(doc)
        events = split_payload(payload)
        check_alert_limits(events, limits)
    except (ValidationError, LimitExceeded):
        return "rejected"
    _check_events(doc, events)
    return "ok"


# ----------------------------------------------------------------------------------- Alertmanager


@PROPERTY
@given(json_values)
def test_any_json_body_is_an_alertmanager_payload_or_a_clean_rejection(doc: Any) -> None:
    _alertmanager_outcome(_wire(doc))


@PROPERTY
@given(payloads)
def test_near_valid_payloads_validate_into_storable_events_or_are_rejected(doc: dict[str, Any]) -> None:
    _alertmanager_outcome(_wire(doc), Limits())
    _alertmanager_outcome(_wire(doc), SMALL_LIMITS)


@PROPERTY
@given(
    st.lists(
        st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=6), st.text(max_size=10), max_size=5),
        min_size=1,
        max_size=3,
    ),
    st.datetimes(timezones=_offsets(), min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
)
def test_valid_alerts_always_parse_and_their_incident_key_ignores_the_offset(
    label_sets: list[dict[str, str]], starts: datetime
) -> None:
    doc = {
        "version": "4",
        "alerts": [{"status": "firing", "labels": labels, "startsAt": starts.isoformat()} for labels in label_sets],
    }
    assert _alertmanager_outcome(doc, Limits()) == "ok"
    in_utc = {**doc, "alerts": [{**a, "startsAt": starts.astimezone(UTC).isoformat()} for a in doc["alerts"]]}
    keys = [e.incident_key for e in split_payload(AlertmanagerPayload.model_validate(doc))]
    assert keys == [e.incident_key for e in split_payload(AlertmanagerPayload.model_validate(in_utc))]


@pytest.mark.parametrize("starts_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_start_time_outside_the_utc_calendar_is_rejected_not_a_crash(starts_at: str) -> None:
    doc = {"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": starts_at}]}
    assert _alertmanager_outcome(doc) == "rejected"


@pytest.mark.parametrize("where", ["label-value", "label-name", "annotation", "fingerprint", "common", "receiver"])
def test_text_that_is_not_unicode_is_rejected_not_a_crash(where: str) -> None:
    bad = json.loads('"x\\ud800"')  # a lone surrogate, as json.loads decodes the escape
    alert: dict[str, Any] = {"status": "firing", "labels": {"alertname": "A"}, "startsAt": "2026-05-01T10:00:00Z"}
    doc: dict[str, Any] = {"alerts": [alert]}
    if where == "label-value":
        alert["labels"]["pod"] = bad
    elif where == "label-name":
        alert["labels"][bad] = "x"
    elif where == "annotation":
        alert["annotations"] = {"summary": bad}
    elif where == "fingerprint":
        alert["fingerprint"] = bad
    elif where == "common":
        doc["commonAnnotations"] = {"summary": bad}
    else:
        doc["receiver"] = bad
    assert _alertmanager_outcome(doc, Limits()) == "rejected"


# ----------------------------------------------------------------------------------- CloudEvents

ce_types = st.sampled_from(ACCEPTED_TYPES) | any_text
ce_header_names = st.sampled_from(
    [
        "ce-specversion",
        "ce-id",
        "ce-source",
        "ce-type",
        "ce-time",
        "ce-subject",
        "ce-correlationid",
        "ce-datacontenttype",
        "ce-dataschema",
        "content-type",
        "ce-Extra",
    ]
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
content_types = st.sampled_from(
    [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "text/plain",
        "application/octet-stream",
        "",
        "application/json; charset=utf-8",
    ]
)


@st.composite
def binary_requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    headers = {
        "ce-specversion": draw(st.sampled_from(["1.0", "0.3", "2.0", ""]) | header_values),
        "ce-id": draw(header_values),
        "ce-source": draw(header_values),
        "ce-type": draw(ce_types.filter(lambda t: t.isprintable() and t.isascii())),
        "content-type": draw(content_types),
    }
    if draw(st.booleans()):
        headers["ce-time"] = draw(
            st.sampled_from(["2026-05-01T10:00:00Z", "yesterday", "0001-01-01T00:00:00+05:00"]) | header_values
        )
    headers.update(draw(st.dictionaries(ce_header_names, header_values, max_size=3)))
    data = draw(
        st.one_of(
            json_values.map(lambda v: json.dumps(v).encode()),
            alert_objects.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=64),
        )
    )
    return headers, data


@st.composite
def structured_requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    doc = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "specversion": st.sampled_from(["1.0", "0.3"]) | json_values,
                "id": any_text | json_values,
                "source": any_text | json_values,
                "type": ce_types | json_values,
                "time": timestamps,
                "datacontenttype": content_types | json_values,
                "correlationid": any_text | json_values,
                "data": alert_objects | json_values,
                "data_base64": any_text,
            },
        )
    )
    body = draw(st.one_of(st.just(json.dumps(doc).encode()), st.binary(max_size=64)))
    return {
        "content-type": draw(
            st.sampled_from(["application/cloudevents+json", "application/cloudevents+json; charset=utf-8"])
        )
    }, body


def _inbound_outcome(headers: dict[str, str], body: bytes) -> str:
    try:
        inbound = parse_inbound(headers, body)
    except CloudEventRejected as exc:
        assert str(exc)  # says why
        return "rejected"
    assert isinstance(inbound, InboundAlert | InboundReasoning | InboundLambdaResponse)
    assert inbound.envelope.type in ACCEPTED_TYPES
    if isinstance(inbound, InboundAlert):
        event = inbound.event
        _storable(event.incident_key)
        _storable(json.dumps(event.as_alert_dict(), ensure_ascii=False))
        _storable(json.dumps(event.merged_annotations(), ensure_ascii=False))
        assert event.alert.alertname
        assert event.alert.status == ("resolved" if inbound.envelope.type == ALERT_RESOLVED else "firing")
    if isinstance(inbound, InboundLambdaResponse):
        assert isinstance(inbound.correlation_id, str) and inbound.correlation_id
    return "ok"


@PROPERTY
@given(binary_requests())
def test_any_binary_mode_request_is_a_typed_event_or_a_clean_rejection(request: tuple[dict[str, str], bytes]) -> None:
    _inbound_outcome(*request)


@PROPERTY
@given(structured_requests())
def test_any_structured_mode_request_is_a_typed_event_or_a_clean_rejection(
    request: tuple[dict[str, str], bytes],
) -> None:
    _inbound_outcome(*request)


@PROPERTY
@given(alert_objects, st.sampled_from([ALERT_FIRED, ALERT_RESOLVED]), st.sampled_from(["binary", "structured"]))
def test_alert_events_with_any_alert_data_are_ingestible_or_rejected(
    data: dict[str, Any], ce_type: str, mode: str
) -> None:
    attributes = {"specversion": "1.0", "id": "e-1", "source": "/prometheus", "type": ce_type}
    if mode == "binary":
        headers = {f"ce-{k}": v for k, v in attributes.items()} | {"content-type": "application/json"}
        body = json.dumps(data).encode()
    else:
        headers = {"content-type": "application/cloudevents+json"}
        body = json.dumps({**attributes, "datacontenttype": "application/json", "data": data}).encode()
    _inbound_outcome(headers, body)


# ----------------------------------------------------------------------------------- stage output

ABSTAIN_WORDS = {"", "null", "none", "no", "abstain", "no_automated_remediation", "no-automated-remediation"}
FUNCTION_KEYS = ["lambda_function", "function", "name", "function_name", "tool"]
PARAMETER_KEYS = ["parameters", "arguments", "args", "params"]
catalog_or_hostile = st.sampled_from(list(CATALOG.names)) | st.text(max_size=30)
parameter_values = st.text(max_size=40) | st.integers(-5, 10**6) | st.booleans() | st.none() | json_values
parameter_maps = st.dictionaries(
    st.sampled_from(["name", "namespace", "type", "replicas", "selector"]) | st.text(max_size=8),
    parameter_values,
    max_size=4,
)


def _policy(scope: tuple[str, ...] = ("shop", "web")) -> Policy:
    spec = PolicySpec.model_validate(
        {"allowedFunctions": list(CATALOG.names), "targetNamespaces": list(scope), "chain": [{"staticAnnotation": {}}]}
    )
    return Policy(namespace="ops", name="props", generation=1, spec=spec)


POLICY = _policy()


@PROPERTY
@given(json_values)
def test_any_decoded_tool_call_is_a_call_or_a_parse_error(value: Any) -> None:
    assert_call_or_parse_error(call_from_object, value)


@PROPERTY
@given(
    st.sampled_from(FUNCTION_KEYS),
    st.sampled_from(PARAMETER_KEYS),
    catalog_or_hostile,
    parameter_maps,
    st.booleans(),
    st.sampled_from(["plain", "fenced", "prose"]),
)
def test_a_call_round_trips_through_any_accepted_shape(
    function_key: str, parameter_key: str, function: str, parameters: dict[str, Any], as_string: bool, wrapping: str
) -> None:
    raw_parameters: Any = json.dumps(parameters) if as_string else parameters
    body = json.dumps({function_key: function, parameter_key: raw_parameters})
    text = {"plain": body, "fenced": f"```json\n{body}\n```", "prose": f"I propose {body} as the fix."}[wrapping]
    try:
        parsed = parse_call(text)
    except ParseError:
        # The only reason to refuse a well-formed call: parameters nested beyond the parser's bound.
        assert _depth(parameters) > MAX_DEPTH - 2, text
        return
    if parsed.abstained:
        assert function.strip().strip("`'\".").strip().lower() in ABSTAIN_WORDS
        return
    assert parsed.function == function.strip()
    assert parsed.parameters == parameters


@PROPERTY
@given(catalog_or_hostile, parameter_maps | json_values, st.sampled_from([("shop", "web"), ("*",), ("shop",)]))
def test_the_validator_accepts_only_catalog_clean_in_scope_calls_and_never_raises(
    function: str, parameters: Any, scope: tuple[str, ...]
) -> None:
    verdict = validate_proposal(function, parameters, _policy(scope), CATALOG)
    if not verdict.accepted:
        assert verdict.outcome in (StageOutcome.INVALID, StageOutcome.DISALLOWED) and verdict.reason
        return
    try:
        clean = CATALOG.validate_call(function, parameters)
    except InvalidCall:  # pragma: no cover - the property fails below with the reason
        pytest.fail(f"accepted {function} {parameters!r} which the catalog refuses")
    assert verdict.parameters == clean
    namespace = clean.get("namespace")
    assert namespace is None or namespace in scope or "*" in scope


@PROPERTY
@given(
    st.one_of(unicode_text, json_values.map(json.dumps), parameter_maps.map(json.dumps)),
    st.one_of(unicode_text, catalog_or_hostile),
    st.dictionaries(
        st.sampled_from(["pod", "namespace", "deployment", "name", "alertname"]), st.text(max_size=20), max_size=4
    ),
)
async def test_any_static_annotation_is_escalated_or_becomes_a_clean_in_scope_call(
    parameters_text: str, function: str, labels: dict[str, str]
) -> None:
    from controller.schemas.alerts import Alert

    alert = Alert.model_validate(
        {
            "status": "firing",
            "startsAt": "2026-05-01T10:00:00Z",
            "labels": {"alertname": "Prop", **labels},
            "annotations": {"lambda_function": function, "lambda_parameters": parameters_text},
        }
    )
    decision = await decide(AlertEvent(alert=alert), POLICY, CATALOG, StageClients())
    assert decision.outcome in ("trigger", "escalate")
    if decision.outcome == "trigger":
        assert decision.function in CATALOG.names
        assert decision.parameters == CATALOG.validate_call(decision.function, decision.parameters)
        assert decision.parameters.get("namespace") in ("shop", "web")


@pytest.mark.parametrize("time", [[1], ["1"] * 11, {"t": 1}, 5, 1.5, True, "yesterday", "0001-01-01T00:00:00+05:00"])
@pytest.mark.parametrize("ce_type", [ALERT_FIRED, "io.knative.lambda.response.success"])
def test_a_structured_event_whose_time_is_not_a_timestamp_is_rejected_not_a_crash(time: Any, ce_type: str) -> None:
    doc = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/p",
        "type": ce_type,
        "time": time,
        "data": {"labels": {"alertname": "A"}, "correlationId": "c-1"},
    }
    headers = {"content-type": "application/cloudevents+json"}
    assert _inbound_outcome(headers, json.dumps(doc).encode()) in ("ok", "rejected")


@pytest.mark.parametrize("time", ["yesterday", "0001-01-01T00:00:00+05:00", "2026-13-01T00:00:00Z"])
def test_a_binary_event_whose_time_is_not_a_timestamp_is_rejected_not_a_crash(time: str) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "/p",
        "ce-type": ALERT_FIRED,
        "ce-time": time,
        "content-type": "application/json",
    }
    assert _inbound_outcome(headers, json.dumps({"labels": {"alertname": "A"}}).encode()) in ("ok", "rejected")
