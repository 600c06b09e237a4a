"""The encoder: bounded, deterministic, and pointer indices map back to the exact label values."""

from __future__ import annotations

from models.encoding import AlertEncoder, segment, words_of
from models.train import build_config


def _encoder(catalog):
    return AlertEncoder(build_config(catalog).encoder)


def test_every_slot_points_back_to_its_exact_label_value(catalog, sample_rows):
    enc = _encoder(catalog)
    for row in sample_rows:
        labels = row["alert"]["labels"]
        e = enc.encode(row["alert"])
        assert len(e.slot_keys) == len(e.slot_values) == min(len(labels) - 1, enc.s.max_labels)
        for key, value in zip(e.slot_keys, e.slot_values):
            assert labels[key] is value  # the very object: copied verbatim, never re-generated


def test_unseen_values_round_trip_exactly(catalog):
    enc = _encoder(catalog)
    weird = "zz-never-seen-7x9q2-00000-abcde.example"
    e = enc.encode({"labels": {"alertname": "KubePodCrashLooping", "pod": weird, "namespace": "qqq-unseen"}})
    assert dict(zip(e.slot_keys, e.slot_values)) == {"pod": weird, "namespace": "qqq-unseen"}


def test_sequence_is_bounded_and_priority_labels_survive_truncation(catalog):
    enc = _encoder(catalog)
    labels = {f"noise_{i:05d}": "x" * 50 for i in range(10_000)}
    labels |= {"alertname": "KubePodCrashLooping", "pod": "api-7d9f8c6b5-x2k4q", "namespace": "shop"}
    e = enc.encode({"labels": labels, "annotations": {"description": "word " * 300_000}})
    assert e.feats.shape == (enc.s.seq_len, enc.s.max_features)
    assert len(e.slot_values) == enc.s.max_labels
    assert e.slot_keys[:2] == ["pod", "namespace"] or {"pod", "namespace"} <= set(e.slot_keys)


def test_encoding_is_deterministic(catalog, sample_rows):
    a, b = _encoder(catalog), _encoder(catalog)
    for row in sample_rows[:10]:
        ea, eb = a.encode(row["alert"]), b.encode(row["alert"])
        assert (ea.feats == eb.feats).all() and (ea.segments == eb.segments).all()


def test_alert_names_split_into_words_in_every_casing(catalog):
    vocab = frozenset(build_config(catalog).encoder.segment_vocab)
    for name in ("KubePodCrashLooping", "kube_pod_crash_looping", "KUBE-POD-CRASH-LOOPING", "Kube pod crash looping"):
        assert words_of(name) == ["kube", "pod", "crash", "looping"]
    assert segment("kubepodcrashlooping", vocab) == ["kube", "pod", "crash", "looping"]
    assert words_of("CPUThrottlingHigh") == ["cpu", "throttling", "high"]
