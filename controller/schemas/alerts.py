"""Alerts as they arrive: the Alertmanager webhook (payload version 4) and one alert event per alert.

Alertmanager sends a whole group per notification and re-sends it every
group_interval / repeat_interval; we split it into one `AlertEvent` per alert,
each with **its own** status (the system we replace used the group's status),
and identify an incident by `(fingerprint, startsAt)`.
Unknown fields are ignored: Alertmanager added `notification_reason` and
`routeLabels` in 2026 releases and will add more.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# Alertmanager zeroes endsAt on alerts that have not resolved yet.
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)

ALERT_FIRED = "io.homelab.prometheus.alert.fired"
ALERT_RESOLVED = "io.homelab.prometheus.alert.resolved"


def _unicode_text(value: str) -> str:
    """Refuse strings that are not Unicode text (lone surrogates, which `json.loads` makes of "\\ud800").

    Such a string validates as `str` but cannot be encoded as UTF-8: the
    fingerprint, the store and the sink would each fail on it later, as a 500
    or a dead worker. Refused here it is a 400 that names the field.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (it holds a lone surrogate)") from None
    return value


#: A string that can be encoded as UTF-8: every text field of an alert reaches the store and the sink.
Text = Annotated[str, AfterValidator(_unicode_text)]
TextMap = dict[Text, Text]

# Sender-chosen identity fields are bounded (issue #13.9): Alertmanager's own values are far shorter.
MAX_URL_LENGTH = 8_192
MAX_GROUP_KEY_LENGTH = 8_192
MAX_RECEIVER_LENGTH = 1_024
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def _fingerprint_format(value: str) -> str:
    """Alertmanager's fingerprint is `%016x` of the labels' FNV-1a 64; anything else is refused."""
    if value and not _FINGERPRINT.fullmatch(value):
        raise ValueError("must be Alertmanager's fingerprint: 16 lowercase hexadecimal digits (or absent)")
    return value


Fingerprint = Annotated[str, AfterValidator(_fingerprint_format)]


def _fnv1a_64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value ^= byte
        value = (value * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def label_fingerprint(labels: dict[str, str]) -> str:
    """Prometheus' `Labels.Fingerprint()`: FNV-1a 64 over sorted names and values, 0xFF separated.

    Used when a producer (a CloudEvent from elsewhere) sends no fingerprint, so the
    same label set still maps to the same incident as Alertmanager's would.
    """
    parts = bytearray()
    for name in sorted(labels):
        parts += name.encode() + b"\xff" + labels[name].encode() + b"\xff"
    return f"{_fnv1a_64(bytes(parts)):016x}"


class Alert(BaseModel):
    """One alert object of the Alertmanager webhook payload."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: TextMap = Field(default_factory=dict)
    annotations: TextMap = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime = ZERO_TIME
    generatorURL: Annotated[Text, Field(max_length=MAX_URL_LENGTH)] = ""
    fingerprint: Fingerprint = ""

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # Naive timestamps are taken as UTC so incident keys never depend on the host's zone.
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        try:
            value.astimezone(UTC)  # the incident key is written in UTC
        except OverflowError:
            raise ValueError("is outside the range of UTC timestamps (years 1 to 9999 in UTC)") from None
        return value

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    def effective_fingerprint(self) -> str:
        """The incident's fingerprint, always derived from the labels, as Alertmanager derives it.

        The sender's `fingerprint` is checked for its format only: taken at its
        word, one sender could reuse another alert's fingerprint (and startsAt)
        and take over that incident. Alertmanager's own value is this one.
        """
        return self._derived_fingerprint

    @cached_property
    def _derived_fingerprint(self) -> str:
        return label_fingerprint(self.labels)


class AlertmanagerPayload(BaseModel):
    """The webhook body (`webhook.Message`), version "4"."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field("4", max_length=16)
    groupKey: Annotated[Text, Field(max_length=MAX_GROUP_KEY_LENGTH)] = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"] = "firing"
    receiver: Annotated[Text, Field(max_length=MAX_RECEIVER_LENGTH)] = ""
    groupLabels: TextMap = Field(default_factory=dict)
    commonLabels: TextMap = Field(default_factory=dict)
    commonAnnotations: TextMap = Field(default_factory=dict)
    externalURL: Annotated[Text, Field(max_length=MAX_URL_LENGTH)] = ""
    alerts: list[Alert]


class AlertEvent(BaseModel):
    """One alert with the context the decision needs; what `io.homelab.prometheus.alert.*` carries."""

    model_config = ConfigDict(extra="ignore")

    alert: Alert
    receiver: Annotated[Text, Field(max_length=MAX_RECEIVER_LENGTH)] = ""
    group_key: Annotated[Text, Field(max_length=MAX_GROUP_KEY_LENGTH)] = ""
    common_annotations: TextMap = Field(default_factory=dict)
    source: Literal["alertmanager", "cloudevents", "reason", "cli"] = "alertmanager"

    @property
    def fingerprint(self) -> str:
        return self.alert.effective_fingerprint()

    @property
    def incident_key(self) -> str:
        """`(fingerprint, startsAt)`: stable across Alertmanager's re-sends and across firing → resolved."""
        return f"{self.fingerprint}@{self.alert.startsAt.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"

    @property
    def cloudevent_type(self) -> str:
        return ALERT_RESOLVED if self.alert.status == "resolved" else ALERT_FIRED

    def merged_annotations(self) -> dict[str, str]:
        """The group's common annotations with the alert's own on top (the alert's own win)."""
        return {**self.common_annotations, **self.alert.annotations}

    def as_alert_dict(self) -> dict[str, Any]:
        """The plain Alertmanager alert object, as selectors and the model take it."""
        return self.alert.model_dump(mode="json")


def split_payload(payload: AlertmanagerPayload) -> list[AlertEvent]:
    """One event per alert, each by its own status."""
    return [
        AlertEvent(
            alert=alert,
            receiver=payload.receiver,
            group_key=payload.groupKey,
            common_annotations=payload.commonAnnotations,
            source="alertmanager",
        )
        for alert in payload.alerts
    ]
