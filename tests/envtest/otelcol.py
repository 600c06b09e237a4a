"""A real OpenTelemetry Collector on loopback for the tracing tests.

The collector (OTLP receiver, file exporter; tests/envtest/otelcol/main.go)
is built from the Go module proxy by build.sh (or taken from the directory in
TRM_SRE_OTELCOL_BIN). It receives OTLP/HTTP on a free loopback port and
writes every batch it receives as one line of OTLP JSON to a file, which
`spans()` reads back: what a real tracing backend would have been sent.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .controlplane import EnvtestError, ManagedProcess, build_component, free_ports, wait_until

READY_TIMEOUT = 30.0


def otelcol_bin_dir() -> Path:
    """Directory with `otelcol`: $TRM_SRE_OTELCOL_BIN or build.sh's."""
    override = os.environ.get("TRM_SRE_OTELCOL_BIN")
    if override and (Path(override) / "otelcol").is_file():
        return Path(override)
    return build_component("otelcol")


def collector_config(http_port: int, spans_file: Path) -> str:
    """OTLP/HTTP in on loopback, the file exporter out (JSON, flushed often). JSON is valid YAML."""
    config = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {"file": {"path": str(spans_file), "format": "json", "flush_interval": "100ms"}},
        "service": {
            "telemetry": {
                "metrics": {"level": "none"},
                "logs": {"level": "info"},
            },
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
        },
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass
class Span:
    """One span as the collector exported it (OTLP JSON), flattened for assertions."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[dict[str, Any]]
    status: dict[str, Any]
    service: str
    start_ns: int
    end_ns: int


def _value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or []}


def parse_spans(lines: list[str]) -> list[Span]:
    spans: list[Span] = []
    for line in lines:
        if not line.strip():
            continue
        doc = json.loads(line)
        for rs in doc.get("resourceSpans", []):
            service = str(_attrs(rs.get("resource", {}).get("attributes")).get("service.name", ""))
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    spans.append(
                        Span(
                            name=s["name"],
                            trace_id=s["traceId"],
                            span_id=s["spanId"],
                            parent_span_id=s.get("parentSpanId", ""),
                            kind=int(s.get("kind", 0)),
                            attributes=_attrs(s.get("attributes")),
                            links=[
                                {
                                    "trace_id": link.get("traceId"),
                                    "span_id": link.get("spanId"),
                                    "attributes": _attrs(link.get("attributes")),
                                }
                                for link in s.get("links", [])
                            ],
                            status=s.get("status", {}),
                            service=service,
                            start_ns=int(s.get("startTimeUnixNano", 0)),
                            end_ns=int(s.get("endTimeUnixNano", 0)),
                        )
                    )
    return spans


@dataclass
class Collector:
    endpoint: str  # http://127.0.0.1:PORT (OTEL_EXPORTER_OTLP_ENDPOINT)
    workdir: Path
    spans_file: Path
    _proc: ManagedProcess = field(repr=False)

    def spans(self) -> list[Span]:
        """Every span the collector has written so far."""
        try:
            text = self.spans_file.read_text()
        except FileNotFoundError:
            return []
        # The last line may be half-written while the exporter flushes: keep only whole lines.
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines = lines[:-1]
        return parse_spans(lines)

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines)

    def alive(self) -> bool:
        return self._proc.alive()

    def stop(self) -> None:
        self._proc.stop()


def start_collector(workdir: Path, *, bin_dir: Path | None = None, timeout: float = READY_TIMEOUT) -> Collector:
    """Write the config into `workdir`, start the collector on free ports, wait until it accepts OTLP."""
    bin_dir = bin_dir or otelcol_bin_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    spans_file = workdir / "spans.json"
    for attempt in range(3):  # free ports can race; retry on a clash
        (http_port,) = free_ports(1)
        config_file = workdir / "otelcol.yaml"
        config_file.write_text(collector_config(http_port, spans_file))
        proc = ManagedProcess(
            "otelcol", [str(bin_dir / "otelcol"), f"--config=file:{config_file}"], workdir / "otelcol.log"
        )
        endpoint = f"http://127.0.0.1:{http_port}"
        try:
            proc.start()
            # Ready: the service says so and the receiver's port takes connections.
            wait_until(
                f"otelcol {endpoint}",
                lambda proc=proc, endpoint=endpoint: (
                    "Everything is ready" in proc.log_tail(200) and _listening(endpoint)
                ),
                [proc],
                timeout,
            )
            return Collector(endpoint=endpoint, workdir=workdir, spans_file=spans_file, _proc=proc)
        except BaseException as exc:
            proc.stop()
            clash = isinstance(exc, EnvtestError) and "address already in use" in proc.log_tail(80)
            if not clash or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _listening(endpoint: str) -> bool:
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port), timeout=1):
            return True
    except OSError:
        return False


__all__ = ["Collector", "Span", "otelcol_bin_dir", "parse_spans", "start_collector"]
