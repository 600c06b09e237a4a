"""Prometheus metrics of one controller instance.

Every metric lives on the `Metrics` object's own `CollectorRegistry`, never on
the process-global default registry: two apps in one test process (or the
CLI's one-shot commands next to a server) must not collide on names or share
counts. The app serves `registry` at `/metrics`.

Names keep the prefixes of the system we replace (`agent_sre_*`,
`agent_reasoning_*`) so its dashboards keep working where the meaning is the
same. Labels are bounded sets only (stage names, outcomes, results, routes,
function names from the catalog); fingerprints, pods and ids never become
labels.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Stage latencies span a static annotation (microseconds) to an LLM call (seconds).
STAGE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
REASONING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# TRM recursion (supervision) steps: max_steps is at most 32.
STEP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
# The task type of the TRM runs inside the decision chain (the /reason API's remediation task, too).
REMEDIATION_TASK_TYPE = "remediation"


class Metrics:
    """All instruments of one app; pass it explicitly to whatever records."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.alerts_received = Counter(
            "agent_sre_alerts_received",
            "Alerts accepted into the store, by where they came from and their own status (firing|resolved).",
            ["source", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "agent_sre_decisions",
            "Decisions made, by the chain stage that yielded (none = escalated) and the outcome (trigger|escalate).",
            ["stage", "outcome"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "agent_sre_stage_duration_seconds",
            "Time one chain stage took for one alert.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.trm_confidence = Histogram(
            "agent_sre_trm_confidence_score",
            "Confidence the TRM stage reported for its proposal (accepted or not).",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.trm_batch_size = Histogram(
            "agent_sre_trm_batch_size",
            "Alerts decided together in one TRM call (concurrent decisions share a call under load).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.triggers = Counter(
            "agent_sre_triggers",
            "Delivery attempts of lambda.trigger events: sent, retried (one per retry), "
            "failed (a retry sequence ran out; the outbox keeps it), dead_lettered.",
            ["result"],
            registry=r,
        )
        self.deliveries = Counter(
            "agent_sre_outbox_deliveries",
            "Delivery results of every outbox event (triggers, escalations, approval requests), by CloudEvent type.",
            ["type", "result"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "agent_sre_outbox_depth",
            "Outbox events waiting for delivery (re-read at most a second after a delivery).",
            registry=r,
        )
        self.dedup_hits = Counter(
            "agent_sre_dedup_hits",
            "Work not done twice: a re-sent alert of a known incident (incident),"
            " or a trigger held back by its target's cooldown (cooldown).",
            ["kind"],
            registry=r,
        )
        self.actions = Counter(
            "agent_sre_policy_actions",
            "What the policy's actions made of a decision: trigger, escalation, dry_run, approval_requested, "
            "approved, rejected, approval_expired, approval_cancelled, cooldown, storm_breaker, cancelled_resolved.",
            ["action"],
            registry=r,
        )
        self.approvals_pending = Gauge(
            "agent_sre_approvals_pending",
            "Approval requests waiting for a human.",
            registry=r,
        )
        self.rows_swept = Counter(
            "agent_sre_store_rows_swept",
            "Rows the retention sweep deleted from the state store, by table (incidents, alerts, decisions, outbox, "
            "approvals, responses, cooldowns): finished and idle longer than --retention-days.",
            ["table"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "agent_sre_trm_model_loaded",
            "1 when a TRM checkpoint is loaded and the TRM stage can run.",
            registry=r,
        )
        self.model_device = Gauge(
            "agent_sre_model_device_info",
            "1 for the TRM's device: requested (--device cpu|cuda|auto), actual (cpu, cuda, or none when not "
            "loaded: --device cuda without a usable GPU never falls back) and runtime (onnx or torch).",
            ["requested", "actual", "runtime"],
            registry=r,
        )
        self.remediation_results = Counter(
            "agent_sre_remediation_results",
            "Lambda responses recorded against their decision (io.knative.lambda.response.*).",
            ["function", "result"],
            registry=r,
        )
        self.remediation_outcomes = Counter(
            "agent_sre_remediation_outcomes",
            "Final outcomes of delivered triggers (verified|recurred|ineffective|failed|unknown|superseded).",
            ["policy", "function", "outcome"],
            registry=r,
        )
        self.shadow_decisions = Counter(
            "agent_sre_shadow_decisions",
            "Shadow decisions (a Shadow policy, or a chain stage with shadow: true) whose comparison with the best"
            " ground truth became final, by policy, stage and agreement (agree|disagree_function|"
            "disagree_parameters|shadow_only_action|live_only_action|both_abstain).",
            ["policy", "stage", "agreement"],
            registry=r,
        )
        self.natural_resolutions = Counter(
            "agent_sre_natural_resolutions",
            "Dry-run decisions judged: did the alert resolve with no action within verify.windowSeconds"
            " (resolved|still_firing|unknown), by policy and the function proposed.",
            ["policy", "function", "result"],
            registry=r,
        )
        self.silences = Counter(
            "agent_sre_silences",
            "Alertmanager silences tied to remediation, by what happened (created|extended|expired|failed).",
            ["result"],
            registry=r,
        )
        self.http_requests = Counter(
            "agent_sre_http_requests",
            "HTTP requests served, by route template and status code.",
            ["route", "code"],
            registry=r,
        )
        self.token_reviews = Counter(
            "agent_sre_token_reviews",
            "TokenReviews of Knative OIDC tokens on /events (--events-audience), by result: accepted, rejected, "
            "error (the apiserver did not answer; the request got 503), rejected_cached (a token refused in the "
            "last 10 s, not asked again), busy (too many reviews in flight; 503). Tokens remembered from an "
            "accepted review are not counted again.",
            ["result"],
            registry=r,
        )
        self.reasoning_requests = Counter(
            "agent_reasoning_requests",
            "Reasoning requests (the /reason API and io.homelab.reasoning.requested), by task type and status.",
            ["task_type", "status"],
            registry=r,
        )
        self.reasoning_duration = Histogram(
            "agent_reasoning_duration_seconds",
            "Time to answer one reasoning request, by task type.",
            ["task_type"],
            buckets=REASONING_BUCKETS,
            registry=r,
        )
        self.reasoning_steps = Histogram(
            "agent_reasoning_steps",
            "TRM recursion steps one reasoning run used (the chain's TRM stage and /reason), by task type.",
            ["task_type"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.reasoning_confidence = Histogram(
            "agent_reasoning_confidence",
            "Confidence of one TRM reasoning run's answer (accepted or not), by task type.",
            ["task_type"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        # agent_reasoning_gpu_utilization exists only when the model runs on a GPU (enable_gpu_utilization):
        # absent on CPU, never a misleading zero.
        self.reasoning_gpu_utilization: Gauge | None = None

    def observe_trm(self, steps: int | None, confidence: float | None, task_type: str = REMEDIATION_TASK_TYPE) -> None:
        """One TRM run: its recursion steps and confidence, where known."""
        if steps is not None:
            self.reasoning_steps.labels(task_type=task_type).observe(steps)
        if confidence is not None:
            self.reasoning_confidence.labels(task_type=task_type).observe(confidence)

    def enable_gpu_utilization(self, read: Callable[[], float]) -> None:
        """Export agent_reasoning_gpu_utilization (0-1, read at scrape time); call only for a model on a GPU."""
        if self.reasoning_gpu_utilization is None:
            self.reasoning_gpu_utilization = Gauge(
                "agent_reasoning_gpu_utilization",
                "Utilization (0-1) of the GPU the TRM model runs on, read at scrape time. "
                "Absent when the model runs on the CPU.",
                registry=self.registry,
            )
        self.reasoning_gpu_utilization.set_function(read)
