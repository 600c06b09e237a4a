"""The runtimes section (issue #14) measures both runtimes and renders a row each; it asserts no speed."""

from __future__ import annotations

from bench.runtimes import render, trm_alone


def test_the_trm_alone_measurement_reports_latency_memory_and_torch() -> None:
    onnx = trm_alone("onnx", None, 20)
    assert "error" not in onnx, onnx
    assert onnx["latency_ms"]["n"] == 20 and onnx["latency_ms"]["p50"] > 0
    assert onnx["torch_imported"] is False and onnx["rss_mb_loaded"] > 0
    torch = trm_alone("torch", None, 5)
    assert torch["torch_imported"] is True


def test_the_markdown_has_a_row_per_runtime() -> None:
    entry = {"trm": {"latency_ms": {"p50": 1.0, "p99": 2.0}}, "controller": {"ready_ms": {"p50": 9.0}}}
    lines = render({"alerts": 3, "repeats": 1, "runtimes": {"onnx": entry, "torch": entry}})
    assert sum(1 for line in lines if line.startswith(("| onnx |", "| torch |"))) == 2
