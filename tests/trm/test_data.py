"""The generated data: deterministic, broad, >= 40% no-remediation, held out by name, decisions valid."""

from __future__ import annotations

from models import data as datagen


def test_generation_is_deterministic(catalog):
    assert datagen.generate(50, 7, "train", catalog) == datagen.generate(50, 7, "train", catalog)


def test_heldout_names_never_appear_in_training(catalog):
    train = {datagen.canonical_name(r["alert"]["labels"]["alertname"]) for r in datagen.generate(3000, 1, "train", catalog)}
    test = {datagen.canonical_name(r["alert"]["labels"]["alertname"]) for r in datagen.generate(500, 4, "test", catalog)}
    assert test and not (train & test)


def test_share_of_no_remediation_and_expected_calls_validate(catalog):
    rows = datagen.generate(1500, 3, "train", catalog)
    none = [r for r in rows if r["expected"]["lambda_function"] is None]
    assert len(none) / len(rows) >= 0.40
    for r in rows:
        e = r["expected"]
        if e["lambda_function"] is not None:
            assert catalog.validate_call(e["lambda_function"], e["parameters"]) == e["parameters"]
    assert {r["situation"] for r in rows} >= {s.key for s in datagen.SITUATIONS if s.weight >= 2}


def test_committed_dataset_files_match_the_generator(catalog):
    for fname, (n, seed, bucket) in datagen.SPLITS.items():
        path = datagen.DATASETS_DIR / fname
        assert path.stat().st_size < 3_000_000
        first = next(datagen.iter_jsonl(path))
        assert first == datagen.generate(1, seed, bucket, catalog)[0]
