"""Checkpoints: save/load gives identical outputs; missing, corrupt or catalog-mismatched ones fail clearly."""

from __future__ import annotations

import json

import pytest

from models.selector import CheckpointError, TRMSelector, save_checkpoint
from runbooks import Catalog


def test_save_load_gives_identical_outputs(tmp_path, tiny_model, catalog, sample_rows):
    save_checkpoint(tiny_model, tmp_path, catalog)
    before = TRMSelector(tiny_model, catalog)
    after = TRMSelector.load(tmp_path, catalog=catalog)
    alerts = [r["alert"] for r in sample_rows[:16]]
    for a, b in zip(before.select_batch(alerts), after.select_batch(alerts)):
        assert a == b
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["catalog_hash"] == catalog.hash and cfg["parameters"] == tiny_model.num_parameters()


def test_catalog_mismatch_is_refused_with_a_clear_message(tmp_path, tiny_model, catalog):
    save_checkpoint(tiny_model, tmp_path, catalog)
    changed = Catalog(functions=tuple(f.model_copy(update={"description": f.description + " (edited)"}) if f.name == "pod-restart" else f
                                      for f in catalog.functions))
    assert changed.hash != catalog.hash
    with pytest.raises(CheckpointError, match="runbook catalog"):
        TRMSelector.load(tmp_path, catalog=changed)


def test_missing_and_corrupt_checkpoints(tmp_path, tiny_model, catalog):
    with pytest.raises(CheckpointError, match="missing"):
        TRMSelector.load(tmp_path / "nope", catalog=catalog)
    save_checkpoint(tiny_model, tmp_path, catalog)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        TRMSelector.load(tmp_path, catalog=catalog)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        TRMSelector.load(tmp_path, catalog=catalog)
