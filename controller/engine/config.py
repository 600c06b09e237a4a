"""How the engine delivers and how much it takes on: the `engine` section of the settings model.

Times in seconds. Every field has the default a single-replica install wants;
`controller.settings.Settings.engine` exposes them as `TRM_SRE_ENGINE__<FIELD>`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EngineSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: K_SINK: where events go when the policy names no sink. None: appended to `<state dir>/triggers.jsonl`.
    sink: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="default CloudEvents sink (Knative's K_SINK); none: <state dir>/triggers.jsonl",
    )
    #: `source` of every CloudEvent we emit.
    ce_source: str = Field("/trm-sre", min_length=1, description="the `source` attribute of every CloudEvent emitted")
    #: K_CE_OVERRIDES extensions (Knative SinkBinding), added to every event at send time.
    ce_overrides: dict[str, str] = Field(
        default_factory=dict, description="extensions added to every CloudEvent (K_CE_OVERRIDES)"
    )
    #: Alerts waiting for a decision; beyond this `ingest` raises Overloaded (Alertmanager retries on 503).
    queue_size: int = Field(10_000, ge=1, description="alerts waiting for a decision; beyond it 503 + Retry-After")
    #: Also refuse once the waiting alerts would take longer than this to decide at the rate measured
    #: under backlog: an alert acknowledged now should still be acted on within a minute, and one
    #: answered 503 is retried by Alertmanager (a fixed count means minutes of work on a slow node).
    #: 45 s leaves a quarter of that minute for the rate to have been measured too high and for delivery.
    max_queue_wait_s: float = Field(
        45.0, gt=0, description="refuse alerts once the queue holds this many seconds of work"
    )
    #: The decision rate assumed until one has been measured under backlog.
    assumed_decisions_per_s: float = Field(50.0, gt=0, description="decision rate assumed until one is measured")
    #: Concurrent decisions. Each mostly waits (the model batcher, a thread hand-off, an LLM server),
    #: and concurrent TRM asks become one batch, so this is also the largest batch the model sees.
    workers: int = Field(32, ge=1, description="concurrent decisions (also the largest TRM batch)")
    #: Requests per delivery before the entry is left to the replay loop; Knative's default retry is similar.
    delivery_attempts: int = Field(6, ge=1, description="requests per delivery before the replay loop takes over")
    backoff_initial_s: float = Field(0.2, gt=0, description="first delivery retry delay")
    backoff_max_s: float = Field(10.0, gt=0, description="longest delivery retry delay")
    #: How often the outbox loop replays what a sink outage left pending.
    redeliver_interval_s: float = Field(5.0, gt=0, description="how often pending deliveries are replayed")
    sink_timeout_s: float = Field(5.0, gt=0, description="timeout of one delivery request")
    #: An event still undelivered after this long is dead-lettered (a remediation an hour late is a new risk).
    outbox_max_age_s: float = Field(3600.0, gt=0, description="undelivered events older than this are dead-lettered")
    #: How often unanswered approval requests are checked for expiry.
    approval_check_interval_s: float = Field(1.0, gt=0, description="how often approval expiry is checked")
    #: Concurrent requests to sinks.
    delivery_concurrency: int = Field(16, ge=1, description="concurrent requests to sinks")
    #: Retry-After when overloaded or stopping.
    overload_retry_after_s: int = Field(5, ge=1, description="Retry-After seconds when overloaded or stopping")
    #: Finished incidents (with their alerts, decision, outbox entries, approval, responses) and ended
    #: cooldowns are deleted once idle this many days; 0 keeps everything. What is never deleted, and why
    #: this must exceed Alertmanager's repeat_interval: `Store.sweep_finished_incidents`.
    retention_days: int = Field(
        30,
        ge=0,
        le=36_500,
        description="delete finished incidents idle this many days (0 keeps everything; > repeat_interval)",
    )
    #: How often the retention sweep runs, and how soon after start the first one does.
    retention_interval_s: float = Field(600.0, gt=0, description="how often the retention sweep runs")
    retention_first_sweep_s: float = Field(60.0, ge=0, description="seconds after start of the first sweep")
    #: Incidents deleted per transaction (about five rows each; at most 500): the store's lock, which
    #: the webhook path shares, is held for one chunk at a time, a few milliseconds.
    retention_chunk: int = Field(200, ge=1, le=500, description="incidents deleted per sweep transaction")
    #: A shared store (PostgreSQL, several replicas): an undecided alert or an outbox entry a replica holds is
    #: handed to another once this lease runs out (its holder was killed); longer than a decision takes
    #: under backlog (`max_queue_wait_s`) and than one delivery with its retries.
    claim_lease_s: float = Field(60.0, gt=0, description="shared store: seconds a replica holds claimed work")
    #: A shared store: how often a replica looks for work whose lease ran out, and for a singleton loop's lock.
    claim_interval_s: float = Field(5.0, gt=0, description="shared store: how often unclaimed work is looked for")
    #: How often delivered triggers' outcomes are judged (`controller.engine.outcomes`); the judgement itself uses
    #: timestamps, so this only bounds how late an outcome (and a circuit opening) is noticed.
    outcome_interval_s: float = Field(5.0, gt=0, description="how often trigger outcomes are evaluated")
    #: Alertmanager's API (`controller.engine.silences`): where silences tied to remediation are created,
    #: extended and expired, and silenced alerts polled for resolution. None: no silences at all.
    alertmanager_url: str | None = Field(
        None, pattern=r"^https?://\S+$", description="Alertmanager API base URL for silences (none: no silences)"
    )
    alertmanager_token_file: str | None = Field(
        None, description="file holding a bearer token for the Alertmanager API (re-read on every request)"
    )
    alertmanager_ca_file: str | None = Field(None, description="PEM CA bundle to verify Alertmanager's certificate")
    silence_interval_s: float = Field(
        5.0, gt=0, description="how often silences are created, extended, expired, polled"
    )
