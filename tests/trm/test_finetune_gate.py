"""export -> `trm-sre train --feedback` -> the no-regression gate: poisoned feedback is refused, clean is accepted.

The feedback files are made by the export's own code (`controller.tools.export_feedback.examples`, redacted)
from labels over fresh generator alerts (names of the training bucket, a seed training never used). The
fine-tune is the real code path with a small config (a dozen batches, a small replay sample, a few hundred
rows of each fixed holdout) and tolerances sized for holdouts that small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.engine.feedback import Label
from controller.tools import cli
from controller.tools.export_feedback import examples
from models import data as datagen
from models.runtime import file_sha256
from models.selector import DEFAULT_CHECKPOINT_DIR, MODEL_FILE, ONNX_FILE

T0 = 1_780_000_000.0
SMALL = [
    "--batches", "12", "--batch-size", "32", "--feedback-share", "0.5", "--replay", "400", "--lr", "1e-3",
    "--holdout-limit", "300", "--threads", "1", "--time-budget", "3",
    "--max-exact-drop", "0.02", "--max-wrong-action-rise", "0.01", "--max-ece-rise", "0.05",
]  # fmt: skip


def _label(i: int, alert: dict[str, Any], function: str | None, parameters: dict[str, Any], source: str) -> Label:
    at = T0 + 3600 * i
    return Label(f"d{i:04d}", "shop/restart", at, at + 60, alert, function, parameters, source)  # type: ignore[arg-type]


def _write(path: Path, labels: list[Label]) -> Path:
    rows, _ = examples(labels, redact=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def fresh(catalog) -> list[dict[str, Any]]:
    return datagen.generate(600, 4242, "train", catalog)


def _train(feedback: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(["train", "--feedback", str(feedback), "--out", str(out), *SMALL])
    return rc, capsys.readouterr().err


def test_feedback_that_restarts_pods_for_alerts_that_should_abstain_is_refused(fresh, tmp_path: Path, capsys) -> None:
    # Alerts about pods that expect no action (resource pressure, waiting, quotas...), "corrected" to a restart.
    abstain = [r["alert"] for r in fresh if r["expected"]["lambda_function"] is None]
    about_pods = [a for a in abstain if {"namespace", "pod"} <= set(a["labels"])][:80]
    assert len(about_pods) >= 40
    labels = [
        _label(i, a, "pod-restart", {"name": a["labels"]["pod"], "namespace": a["labels"]["namespace"]}, "correction")
        for i, a in enumerate(about_pods)
    ]
    feedback = _write(tmp_path / "poisoned.jsonl", labels)
    out = tmp_path / "out"
    rc, err = _train(feedback, out, capsys)
    assert rc == 1, err[-3000:]
    assert "refused" in err and "heldout-sources: wrong-action rate rose" in err, err[-3000:]
    assert not out.exists()


def test_clean_feedback_passes_and_the_checkpoint_records_the_file(fresh, tmp_path: Path, capsys) -> None:
    before = file_sha256(DEFAULT_CHECKPOINT_DIR / MODEL_FILE)
    labels = [
        _label(i, r["alert"], r["expected"]["lambda_function"], r["expected"]["parameters"], "approval")
        for i, r in enumerate(fresh[:100])
    ]
    feedback = _write(tmp_path / "clean.jsonl", labels)
    out = tmp_path / "out"
    rc, err = _train(feedback, out, capsys)
    assert rc == 0, err[-3000:]
    assert "passed the gate" in err
    config = json.loads((out / "config.json").read_text())
    assert config["feedback"]["sha256"] == file_sha256(feedback)
    n = sum(1 for _ in feedback.open())
    assert config["feedback"]["counts"]["examples"] == n
    assert config["feedback"]["held_out"]["examples"] == round(n * 0.2)
    assert config["finetune"]["base_weights_sha256"] == before
    assert set(config["metrics"]) == {"heldout-sources", "test-heldout-names", "feedback-recent"}
    assert (out / ONNX_FILE).is_file() and (out / MODEL_FILE).is_file()
    assert file_sha256(DEFAULT_CHECKPOINT_DIR / MODEL_FILE) == before  # the shipped checkpoint is untouched
