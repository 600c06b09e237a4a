"""A minimal consumer of trm-sre's `io.homelab.agent-sre.lambda.trigger` CloudEvents (an example).

    python consumer.py [--host 0.0.0.0] [--port 8080]      # PORT from the environment wins (Knative sets it)

It answers `POST` (any path) in binary or structured content mode, checks the
event's type and the shape of its data, logs the function and parameters as
one JSON line, answers 202 and hands the trigger to a handler from `HANDLERS`.
The handlers here are dry stubs: each one only prints the command it would
run (`print_plan`). Replace them with real remediations, and answer with
`io.knative.lambda.response.success` / `.error` carrying the trigger's
`correlationid` (see README.md) if you want trm-sre to record the outcome.

Answers: 202 accepted (also for a redelivered event: same source + id, done
once); 400 not a CloudEvent, another type, data of the wrong shape, or a
function no handler knows (a retry would fail the same way, so Knative and
trm-sre do not retry a 400); 413 body over 1 MiB. `GET /healthz` answers 200.

Only the standard library and the CloudEvents SDK 2.x (`pip install
'cloudevents>=2.2,<3'`, the version trm-sre itself uses).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.exceptions import BaseCloudEventException

TRIGGER_TYPE = "io.homelab.agent-sre.lambda.trigger"
MAX_BODY_BYTES = 1 << 20
#: How many (source, id) pairs are remembered to recognise a redelivery.
SEEN_CAPACITY = 10_000
_REQUIRED = ("specversion", "id", "source", "type")


def log(msg: str, **fields: Any) -> None:
    """One JSON object per line on stdout (what `kubectl logs` shows)."""
    print(json.dumps({"msg": msg, **fields}, sort_keys=True, default=str), flush=True)


# --------------------------------------------------------------------------
# Handlers: one per runbook function (`trm-sre catalog` lists them). Each returns the
# command it would run; nothing is executed. Parameters were validated by trm-sre against
# the runbook catalog before the trigger was sent.
# --------------------------------------------------------------------------


def plan_pod_restart(p: Mapping[str, Any]) -> list[str]:
    if p.get("type", "pod") == "deployment":
        return ["kubectl", "rollout", "restart", f"deployment/{p['name']}", "-n", p["namespace"]]
    return ["kubectl", "delete", "pod", p["name"], "-n", p["namespace"], "--wait=false"]


def plan_pod_check_status(p: Mapping[str, Any]) -> list[str]:
    if p.get("name"):
        return ["kubectl", "describe", "pod", p["name"], "-n", p["namespace"]]
    return ["kubectl", "get", "pods", "-l", p["selector"], "-n", p["namespace"], "-o", "wide"]


def plan_check_pvc_status(p: Mapping[str, Any]) -> list[str]:
    if p.get("name"):
        return ["kubectl", "describe", "pvc", p["name"], "-n", p["namespace"]]
    return ["kubectl", "get", "pvc", "-n", p["namespace"], "-o", "wide"]


def plan_scale_deployment(p: Mapping[str, Any]) -> list[str]:
    return ["kubectl", "scale", "deployment", p["name"], "-n", p["namespace"], f"--replicas={int(p['replicas'])}"]


def _flux(*kind: str) -> Callable[[Mapping[str, Any]], list[str]]:
    def plan(p: Mapping[str, Any]) -> list[str]:
        return ["flux", "reconcile", *kind, p["name"], "-n", p.get("namespace") or "flux-system"]

    return plan


HANDLERS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "pod-restart": plan_pod_restart,
    "pod-check-status": plan_pod_check_status,
    "check-pvc-status": plan_check_pvc_status,
    "scale-deployment": plan_scale_deployment,
    "flux-reconcile-kustomization": _flux("kustomization"),
    "flux-reconcile-helmrelease": _flux("helmrelease"),
    "flux-reconcile-gitrepository": _flux("source", "git"),
}


def print_plan(trigger: Trigger, command: list[str]) -> None:
    """The dry run: say what would be done, do nothing."""
    log("dry run: would run", id=trigger.id, function=trigger.function, command=shlex.join(command))


# --------------------------------------------------------------------------
# Reading the event
# --------------------------------------------------------------------------


class Rejected(Exception):
    """The request is answered with `status` and this message; retrying it would not help."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Trigger:
    id: str
    source: str
    mode: str  # binary | structured
    function: str
    parameters: dict[str, Any]
    correlation_id: str | None
    policy: str | None
    alertname: str | None
    data: dict[str, Any]


