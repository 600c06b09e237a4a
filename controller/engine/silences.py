"""Alertmanager silences tied to remediation (`spec.actions.silence`, issue #16).

While an automatic remediation runs, the human need not be paged for the
alert it is fixing; the moment it fails they must be, at once. So, per
delivered trigger of a policy with `silence.enabled`:

- create: only once the trigger is delivered (the `outbox` says so), never
  for a dry run, a pending approval or an open circuit (none of them
  delivers a trigger), for `Watchdog` / `InfoInhibitor`, or for a severity
  the policy does not list. One equality matcher per label of the alert,
  `startsAt` now, `endsAt` now + min(verify window, maxSeconds), `createdBy`
  `trm-sre/<policy>`, a `comment` naming the function, the incident and
  `/decisions/<id>`.
- durable, retried, idempotent: the `silences` table
  (`controller.engine.store.silences_sql`) is the silence's outbox; this loop
  (a singleton on a shared store) works it every `silence_interval_s` until
  Alertmanager holds what it says. Before creating, the silences Alertmanager
  already has are searched for ours (same creator, the decision id in the
  comment): a crash between creating one and storing its id adopts it.
- extend: while the alert still fires (Alertmanager lists it as silenced)
  within the policy's cooldown, the silence is re-posted with the same id,
  matchers and startsAt and a later endsAt (an id Alertmanager answers with
  is stored).
- expire (`DELETE /api/v2/silence/{id}`, 404 = already gone): when the
  lambda answers with an error, when the outcome is final (failed,
  ineffective, recurred, unknown, superseded, and verified, so no stale
  silence is left), or when the function's circuit is open.
- resolution: a silenced alert sends no resolved notification
  (alertmanager#226), so the alert is polled (`GET /api/v2/alerts` filtered
  on its labels): once listed as silenced, then gone from two polls in a row, it resolved; the
  outcome is marked resolved (then judged verified or recurred as usual) and
  the silence records `resolution_source: alertmanager-poll`.

An unreachable Alertmanager costs a `failed` count and a retry next round;
the trigger itself was delivered before any of this started.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from controller.decision.policy_index import PolicyIndex
from controller.engine.outcomes import circuit_view
from controller.engine.store import StoreBackend, StoreError
from controller.engine.store.outcomes_sql import OutcomeSql
from controller.engine.store.silences_sql import Candidate, SilenceRow, SilenceSql, Watched, ensure_schema
from controller.observability.metrics import Metrics
from controller.schemas.decision import LAMBDA_TRIGGER
from controller.schemas.policy import Policy

log = logging.getLogger(__name__)

NEVER_SILENCED = frozenset({"Watchdog", "InfoInhibitor"})
RESOLUTION_SOURCE = "alertmanager-poll"
CREATOR_PREFIX = "trm-sre/"


class AlertmanagerError(Exception):
    """Alertmanager could not be reached (`status` None) or refused a request (its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AlertmanagerConfig:
    url: str
    token_file: str | None = None
    ca_file: str | None = None
    timeout_s: float = 5.0


class AlertmanagerClient:
    """The few Alertmanager API v2 calls silences need."""

    def __init__(self, config: AlertmanagerConfig, http: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._base = config.url.rstrip("/")
        verify: Any = True
        if config.ca_file:
            verify = ssl.create_default_context(cafile=config.ca_file)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=config.timeout_s, verify=verify, follow_redirects=False)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        if not self._config.token_file:
            return {}
        token = Path(self._config.token_file).read_text().strip()  # re-read: a projected token rotates
        return {"Authorization": f"Bearer {token}"}

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, self._base + path, headers=self._headers(), **kwargs)
        except (httpx.HTTPError, OSError) as exc:
            raise AlertmanagerError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _ok(response: httpx.Response, what: str) -> None:
        if not 200 <= response.status_code < 300:
            raise AlertmanagerError(
                f"{what}: Alertmanager answered {response.status_code}: {response.text[:300]}", response.status_code
            )

    async def silences(self) -> list[dict[str, Any]]:
        response = await self._request("GET", "/api/v2/silences")
        self._ok(response, "list silences")
        return list(response.json())

    async def silence(self, silence_id: str) -> dict[str, Any] | None:
        response = await self._request("GET", f"/api/v2/silence/{silence_id}")
        if response.status_code == 404:
            return None
        self._ok(response, "get silence")
        return dict(response.json())

    async def post_silence(self, body: dict[str, Any]) -> str:
        response = await self._request("POST", "/api/v2/silences", json=body)
        self._ok(response, "post silence")
        return str(response.json()["silenceID"])

    async def expire(self, silence_id: str) -> bool:
        """Expire a silence; False if Alertmanager no longer knew it (404: already gone)."""
        response = await self._request("DELETE", f"/api/v2/silence/{silence_id}")
        if response.status_code == 404:
            return False
        if not 200 <= response.status_code < 300:
            # Alertmanager refuses to expire a silence that already expired (someone expired it by hand).
            current = await self.silence(silence_id)
            if current is None or current.get("status", {}).get("state") == "expired":
                return False
        self._ok(response, "expire silence")
        return True

    async def alerts(self, matchers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Alerts matching every matcher, silenced ones included."""
        params: list[tuple[str, str]] = [("filter", f'{m["name"]}="{_escape(m["value"])}"') for m in matchers]
        params += [("silenced", "true"), ("active", "true"), ("inhibited", "true")]
        response = await self._request("GET", "/api/v2/alerts", params=params)
        self._ok(response, "list alerts")
        return list(response.json())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def created_by(policy: str) -> str:
    return f"{CREATOR_PREFIX}{policy}"


def why_not(policy: Policy | None, candidate: Candidate, labels: dict[str, str]) -> str | None:
    """Why this delivered trigger gets no silence (None: it gets one)."""
    if policy is None:
        return "policy not found"
    silence = policy.spec.actions.silence
    if not silence.enabled:
        return "silences not enabled"
    if labels.get("alertname", "") in NEVER_SILENCED:
        return f"{labels.get('alertname')} is never silenced"
    if labels.get("severity", "") not in silence.severities:
        return f"severity {labels.get('severity', '')!r} not in {silence.severities}"
    if candidate.lambda_result == "error":
        return "the lambda already answered with an error"
    if candidate.outcome_state != "pending":
        return f"the outcome is already {candidate.outcome_state}"
    return None


class Silences:
    """The silence loop; see the module docstring."""

    def __init__(
        self,
        store: StoreBackend,
        index: PolicyIndex,
        metrics: Metrics,
        clock: Callable[[], float],
        client: AlertmanagerClient,
        *,
        interval_s: float = 5.0,
    ) -> None:
        self._store = store
        self._index = index
        self._metrics = metrics
        self._clock = clock
        self._client = client
        self._interval_s = interval_s
        self._schema_ready = False
        self._absent_once: set[str] = set()  # decisions whose silenced alert one poll did not list

    def ensure_schema(self) -> None:
        if not self._schema_ready:
            ensure_schema(self._store)
            self._schema_ready = True

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except StoreError as exc:
                log.warning("cannot work silences (will retry): %s", exc)
            await asyncio.sleep(self._interval_s)

    def _count(self, result: str) -> None:
        self._metrics.silences.labels(result=result).inc()

    async def reconcile(self) -> None:
        """One pass: create what is due, expire what must go, extend and poll what stays."""
        await asyncio.to_thread(self.ensure_schema)
        candidates = await asyncio.to_thread(self._read, lambda sql: sql.candidates(LAMBDA_TRIGGER))
        existing: list[dict[str, Any]] | None = None
        for candidate in candidates:
            try:
                if existing is None and await asyncio.to_thread(self._wanted, candidate):
                    existing = await self._client.silences()
                await self._create(candidate, existing or [])
            except AlertmanagerError as exc:
                self._count("failed")
                log.warning(
                    "cannot create a silence (will retry)", extra={"decision": candidate.decision_id, "error": str(exc)}
                )
                break  # Alertmanager is down: one probe per round
        watched = await asyncio.to_thread(self._read, lambda sql: sql.watched())
        for item in watched:
            try:
                await self._watch(item)
            except AlertmanagerError as exc:
                self._count("failed")
                await asyncio.to_thread(
                    self._write,
                    lambda sql, i=item, e=exc: sql.failed_attempt(i.silence.decision_id, str(e), self._clock()),
                )
                log.warning(
                    "silence request failed (will retry)",
                    extra={"decision": item.silence.decision_id, "error": str(exc)},
                )
                if exc.status is None:
                    break  # unreachable: one probe per round; a refusal of one silence does not hold the others

    def _read(self, fn: Callable[[SilenceSql], Any]) -> Any:
        with self._store.reading() as tx:
            return fn(SilenceSql(tx))

    def _write(self, fn: Callable[[SilenceSql], Any]) -> Any:
        with self._store.transaction(durable=False) as tx:
            return fn(SilenceSql(tx))

    def _wanted(self, candidate: Candidate) -> bool:
        labels = dict(candidate.trigger_data.get("alert", {}).get("labels", {}))
        return why_not(self._index.get(candidate.policy), candidate, labels) is None and not self._circuit_open(
            candidate.policy, candidate.function
        )

    def _circuit_open(self, policy_key: str, function: str) -> bool:
        policy = self._index.get(policy_key)
        if policy is None:
            return False
        with self._store.reading() as tx:
            row = OutcomeSql(tx).circuit(policy_key, function)
        return circuit_view(row, policy.spec.actions.circuit_breaker, self._clock()).state == "open"

    async def _create(self, candidate: Candidate, existing: list[dict[str, Any]]) -> None:
        now = self._clock()
        labels = {str(k): str(v) for k, v in candidate.trigger_data.get("alert", {}).get("labels", {}).items()}
        policy = self._index.get(candidate.policy)
        reason = why_not(policy, candidate, labels)
        if reason is None and await asyncio.to_thread(self._circuit_open, candidate.policy, candidate.function):
            reason = "the function's circuit is open"
        matchers = [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(labels.items())]
        creator = created_by(candidate.policy)
        comment = (
            f"trm-sre is remediating: {candidate.function} for incident {candidate.incident_key};"
            f" decision {candidate.decision_id}: /decisions/{candidate.decision_id}"
        )
        ends_at = now
        if policy is not None:
            ends_at = now + min(candidate.window_seconds, policy.spec.actions.silence.max_seconds)
        row = SilenceRow(
            decision_id=candidate.decision_id,
            policy=candidate.policy,
            function=candidate.function,
            incident_key=candidate.incident_key,
            matchers=matchers,
            starts_at=now,
            ends_at=ends_at,
            created_by=creator,
            comment=comment,
            silence_id=None,
            state="skipped" if reason else "active",
            reason=reason or "",
            seen_silenced_at=None,
            resolved_at=None,
            resolution_source=None,
            attempts=0,
            last_error="",
            created_at=now,
            updated_at=now,
        )
        if reason is not None:
            await asyncio.to_thread(self._write, lambda sql: sql.insert(row))
            return
        adopted = next(
            (
                s
                for s in existing
                if s.get("createdBy") == creator
                and candidate.decision_id in str(s.get("comment", ""))
                and s.get("status", {}).get("state") != "expired"
            ),
            None,
        )
        if adopted is not None:
            silence_id = str(adopted["id"])
            log.info("adopted an existing silence", extra={"decision": candidate.decision_id, "silence": silence_id})
        else:
            body = {
                "matchers": matchers,
                "startsAt": _iso(now),
                "endsAt": _iso(ends_at),
                "createdBy": creator,
                "comment": comment,
            }
            silence_id = await self._client.post_silence(body)
            self._count("created")
            log.info("silence created", extra={"decision": candidate.decision_id, "silence": silence_id})
        self.after_create(candidate.decision_id, silence_id)
        stored = replace_id(row, silence_id)
        await asyncio.to_thread(self._write, lambda sql: sql.insert(stored))

    def after_create(self, decision_id: str, silence_id: str) -> None:
        """Between creating a silence and storing its id (tests crash here)."""

    async def _watch(self, item: Watched) -> None:
        s = item.silence
        now = self._clock()
        if s.state == "active":
            reason = await asyncio.to_thread(self._expire_reason, item)
            if reason is not None:
                await asyncio.to_thread(self._write, lambda sql: sql.want_expired(s.decision_id, reason, now))
                s = replace_state(s, "expiring", reason)
        if s.state == "expiring":
            if s.silence_id:
                await self._client.expire(s.silence_id)
            await asyncio.to_thread(self._write, lambda sql: sql.set_state(s.decision_id, "expired", self._clock()))
            self._count("expired")
            log.info("silence expired", extra={"decision": s.decision_id, "silence": s.silence_id, "reason": s.reason})
            return
        if s.resolved_at is not None or not s.silence_id:
            return
        alerts = await self._client.alerts(s.matchers)
        mine = [a for a in alerts if s.silence_id in (a.get("status", {}).get("silencedBy") or [])]
        if alerts:
            self._absent_once.discard(s.decision_id)
            if mine and s.seen_silenced_at is None:
                await asyncio.to_thread(self._write, lambda sql: sql.seen_silenced(s.decision_id, now))
            await self._maybe_extend(s, now)
            return
        if s.seen_silenced_at is None and not mine:
            return  # never seen under our silence: its absence says nothing yet
        if s.decision_id not in self._absent_once:  # twice in a row: not a blip (an Alertmanager restarting)
            self._absent_once.add(s.decision_id)
            return
        self._absent_once.discard(s.decision_id)
        await asyncio.to_thread(self._resolve, s.decision_id, now)
        log.info("silenced alert resolved (seen by polling Alertmanager)", extra={"decision": s.decision_id})

    def _resolve(self, decision_id: str, now: float) -> None:
        with self._store.transaction(durable=False) as tx:
            if SilenceSql(tx).resolved(decision_id, RESOLUTION_SOURCE, now):
                OutcomeSql(tx).mark_resolved(decision_id, now)

    def _expire_reason(self, item: Watched) -> str | None:
        s = item.silence
        if item.lambda_result == "error":
            return "the lambda answered with an error"
        if item.outcome_state is None:
            return "the outcome is gone"
        if item.outcome_state not in ("pending", "resolved"):
            return f"outcome {item.outcome_state}"
        if self._circuit_open(s.policy, s.function):
            return "the function's circuit opened"
        if self._index.get(s.policy) is None:
            return "the policy was deleted"
        return None

    async def _maybe_extend(self, s: SilenceRow, now: float) -> None:
        policy = self._index.get(s.policy)
        if policy is None or not s.silence_id:
            return
        actions = policy.spec.actions
        length = min(actions.verify.window_seconds, actions.silence.max_seconds)
        # Within the cooldown only; and only once less than half the silence is left (not every round).
        if now >= s.starts_at + actions.cooldown_seconds or s.ends_at - now > length / 2:
            return
        current = await self._client.silence(s.silence_id)
        if current is None or current.get("status", {}).get("state") == "expired":
            return
        ends_at = now + length
        body = {
            "id": s.silence_id,
            "matchers": current["matchers"],
            "startsAt": current["startsAt"],
            "endsAt": _iso(ends_at),
            "createdBy": current["createdBy"],
            "comment": current["comment"],
        }
        new_id = await self._client.post_silence(body)
        await asyncio.to_thread(self._write, lambda sql: sql.extended(s.decision_id, new_id, ends_at, now))
        self._count("extended")
        log.info("silence extended", extra={"decision": s.decision_id, "silence": new_id})


def replace_id(row: SilenceRow, silence_id: str) -> SilenceRow:
    return replace(row, silence_id=silence_id)


def replace_state(row: SilenceRow, state: str, reason: str) -> SilenceRow:
    return replace(row, state=state, reason=reason)


def silence_of(store: StoreBackend, decision_id: str) -> dict[str, Any] | None:
    """`silence` of `GET /decisions/{id}` and `trm-sre explain` (None: no silence was considered)."""
    with store.reading() as tx:
        s = SilenceSql(tx).silence(decision_id)
    if s is None:
        return None
    return {
        "state": s.state,
        "silenceId": s.silence_id,
        "reason": s.reason or None,
        "matchers": s.matchers,
        "startsAt": _iso(s.starts_at),
        "endsAt": _iso(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "resolvedAt": _iso(s.resolved_at) if s.resolved_at is not None else None,
        "resolutionSource": s.resolution_source,
        "lastError": s.last_error or None,
    }


__all__ = ["AlertmanagerClient", "AlertmanagerConfig", "Silences", "silence_of"]
