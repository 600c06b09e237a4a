"""Selector adapters, so ``trm-sre eval --selector rules|chain`` can score the decision core like the model.

Both take plain Alertmanager alert objects (the shape `TRMSelector.select_batch`
takes) and return one `Selection` per alert, in order:

- `RulesSelector`: only the default policy's rules stage, the deterministic baseline;
- `ChainSelector`: the default policy's full chain (static annotation → TRM → rules),
  with the TRM when a checkpoint loads, else with the TRM stage handing over.

They run `decide` on a private event loop, so they work from plain synchronous
code and also when called from a thread that already runs a loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from controller.decision.chain import decide
from controller.decision.stages import ModelSelector, StageClients
from controller.defaults import load_default_policy
from controller.schemas.alerts import Alert, AlertEvent
from controller.schemas.decision import Decision
from controller.schemas.policy import Policy, Stage
from runbooks import Catalog, default_catalog

log = logging.getLogger(__name__)
T = TypeVar("T")

# Evaluation sets often carry only labels and annotations; an alert needs a status and a start.
_ALERT_DEFAULTS = {"status": "firing", "startsAt": "1970-01-01T00:00:00Z"}


@dataclass(frozen=True)
class Selection:
    """One alert's outcome in the shape evaluation compares with the model's `ModelDecision`."""

    lambda_function: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    stage: str | None = None
    reasoning: str = ""

    @classmethod
    def of(cls, decision: Decision) -> Selection:
        if decision.outcome != "trigger":
            return cls(None, {}, 0.0, None, decision.reasoning)
        confidence = decision.confidence if decision.confidence is not None else 0.0
        return cls(decision.function, dict(decision.parameters), confidence, decision.stage, decision.reasoning)


def event_from_alert(alert: dict[str, Any]) -> AlertEvent:
    """A plain alert object → AlertEvent, filling status/startsAt when an evaluation set omits them."""
    return AlertEvent(alert=Alert.model_validate({**_ALERT_DEFAULTS, **alert}), source="cli")


def _run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from inside a running loop: run ours on a worker thread instead of nesting loops.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class _PolicySelector:
    def __init__(self, policy: Policy, catalog: Catalog, clients: StageClients) -> None:
        self.policy = policy
        self.catalog = catalog
        self.clients = clients

    async def _decide_all(self, alerts: Sequence[dict[str, Any]], policy: Policy) -> list[Decision]:
        return [await decide(event_from_alert(a), policy, self.catalog, self.clients) for a in alerts]

    def _policy_for(self, max_steps: int | None) -> Policy:
        return self.policy

    def decide_batch(self, alerts: Sequence[dict[str, Any]], *, max_steps: int | None = None) -> list[Decision]:
        """Full decisions (with traces), for callers that want more than the selection."""
        return _run_sync(self._decide_all(alerts, self._policy_for(max_steps)))

    def select_batch(self, alerts: Sequence[dict[str, Any]], *, max_steps: int | None = None) -> list[Selection]:
        return [Selection.of(d) for d in self.decide_batch(alerts, max_steps=max_steps)]

    def select(self, alert: dict[str, Any], *, max_steps: int | None = None) -> Selection:
        return self.select_batch([alert], max_steps=max_steps)[0]


class RulesSelector(_PolicySelector):
    """The default policy's rules stage alone (no annotation, no model); `max_steps` is ignored."""

    def __init__(self, policy: Policy | None = None, catalog: Catalog | None = None) -> None:
        base = policy or load_default_policy()
        rules = tuple(stage for stage in base.spec.chain if stage.rules is not None)
        if not rules:
            raise ValueError(f"policy {base.key} has no rules stage")
        super().__init__(_with_chain(base, rules[:1]), catalog or default_catalog(), StageClients())


def _with_chain(policy: Policy, chain: tuple[Stage, ...]) -> Policy:
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"chain": chain})})


def _with_trm_options(policy: Policy, **options: int) -> Policy:
    chain = tuple(
        stage.model_copy(update={"trm": stage.trm.model_copy(update=options)}) if stage.trm else stage
        for stage in policy.spec.chain
    )
    return _with_chain(policy, chain)


def load_trm(
    checkpoint_dir: Any = None, device: str = "cpu", catalog: Catalog | None = None, threads: int | None = None
) -> Any:
    """The TRM from `checkpoint_dir` (the default checkpoint when None), or None (logged) when it cannot load."""
    try:
        from models.selector import CheckpointError, TRMSelector
    except ImportError as exc:
        log.warning("TRM unavailable (%s); the chain runs without it", exc)
        return None
    try:
        return TRMSelector.load(checkpoint_dir, device=device, catalog=catalog or default_catalog(), threads=threads)
    except (CheckpointError, OSError) as exc:
        log.warning("TRM checkpoint not loaded (%s); the chain runs without it", exc)
        return None


class ChainSelector(_PolicySelector):
    """The default policy's whole chain.

    `trm`: "auto" (the default, so `ChainSelector()` is what ``eval --selector chain``
    measures) loads the default checkpoint when it is there; None runs without the
    model (its stage reports ERROR and hands over); or pass a loaded selector.
    `trm_timeout_ms` replaces the TRM stage's time limit: an evaluation on a busy machine
    should measure the model's choices, not the machine's load. `max_steps` in
    `select_batch` replaces the TRM stage's maxSteps for that batch.
    """

    def __init__(
        self,
        trm: ModelSelector | Literal["auto"] | None = "auto",
        policy: Policy | None = None,
        catalog: Catalog | None = None,
        trm_timeout_ms: int | None = None,
    ) -> None:
        catalog = catalog or default_catalog()
        chosen = policy or load_default_policy()
        if trm_timeout_ms is not None:
            chosen = _with_trm_options(chosen, timeout_ms=trm_timeout_ms)
        model = load_trm(catalog=catalog) if trm == "auto" else trm
        super().__init__(chosen, catalog, StageClients(trm=model))

    def _policy_for(self, max_steps: int | None) -> Policy:
        return self.policy if max_steps is None else _with_trm_options(self.policy, max_steps=max_steps)

    @classmethod
    def load(
        cls,
        checkpoint_dir: Any = None,
        device: str = "cpu",
        threads: int | None = None,
        trm_timeout_ms: int | None = None,
    ) -> ChainSelector:
        """With the TRM from `checkpoint_dir` (default checkpoint when None), or without it if it cannot load."""
        catalog = default_catalog()
        model = load_trm(checkpoint_dir, device=device, catalog=catalog, threads=threads)
        return cls(model, catalog=catalog, trm_timeout_ms=trm_timeout_ms)
