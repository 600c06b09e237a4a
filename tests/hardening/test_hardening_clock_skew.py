"""Alerts with skewed clocks: accepted or rejected by a clear rule, never a crash, the incident identity stable.

The rule (documented here, enforced by `controller/schemas/alerts.py`): the
controller never compares an alert's times with its own clock. An incident is
`(fingerprint, startsAt)` with startsAt normalised to UTC, so:

- a startsAt in the future, or long past, is accepted as the sender's fact;
- an endsAt before startsAt is accepted (Alertmanager's own clock is the one
  that counts; endsAt does not identify anything);
- the same instant written with another offset, or without one (taken as
  UTC), is the same incident;
- a startsAt that cannot be written in UTC (year 1 with a positive offset,
  year 9999 with a negative one) is refused with 400 naming the field;
- a resolved notification whose endsAt precedes its startsAt still resolves
  its incident.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.hardening.support import RULES_POLICY, StartServer, write_policy
from tests.pipeline.sink import CaptureSink

TOKEN = "clock-token"


def _payload(pod: str, starts: Any, ends: Any = "0001-01-01T00:00:00Z", status: str = "firing") -> dict[str, Any]:
    alert = {
        "status": status,
        "startsAt": starts,
        "endsAt": ends,
        "annotations": {},
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": pod},
    }
    return {"version": "4", "status": status, "receiver": "trm-sre", "alerts": [alert]}


@pytest.fixture
async def server(controller: StartServer, sink: CaptureSink, tmp_path: Any) -> Any:
    return await controller(token=TOKEN, sink=sink.url, policies=[write_policy(tmp_path / "p", RULES_POLICY)])


ACCEPTED = [
    ("future", "2099-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ("far-future", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"),
    ("epoch", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ("zero-time", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ("ends-before-starts", "2026-05-01T10:00:00Z", "2026-05-01T09:00:00Z"),
    ("ends-far-before", "2026-05-01T10:00:00Z", "1990-01-01T00:00:00Z"),
    ("nanoseconds", "2026-05-01T10:00:00.123456789Z", "0001-01-01T00:00:00Z"),
    ("offset", "2026-05-01T12:00:00+02:00", "0001-01-01T00:00:00Z"),
]


@pytest.mark.parametrize(("case", "starts", "ends"), ACCEPTED, ids=[c for c, _, _ in ACCEPTED])
async def test_skewed_times_are_accepted_and_the_incident_is_triggered_once(
    server: Any, sink: CaptureSink, case: str, starts: str, ends: str
) -> None:
    async with server.client() as http:
        first = await http.post("/alertmanager", json=_payload(f"cart-{case}", starts, ends))
        again = await http.post("/alertmanager", json=_payload(f"cart-{case}", starts, ends))
    assert first.status_code == 200, first.text
    assert first.json()["new_incidents"] == 1
    assert again.json() == {"accepted": 1, "new_incidents": 0, "duplicates": 1, "resolved": 0}
    await server.idle()
    assert len(sink.accepted_ids(LAMBDA_TRIGGER)) == 1


async def test_one_instant_in_any_notation_is_one_incident(server: Any, sink: CaptureSink) -> None:
    notations = [
        "2026-05-01T10:00:00Z",
        "2026-05-01T10:00:00+00:00",
        "2026-05-01T12:00:00+02:00",
        "2026-05-01T04:30:00-05:30",
        "2026-05-01T10:00:00",
        "2026-05-01T10:00:00.000000Z",
    ]
    async with server.client() as http:
        answers = [await http.post("/alertmanager", json=_payload("cart-instant", n)) for n in notations]
    assert [a.json()["new_incidents"] for a in answers] == [1, 0, 0, 0, 0, 0]
    await server.idle()
    assert len(sink.accepted_ids(LAMBDA_TRIGGER)) == 1


async def test_a_new_start_time_is_a_new_incident_however_close(server: Any, sink: CaptureSink) -> None:
    async with server.client() as http:
        a = await http.post("/alertmanager", json=_payload("cart-close", "2026-05-01T10:00:00.000001Z"))
        b = await http.post("/alertmanager", json=_payload("cart-close", "2026-05-01T10:00:00.000002Z"))
    assert (a.json()["new_incidents"], b.json()["new_incidents"]) == (1, 1)


@pytest.mark.parametrize("starts", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_a_start_time_that_cannot_be_written_in_utc_is_refused_with_400(server: Any, starts: str) -> None:
    async with server.client() as http:
        response = await http.post("/alertmanager", json=_payload("cart-overflow", starts))
    assert response.status_code == 400
    assert "startsAt" in response.json()["detail"] and "range" in response.json()["detail"]
    assert server.rows("alerts") == 0


@pytest.mark.parametrize("starts", ["yesterday", "", "2026-13-01T00:00:00Z", "2026-05-01T25:00:00Z", None, [], {}])
async def test_a_start_time_that_is_not_a_time_is_refused_with_400(server: Any, starts: Any) -> None:
    async with server.client() as http:
        response = await http.post("/alertmanager", json=_payload("cart-bad", starts))
    assert response.status_code == 400
    assert "startsAt" in response.json()["detail"]


async def test_a_resolution_with_endsat_before_startsat_resolves_the_same_incident(
    server: Any, sink: CaptureSink
) -> None:
    async with server.client() as http:
        fired = await http.post("/alertmanager", json=_payload("cart-r", "2026-05-01T10:00:00Z"))
        await server.idle()  # decided and triggered first (an incident resolved before its decision is not acted on)
        resolved = await http.post(
            "/alertmanager", json=_payload("cart-r", "2026-05-01T10:00:00Z", "2026-05-01T08:00:00Z", status="resolved")
        )
        await server.idle()
        (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
        decision = (await http.get(f"/decisions/{trigger.data()['correlation_id']}")).json()
    assert fired.json()["new_incidents"] == 1
    assert resolved.json() == {"accepted": 1, "new_incidents": 0, "duplicates": 0, "resolved": 1}
    assert decision["incident"]["resolved"] is True


async def test_a_cloudevent_without_startsat_takes_its_time_and_is_stable_across_retries(
    server: Any, sink: CaptureSink
) -> None:
    """The CloudEvent's own (skewed) `time` stands in for startsAt, so a redelivery is the same incident."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "skew-1",
        "ce-source": "/prometheus",
        "ce-type": "io.homelab.prometheus.alert.fired",
        "ce-time": "2099-06-01T00:00:00Z",
        "content-type": "application/json",
    }
    data = {"labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-ce"}}
    async with server.client() as http:
        first = await http.post("/events", json=data, headers=headers)
        again = await http.post("/events", json=data, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["result"]["new_incidents"] == 1
    assert again.json()["result"]["duplicates"] == 1
    await server.idle()
    assert len(sink.accepted_ids(LAMBDA_TRIGGER)) == 1
