"""`models.evaluate eval --by-family`: the per-family table of the model card, on hand-made rows."""

from __future__ import annotations

import json

from models import data as datagen
from models.breakdowns import ALERT_FAMILIES, family_breakdown, family_markdown, family_of
from models.evaluate import main
from tests.trm.test_metrics import EXPECTED, PREDICTED

# Rows 1-3 are pods/storage alerts that expect an action, 4-5 expect none, 6 is a deployment.
SITUATIONS = ["pod-crash", "pod-waiting", "pvc-filling", "node", "application", "scale-request"]


def rows() -> list[dict]:
    return [
        {"alert": {"labels": {"alertname": "A"}}, "expected": e, "situation": s} for e, s in zip(EXPECTED, SITUATIONS)
    ]


def test_every_situation_of_the_generator_is_in_exactly_one_family() -> None:
    listed = [s for situations in ALERT_FAMILIES.values() for s in situations]
    assert len(listed) == len(set(listed))
    assert {s.key for s in datagen.SITUATIONS} == set(listed)
    assert family_of({"situation": "something-new"}) == "other" and family_of({}) == "unlabelled"


def test_breakdown_counts_per_family() -> None:
    table = {r["family"]: r for r in family_breakdown(rows(), PREDICTED)}
    assert list(table) == ["pods", "deployments", "storage", "nodes and hosts", "applications"]
    pods = table["pods"]  # 1 exact, 2 right function with a wrong name
    assert (pods["n"], pods["exact"], pods["wrong_actions"], pods["wrong_parameters"]) == (2, 1, 0, 1)
    assert table["storage"]["action_recall"] == 0.0 and table["storage"]["wrong_actions"] == 0  # abstained
    assert table["applications"]["wrong_actions"] == 1 and table["applications"]["abstain_recall"] == 0.0
    assert table["deployments"]["exact_match"] == 1.0
    markdown = family_markdown(list(table.values())).splitlines()
    assert markdown[0].startswith("| family | situations | n |") and len(markdown) == 2 + len(table)
    assert "| nodes and hosts | node | 1 | 0 | 1.0000 (1) | 0 | 0 | — | 1.0000 |" in markdown


def test_eval_by_family_in_json(tmp_path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))

    class Replay:
        def select_batch(self, alerts):
            return PREDICTED[: len(alerts)]

    assert (
        main(
            ["eval", str(data), "--selector", "replay", "--json", "--by-family", "--batch-size", "6"],
            extra_selectors={"replay": Replay},
        )
        == 0
    )
    by_family = json.loads(capsys.readouterr().out)["by_family"]
    assert sum(r["n"] for r in by_family) == 6
