"""The silences table (controller.engine.store.silences_sql) on both backends: every statement runs on each."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from controller.engine.silences import silence_of, why_not
from controller.engine.store import StoreBackend
from controller.engine.store.backends import open_store
from controller.engine.store.outcomes_sql import ensure_schema as ensure_outcomes
from controller.engine.store.silences_sql import Candidate, SilenceRow, SilenceSql, ensure_schema
from controller.schemas.decision import LAMBDA_TRIGGER
from controller.schemas.policy import Policy
from tests.pipeline.engine.builders import policy


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    backend = open_store(url, tmp_path / "state")
    try:
        ensure_outcomes(backend)
        ensure_schema(backend)
        ensure_schema(backend)  # idempotent
        yield backend
    finally:
        backend.close()


def _row(decision_id: str = "d1") -> SilenceRow:
    return SilenceRow(
        decision_id=decision_id,
        policy="shop/quick",
        function="pod-restart",
        incident_key="inc@1",
        matchers=[{"name": "pod", "value": "cart", "isRegex": False, "isEqual": True}],
        starts_at=100.0,
        ends_at=160.0,
        created_by="trm-sre/shop/quick",
        comment="decision d1",
        silence_id="s-1",
        state="active",
        reason="",
        seen_silenced_at=None,
        resolved_at=None,
        resolution_source=None,
        attempts=0,
        last_error="",
        created_at=100.0,
        updated_at=100.0,
    )


def test_a_silence_row_goes_through_its_states(store: StoreBackend) -> None:
    with store.transaction() as tx:
        sql = SilenceSql(tx)
        assert sql.candidates(LAMBDA_TRIGGER) == []
        assert sql.insert(_row())
        assert not sql.insert(_row())  # once per decision
    with store.reading() as tx:
        (watched,) = SilenceSql(tx).watched()
    assert watched.silence == _row() and watched.outcome_state is None and watched.lambda_result is None
    with store.transaction() as tx:
        sql = SilenceSql(tx)
        sql.extended("d1", "s-2", 200.0, 150.0)
        sql.seen_silenced("d1", 120.0)
        sql.seen_silenced("d1", 130.0)  # the first sighting stays
        assert sql.resolved("d1", "alertmanager-poll", 170.0)
        assert not sql.resolved("d1", "alertmanager-poll", 180.0)
        sql.failed_attempt("d1", "refused", 175.0)
        assert sql.want_expired("d1", "outcome verified", 190.0)
        assert not sql.want_expired("d1", "again", 191.0)
    shown = silence_of(store, "d1")
    assert shown is not None
    assert (shown["state"], shown["silenceId"], shown["reason"]) == ("expiring", "s-2", "outcome verified")
    assert shown["resolutionSource"] == "alertmanager-poll" and shown["lastError"] == "refused"
    with store.transaction() as tx:
        SilenceSql(tx).set_state("d1", "expired", 200.0)
    with store.reading() as tx:
        sql = SilenceSql(tx)
        assert sql.watched() == []
        row = sql.silence("d1")
    assert row is not None and row.seen_silenced_at == 120.0 and row.attempts == 1 and row.ends_at == 200.0
    assert silence_of(store, "missing") is None


def _candidate(**labels: str) -> tuple[Candidate, dict[str, str]]:
    c = Candidate("d1", "shop/quick", "pod-restart", "inc", 0.0, 60, "pending", {"alert": {"labels": labels}}, None)
    return c, labels


def _policy(silence: dict[str, object]) -> Policy:
    return policy(actions={"silence": silence})


def test_who_gets_no_silence() -> None:
    on = _policy({"enabled": True, "severities": ["critical"]})
    c, labels = _candidate(alertname="KubePodCrashLooping", severity="critical")
    assert why_not(on, c, labels) is None
    assert why_not(_policy({}), c, labels) == "silences not enabled"
    assert why_not(None, c, labels) == "policy not found"
    for name in ("Watchdog", "InfoInhibitor"):
        c2, l2 = _candidate(alertname=name, severity="critical")
        assert why_not(on, c2, l2) == f"{name} is never silenced"
    c3, l3 = _candidate(alertname="KubePodCrashLooping", severity="warning")
    assert why_not(on, c3, l3) is not None and "severity" in str(why_not(on, c3, l3))
    errored = Candidate("d1", "p", "f", "i", 0.0, 60, "pending", {}, "error")
    assert why_not(on, errored, labels) == "the lambda already answered with an error"


class FakeAlertmanager:
    """The AlertmanagerClient calls, in memory: what was expired, what alerts it lists."""

    def __init__(self) -> None:
        self.expired: list[str] = []
        self.listed: list[dict[str, object]] = []

    async def silences(self) -> list[dict[str, object]]:
        return []

    async def silence(self, silence_id: str) -> dict[str, object] | None:
        return None

    async def post_silence(self, body: dict[str, object]) -> str:
        raise AssertionError("nothing is created here")

    async def expire(self, silence_id: str) -> bool:
        self.expired.append(silence_id)
        return True

    async def alerts(self, matchers: list[dict[str, object]]) -> list[dict[str, object]]:
        return self.listed

    async def aclose(self) -> None:
        return None


async def test_an_opened_circuit_expires_the_silence_at_once(tmp_path: Path) -> None:
    from controller.decision.policy_index import PolicyIndex
    from controller.engine.silences import Silences
    from controller.engine.store.outcomes_sql import CircuitRow, OutcomeRow, OutcomeSql
    from controller.observability.metrics import Metrics

    backend = open_store(None, tmp_path / "state")
    try:
        ensure_outcomes(backend)
        index = PolicyIndex()
        p = policy(name="quick", actions={"silence": {"enabled": True}})
        index.upsert(p)
        fake = FakeAlertmanager()
        metrics = Metrics()
        silences = Silences(backend, index, metrics, lambda: 150.0, fake)  # type: ignore[arg-type]
        silences.ensure_schema()
        with backend.transaction() as tx:
            SilenceSql(tx).insert(replace(_row(), policy=p.key))
            OutcomeSql(tx).insert_outcome(
                OutcomeRow(
                    "d1",
                    "inc@1",
                    p.key,
                    p.generation,
                    "pod-restart",
                    "KubePodCrashLooping",
                    "shop/pod/cart",
                    100.0,
                    600,
                    60,
                    "pending",
                    None,
                    None,
                    {},
                )
            )
        await silences.reconcile()
        assert fake.expired == []  # closed circuit, outcome pending: the silence stays
        with backend.transaction() as tx:
            OutcomeSql(tx).put_circuit(CircuitRow(p.key, "pod-restart", "open", 3, 100.0, 140.0, "3 bad", None, 140.0))
        await silences.reconcile()
        assert fake.expired == ["s-1"]
        shown = silence_of(backend, "d1")
        assert shown is not None and (shown["state"], shown["reason"]) == ("expired", "the function's circuit opened")
        assert metrics.silences.labels(result="expired")._value.get() == 1
    finally:
        backend.close()
