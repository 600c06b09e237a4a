"""Eval metrics on a tiny hand-made dataset, against hand-computed values."""

from __future__ import annotations

import json

import pytest

from models.evaluate import compute_metrics, expected_calibration_error, main

R = "pod-restart"
EXPECTED = [
    {"lambda_function": R, "parameters": {"name": "a", "namespace": "x", "type": "pod"}},   # 1: exact
    {"lambda_function": R, "parameters": {"name": "b", "namespace": "x", "type": "pod"}},   # 2: right fn, wrong name
    {"lambda_function": "check-pvc-status", "parameters": {"namespace": "y"}},              # 3: abstained
    {"lambda_function": None, "parameters": {}},                                              # 4: correct abstention
    {"lambda_function": None, "parameters": {}},                                              # 5: wrong action
    {"lambda_function": "scale-deployment", "parameters": {"name": "d", "namespace": "z", "replicas": 3}},  # 6: exact ("3" == 3)
]
PREDICTED = [
    {"lambda_function": R, "parameters": {"name": "a", "namespace": "x", "type": "pod"}, "confidence": 0.95},
    {"lambda_function": R, "parameters": {"name": "c", "namespace": "x", "type": "pod"}, "confidence": 0.85},
    {"lambda_function": None, "parameters": {}, "confidence": 0.30},
    {"lambda_function": None, "parameters": {}, "confidence": 0.90},
    {"lambda_function": "pod-check-status", "parameters": {"name": "q", "namespace": "x"}, "confidence": 0.55},
    {"lambda_function": "scale-deployment", "parameters": {"name": "d", "namespace": "z", "replicas": "3"}, "confidence": 1.0},
]


def test_metrics_equal_hand_computed_values():
    m = compute_metrics(EXPECTED, PREDICTED, latencies_ms=[1, 2, 3, 4, 5, 100])
    assert m["n"] == 6
    assert m["function_accuracy"] == pytest.approx(4 / 6)       # 1, 2, 4, 6
    assert m["exact_match"] == pytest.approx(3 / 6)             # 1, 4, 6
    assert m["action_recall"] == pytest.approx(2 / 4)           # actions expected: 1, 2, 3, 6; exact: 1, 6
    assert m["abstain_recall"] == pytest.approx(1 / 2)          # abstentions expected: 4, 5; abstained: 4
    assert m["wrong_action_rate"] == pytest.approx(1 / 6)       # 5
    assert m["wrong_parameters_rate"] == pytest.approx(1 / 6)   # 2
    # precision among actions with confidence >= 0.8: 1 (ok), 2 (wrong), 6 (ok)
    assert m["precision_at_min_confidence"] == pytest.approx(2 / 3)
    assert m["automated_recall"] == pytest.approx(2 / 4)          # 1 and 6: exact, action, confidence >= 0.8
    # ECE, 10 bins: [0.3]->acc 0 (|0-0.3|), [0.55]->0 (0.55), [0.85]->0 (0.85), [0.9,0.95]->1 (0.075), [1.0]->1 (0)
    ece = (0.3 + 0.55 + 0.85 + 2 * abs(1 - 0.925) + 0.0) / 6
    assert m["ece"] == pytest.approx(ece)
    assert m["latency_ms"]["p50"] == pytest.approx(3.5)
    assert m["latency_ms"]["p99"] == pytest.approx(5 + 0.95 * 95)


def test_ece_is_zero_when_confidence_matches_accuracy():
    assert expected_calibration_error([1.0, 1.0, 0.0], [True, True, False]) == 0.0
    assert expected_calibration_error([0.55] * 4, [True, True, False, False]) == pytest.approx(0.05)


def test_eval_cli_with_an_extra_selector(tmp_path, capsys):
    rows = [{"alert": {"labels": {"alertname": "A"}}, "expected": e} for e in EXPECTED]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Replay:
        def __init__(self):
            self.i = 0

        def select_batch(self, alerts):
            out = PREDICTED[self.i : self.i + len(alerts)]
            self.i += len(alerts)
            return out

    preds = tmp_path / "p.jsonl"
    rc = main(["eval", str(data), "--selector", "replay", "--json", "--predictions", str(preds), "--batch-size", "4"],
              extra_selectors={"replay": Replay})
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert m["exact_match"] == pytest.approx(0.5) and m["n"] == 6
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [p["lambda_function"] for p in lines] == [p["lambda_function"] for p in PREDICTED]
    assert all(set(p) == {"lambda_function", "parameters", "confidence", "latency_ms"} for p in lines)
