"""What a redacted feedback export keeps of an alert (the default of `trm-sre export-feedback`).

Always, redacted or not: the `lambda_function` and `lambda_parameters` annotations are removed, since they
are the label itself and the model must learn to decide without them.

Redacted (the default), precisely:

- annotations: only `summary`, `description`, `message` and `runbook_url` are kept (the ones the encoder
  reads); every other annotation is dropped. Their text is cut to the words of the public vocabulary the
  model was trained on (`models.feedback.public_vocabulary`: the situation table and the published rule
  packs' alert text), lower-cased, in order; numbers become `0` (the encoder reads any number as `<num>`);
  every other word (names, hostnames, ticket ids, free text) is removed. `runbook_url` becomes
  `https://runbooks.invalid/` + its last path segment's vocabulary words.
- label values are replaced by a pseudonym `r-<10 hex>` (an HMAC-SHA256 of the value under a random key made
  for this export and never stored: equal values stay equal within one file, so parameters still point at
  their label, and cannot be matched across files or guessed from a dictionary without the key) when
  * the key names a secret or an address: it contains secret, token, password, passwd, credential, apikey,
    api_key, auth, cookie, session, or is instance, host, hostname, node, nodename, ip, address, fqdn,
    url, endpoint, exported_instance, pod_ip, host_ip, email;
  * or the value looks like one: an IPv4/IPv6 address (with or without a port), a URL (`://`), an email
    address, a dotted host name (two or more dot-separated parts ending in letters), a JWT, 32+ hex
    digits, or a 24+ character token mixing letters and digits without separators.
  Every other label value is kept as it is: namespaces, workload names (pod, deployment, ...), severity,
  job... the parameters are copied from them and the model reads their words. A parameter whose value
  was pseudonymised gets the pseudonym in `expected`.
- `generatorURL`: only the rule expression is kept, under `http://prometheus.invalid/graph?g0.expr=`; a
  matcher value in it goes through the label rules above (by its label key and value).
- `fingerprint` is recomputed from the redacted labels.

Provenance carries the decision id, the policy and the times, never the approver's or corrector's name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any
from urllib.parse import quote

from controller.schemas.alerts import label_fingerprint

KEPT_ANNOTATIONS = ("summary", "description", "message", "runbook_url")
LABEL_ANNOTATIONS = ("lambda_function", "lambda_parameters")
PLACEHOLDER_PROMETHEUS = "http://prometheus.invalid/graph?g0.expr="

_SECRET_KEY = re.compile(r"(?i)secret|token|passw|credential|api_?key|auth|cookie|session")
_ADDRESS_KEYS = frozenset(
    [
        "instance",
        "host",
        "hostname",
        "node",
        "nodename",
        "ip",
        "address",
        "fqdn",
        "url",
        "endpoint",
        "exported_instance",
        "pod_ip",
        "host_ip",
        "email",
    ]
)
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}(:\d+)?$")
_IPV6 = re.compile(r"^\[?[0-9a-fA-F]*:[0-9a-fA-F:]+\]?(:\d+)?$")
_HOST = re.compile(r"^([A-Za-z0-9-]+\.)+[A-Za-z]{2,}\.?(:\d+)?$")
_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_HEX = re.compile(r"^[0-9a-fA-F]{32,}$")
_TOKEN = re.compile(r"^[A-Za-z0-9+/=_]{24,}$")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)(\s*(?:=~|!~|!=|=)\s*)\"((?:[^\"\\]|\\.)*)\"")


def looks_sensitive(key: str, value: str) -> bool:
    """Whether a label (key, value) names a secret or an address (the rules in the module docstring)."""
    if _SECRET_KEY.search(key) or key.lower() in _ADDRESS_KEYS:
        return True
    v = value.strip()
    if "://" in v or "@" in v or _IPV4.match(v) or _IPV6.match(v) or _HOST.match(v) or _JWT.match(v):
        return True
    if _HEX.match(v):
        return True
    return bool(_TOKEN.match(v) and re.search(r"[A-Za-z]", v) and re.search(r"\d", v))


class Redactor:
    """Redacts alerts for one export; its random key makes pseudonyms consistent within the file only."""

    def __init__(self, vocabulary: frozenset[str], key: bytes | None = None) -> None:
        self.vocabulary = vocabulary
        self._key = key or secrets.token_bytes(32)
        self.replaced: dict[str, str] = {}  # original value -> pseudonym (kept in memory only)

    def pseudonym(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:10]
        self.replaced[value] = f"r-{digest}"
        return self.replaced[value]

    def words(self, text: str) -> str:
        from models.encoding import words_of

        kept = ["0" if w.isdigit() else w for w in words_of(text) if w.isdigit() or w in self.vocabulary]
        return " ".join(kept)

    def alert(self, alert: dict[str, Any]) -> dict[str, Any]:
        labels = {
            k: (self.pseudonym(v) if isinstance(v, str) and looks_sensitive(k, v) else v)
            for k, v in (alert.get("labels") or {}).items()
        }
        annotations: dict[str, str] = {}
        for key in KEPT_ANNOTATIONS:
            text = (alert.get("annotations") or {}).get(key)
            if not isinstance(text, str):
                continue
            if key == "runbook_url":
                tail = text.rstrip("/").rsplit("/", 1)[-1]
                annotations[key] = "https://runbooks.invalid/" + self.words(tail).replace(" ", "-")
            else:
                annotations[key] = self.words(text)
        return alert | {
            "labels": labels,
            "annotations": annotations,
            "generatorURL": self.generator_url(alert),
            "fingerprint": label_fingerprint(labels),
        }

    def generator_url(self, alert: dict[str, Any]) -> str:
        from models.encoding import expression_of

        expr = expression_of(alert)
        if not expr:
            return ""

        def matcher(m: re.Match[str]) -> str:
            key, op, value = m.group(1), m.group(2), m.group(3)
            return f'{key}{op}"{self.pseudonym(value) if looks_sensitive(key, value) else value}"'

        return PLACEHOLDER_PROMETHEUS + quote(_MATCHER.sub(matcher, expr), safe="") + "&g0.tab=1"

    def parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """A call's parameters with the values this export pseudonymised replaced the same way."""
        return {k: self.replaced.get(v, v) if isinstance(v, str) else v for k, v in parameters.items()}


def without_label_annotations(alert: dict[str, Any]) -> dict[str, Any]:
    annotations = {k: v for k, v in (alert.get("annotations") or {}).items() if k not in LABEL_ANNOTATIONS}
    return alert | {"annotations": annotations}
