"""CI keeps the training code path alive with a smoke run; it never retrains the shipped checkpoint."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "checkpoints" / "trm" / "model.safetensors"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_smoke_training_runs_and_leaves_the_committed_checkpoint_alone(tmp_path: Path) -> None:
    before = _digest(CHECKPOINT)
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "models.train", "--smoke", "--threads", "1", "--reports", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _digest(CHECKPOINT) == before
    assert any(tmp_path.iterdir()), "the smoke run wrote no report"
