"""`PipelineSettings`: how the engine delivers and how much it takes on (moved here unchanged from pipeline.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PipelineSettings:
    """How the engine delivers and how much it takes on. Times in seconds."""

    #: K_SINK: where events go when the policy names no sink. None: appended to `<state dir>/triggers.jsonl`.
    sink: str | None = None
    #: `source` of every CloudEvent we emit.
    ce_source: str = "/trm-sre"
    #: K_CE_OVERRIDES extensions (parsed by the edge), added to every event at send time.
    ce_overrides: dict[str, str] = field(default_factory=dict)
    #: Alerts waiting for a decision; beyond this `ingest` raises Overloaded (Alertmanager retries on 503).
    queue_size: int = 10_000
    #: Also refuse once the waiting alerts would take longer than this to decide at the rate measured
    #: under backlog: an alert acknowledged now should still be acted on within a minute, and one
    #: answered 503 is retried by Alertmanager (a fixed count means minutes of work on a slow node).
    #: 45 s leaves a quarter of that minute for the rate to have been measured too high and for delivery.
    max_queue_wait_s: float = 45.0
    #: The decision rate assumed until one has been measured under backlog.
    assumed_decisions_per_s: float = 50.0
    #: Concurrent decisions. Each mostly waits (the model batcher, a thread hand-off, an LLM server),
    #: and concurrent TRM asks become one batch, so this is also the largest batch the model sees.
    workers: int = 32
    #: Requests per delivery before the entry is left to the replay loop; Knative's default retry is similar.
    delivery_attempts: int = 6
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    #: How often the outbox loop replays what a sink outage left pending.
    redeliver_interval_s: float = 5.0
    sink_timeout_s: float = 5.0
    #: An event still undelivered after this long is dead-lettered (a remediation an hour late is a new risk).
    outbox_max_age_s: float = 3600.0
    #: How often unanswered approval requests are checked for expiry.
    approval_check_interval_s: float = 1.0
    #: Concurrent requests to sinks.
    delivery_concurrency: int = 16
    #: Retry-After when overloaded or stopping.
    overload_retry_after_s: int = 5
    #: Finished incidents (with their alerts, decision, outbox entries, approval, responses) and ended
    #: cooldowns are deleted once idle this many days; 0 keeps everything. What is never deleted, and why
    #: this must exceed Alertmanager's repeat_interval: `Store.sweep_finished_incidents`.
    retention_days: int = 30
    #: How often the retention sweep runs, and how soon after start the first one does.
    retention_interval_s: float = 600.0
    retention_first_sweep_s: float = 60.0
    #: Incidents deleted per transaction (about five rows each; at most 500): the store's lock, which
    #: the webhook path shares, is held for one chunk at a time, a few milliseconds.
    retention_chunk: int = 200