def _decode(headers: Mapping[str, str], body: bytes) -> tuple[Any, str]:
    """The SDK's event and the content mode, after checking what the SDK would otherwise fill in."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "").strip().lower()
    if content_type.startswith("application/cloudevents-batch"):
        raise Rejected("batched content mode is not supported: send one event per request")
    if content_type.startswith("application/cloudevents"):
        mode = "structured"
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Rejected(f"structured CloudEvent body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise Rejected("structured CloudEvent body must be a JSON object")
        missing = [name for name in _REQUIRED if not doc.get(name)]
        lowered = {"content-type": content_type}  # structured: only the body counts
    elif "ce-specversion" in lowered:
        mode = "binary"
        missing = [name for name in _REQUIRED if not lowered.get(f"ce-{name}")]
    else:
        raise Rejected("not a CloudEvent: send ce-* headers (binary mode) or application/cloudevents+json")
    if missing:
        raise Rejected(f"missing CloudEvent attribute(s): {', '.join(missing)}")
    try:
        return from_http_event(HTTPMessage(headers=lowered, body=body)), mode
    except (BaseCloudEventException, ValueError, TypeError, AttributeError) as exc:
        raise Rejected(f"invalid CloudEvent: {exc}") from None


def read_trigger(headers: Mapping[str, str], body: bytes) -> Trigger:
    event, mode = _decode(headers, body)
    if event.get_type() != TRIGGER_TYPE:
        raise Rejected(f"unexpected type {event.get_type()!r}: this service handles {TRIGGER_TYPE} only")
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError:
            raise Rejected("data is not JSON") from None
    if not isinstance(data, dict):
        raise Rejected("data must be a JSON object with lambda_function and parameters")
    function, parameters = data.get("lambda_function"), data.get("parameters")
    if not isinstance(function, str) or not function:
        raise Rejected("data.lambda_function must be a non-empty string")
    if not isinstance(parameters, dict):
        raise Rejected("data.parameters must be an object")
    extension = event.get_extension("lambdafunction")
    if extension is not None and extension != function:
        raise Rejected(f"the lambdafunction extension ({extension}) differs from data.lambda_function ({function})")
    return Trigger(
        id=event.get_id(),
        source=event.get_source(),
        mode=mode,
        function=function,
        parameters=parameters,
        correlation_id=event.get_extension("correlationid") or data.get("correlation_id"),
        policy=event.get_extension("policy") or data.get("policy"),
        alertname=event.get_extension("alertname"),
        data=data,
    )


class SeenEvents:
    """(source, id) of the events already handled: trm-sre resends the same id after a crash or an outage."""

    def __init__(self, capacity: int = SEEN_CAPACITY) -> None:
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_time(self, source: str, event_id: str) -> bool:
        with self._lock:
            if (source, event_id) in self._seen:
                self._seen.move_to_end((source, event_id))
                return False
            self._seen[(source, event_id)] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True


SEEN = SeenEvents()


def handle(headers: Mapping[str, str], body: bytes) -> int:
    """One request: the HTTP status to answer. Raises Rejected for a 4xx."""
    trigger = read_trigger(headers, body)
    handler = HANDLERS.get(trigger.function)
    if handler is None:
        raise Rejected(f"no handler for function {trigger.function!r}; known: {', '.join(sorted(HANDLERS))}")
    if not SEEN.first_time(trigger.source, trigger.id):
        log("duplicate trigger ignored", id=trigger.id, source=trigger.source, function=trigger.function)
        return 202
    log(
        "lambda.trigger accepted",
        id=trigger.id,
        source=trigger.source,
        mode=trigger.mode,
        function=trigger.function,
        parameters=trigger.parameters,
        correlationid=trigger.correlation_id,
        policy=trigger.policy,
        alertname=trigger.alertname,
    )
    try:
        command = handler(trigger.parameters)
    except (KeyError, TypeError, ValueError) as exc:
        raise Rejected(f"parameters of {trigger.function} are incomplete or invalid: {exc!s}") from None
    print_plan(trigger, command)
    return 202


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "trigger-consumer/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # the http.server API names these
        if self.path.split("?", 1)[0] in ("/healthz", "/readyz"):
            self._answer(200, b"ok\n", "text/plain")
        else:
            self._answer(404, b'{"error": "not found"}\n')

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._reject(Rejected(f"body over {MAX_BODY_BYTES} bytes", 413))
            self.close_connection = True
            return
        body = self.rfile.read(length)
        try:
            status = handle(dict(self.headers.items()), body)
        except Rejected as exc:
            self._reject(exc)
            return
        self._answer(status, b"")  # Knative: a 2xx without ce-* headers is not a reply event

    def _reject(self, exc: Rejected) -> None:
        log("rejected", status=exc.status, error=str(exc), path=self.path)
        self._answer(exc.status, json.dumps({"error": str(exc)}).encode() + b"\n")

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every request is logged once, as JSON, above


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dry-run consumer of io.homelab.agent-sre.lambda.trigger CloudEvents.")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")), help="0: any free port")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    log("listening", url=f"http://{host}:{port}", functions=sorted(HANDLERS))

    def stop(signum: int, _frame: Any) -> None:
        log("stopping", signal=signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
