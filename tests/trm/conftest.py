"""Fixtures for the model tests: a tiny untrained/overfit TRM built in milliseconds, and the committed checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import data as datagen
from models.model import TRM
from models.selector import DEFAULT_CHECKPOINT_DIR, TRMSelector
from models.train import build_config
from runbooks import default_catalog

# One thread: the tests are tiny, and on a machine shared with other jobs more threads only spin.
torch.set_num_threads(1)

TINY = {"d_model": 32, "n_heads": 2, "feature_dim": 16, "ffn_mult": 2, "max_steps": 2, "encoder": {"buckets": 2048}}


@pytest.fixture(scope="session")
def catalog():
    return default_catalog()


@pytest.fixture()
def tiny_model(catalog) -> TRM:
    torch.manual_seed(0)
    return TRM(build_config(catalog, **dict(TINY, encoder=dict(TINY["encoder"])))).eval()


@pytest.fixture(scope="session")
def sample_rows(catalog) -> list[dict]:
    return datagen.generate(64, 11, "train", catalog)


@pytest.fixture(scope="session")
def committed_selector() -> TRMSelector:
    if not (Path(DEFAULT_CHECKPOINT_DIR) / "model.safetensors").is_file():
        pytest.fail(f"no committed checkpoint in {DEFAULT_CHECKPOINT_DIR}: run `python -m models.train`")
    return TRMSelector.load()
