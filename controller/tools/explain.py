"""`trm-sre select` and `trm-sre explain`: a decision made by hand, or read back from the store, and shown.

Fresh decisions run the same chain the controller runs, on the alert read
from stdin or a file; stored ones come from `--state-dir` or a running
server (`--url`). Rendering is plain text when the output is not a terminal,
rich tables when it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from controller.tools import PROG

# --------------------------------------------------------------------------
# select / explain (fresh decisions)
# --------------------------------------------------------------------------


class InputError(ValueError):
    """The alert input is not an alert object or a webhook payload."""


def events_from_json(doc: Any) -> list[Any]:
    """An Alertmanager alert object → one event; a webhook payload → one per alert."""
    from pydantic import ValidationError

    from controller.schemas.alerts import (
        Alert,
        AlertEvent,
        AlertmanagerPayload,
        split_payload,
    )

    if not isinstance(doc, dict):
        raise InputError("expected a JSON object: an Alertmanager alert or a whole webhook payload")
    try:
        if "alerts" in doc:
            return split_payload(AlertmanagerPayload.model_validate(doc))
        fields = {"status": "firing", "startsAt": datetime.now(UTC).isoformat(), **doc}
        return [AlertEvent(alert=Alert.model_validate(fields), source="cli")]
    except ValidationError as exc:
        raise InputError(f"not a valid alert or webhook payload: {exc}") from exc


def _read_json(stream: TextIO, what: str) -> Any:
    try:
        return json.load(stream)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON: {exc}") from exc


async def _decide_all(args: argparse.Namespace, events: list[Any]) -> list[tuple[Any, Any]]:
    """(event, Decision or None) for each event, under --policies or the default policy."""
    import httpx

    from controller.app import standalone_policies
    from controller.decision.chain import decide, select_policy
    from controller.decision.policy_index import PolicyIndex
    from controller.decision.stages import StageClients
    from controller.engine.llm_http import HttpChatTransport
    from controller.engine.model_loader import load_model
    from runbooks import default_catalog

    catalog = default_catalog()
    index = PolicyIndex()
    for policy in standalone_policies(tuple(Path(p) for p in args.policies or ())):
        index.upsert(policy)
    model = load_model(
        not args.no_model,
        Path(args.checkpoint) if args.checkpoint else None,
        args.device,
        catalog,
        runtime=getattr(args, "runtime", "onnx"),
    )
    if model.status == "unavailable":
        print(f"{PROG}: warning: {model.readiness_problem()}", file=sys.stderr)
    results = []
    async with httpx.AsyncClient() as http:
        clients = StageClients(trm=model.selector, chat=HttpChatTransport(http), secrets=None)
        for event in events:
            policy = select_policy(event, index)
            results.append((event, None if policy is None else await decide(event, policy, catalog, clients)))
    return results


def _decision_json(event: Any, decision: Any) -> dict[str, Any]:
    if decision is None:
        return {
            "alertname": event.alert.alertname,
            "fingerprint": event.fingerprint,
            "outcome": "no_policy",
            "policy": None,
            "reasoning": "no RemediationPolicy matches this alert",
        }
    out: dict[str, Any] = decision.model_dump(mode="json")
    return out


def cmd_select(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    from controller.observability.logging import configure_logging
    from controller.settings import SettingsError

    configure_logging("WARNING")
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        doc = _read_json(stdin, "stdin")
        events = events_from_json(doc)
        results = asyncio.run(_decide_all(args, events))
    except (InputError, SettingsError) as exc:
        print(f"{PROG} select: error: {exc}", file=sys.stderr)
        return 2
    decisions = [_decision_json(event, decision) for event, decision in results]
    output: Any = decisions if "alerts" in doc else decisions[0]
    json.dump(output, stdout, indent=2, sort_keys=True)
    stdout.write("\n")
    return 0


def cmd_explain(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    from controller.observability.logging import configure_logging
    from controller.settings import SettingsError

    configure_logging("WARNING")
    stdout = stdout or sys.stdout
    rich = stdout.isatty() and not args.json
    path = Path(args.target)
    try:
        if path.is_file():
            with path.open() as handle:
                events = events_from_json(_read_json(handle, str(path)))
            results = asyncio.run(_decide_all(args, events))
            if args.json:
                json.dump([_decision_json(e, d) for e, d in results], stdout, indent=2, sort_keys=True)
                stdout.write("\n")
                return 0
            for event, decision in results:
                render_decision(_decision_json(event, decision), stdout, rich=rich)
            return 0
        history = _fetch_history(args)
    except (InputError, SettingsError, LookupError, OSError) as exc:
        print(f"{PROG} explain: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, LookupError) else 2
    if args.json:
        json.dump(history, stdout, indent=2, sort_keys=True, default=str)
        stdout.write("\n")
    else:
        render_history(history, stdout, rich=rich)
    return 0


def _fetch_history(args: argparse.Namespace) -> dict[str, Any]:
    """A stored decision by id: from a running server (--url) or straight from the store."""
    decision_id = args.target
    if args.url:
        import httpx

        token = (
            Path(args.token_file).read_text().strip() if args.token_file else os.environ.get("TRM_SRE_WEBHOOK_TOKEN")
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = httpx.get(f"{args.url.rstrip('/')}/decisions/{decision_id}", headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise OSError(f"cannot reach {args.url}: {exc}") from exc
        if response.status_code == 404:
            raise LookupError(f"no decision {decision_id} at {args.url}")
        if response.status_code != 200:
            raise OSError(f"{args.url} answered {response.status_code}: {response.text[:200]}")
        found: dict[str, Any] = response.json()
        return found
    from controller.engine.store import StoreError
    from controller.settings import default_state_dir

    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    if not state_dir.is_dir():
        raise OSError(
            f"no state directory {state_dir} (is --state-dir right? or is {decision_id!r} a file that does not exist?)"
        )
    try:
        stored = read_stored_decision(state_dir, decision_id)
    except StoreError as exc:
        raise OSError(str(exc)) from exc
    if stored is None:
        raise LookupError(f"no decision {decision_id} in {state_dir}")
    return stored


def read_stored_decision(state_dir: Path, decision_id: str) -> dict[str, Any] | None:
    """The decision as `GET /decisions/{id}` shows it, read from the store in `state_dir`.

    SQLite in WAL mode lets this read while a running controller writes.
    """
    from controller.engine.approvals import correction_of
    from controller.engine.history import history_as_json
    from controller.engine.outcomes import verification_of
    from controller.engine.silences import silence_of
    from controller.engine.store import Store, StoreError

    store = Store.open(state_dir)
    try:
        history = store.decision_history(decision_id)
        try:
            verification = verification_of(store, decision_id)
        except StoreError:  # a store from before outcomes existed: no table yet
            verification = None
        try:
            silence = silence_of(store, decision_id)
        except StoreError:  # no silences table: never configured with an Alertmanager URL
            silence = None
        correction = correction_of(store, decision_id)
    finally:
        store.close()
    if history is None:
        return None
    return {**history_as_json(history), "verification": verification, "silence": silence, "correction": correction}


# --------------------------------------------------------------------------
# Rendering (plain text when not a terminal, rich tables when it is)
# --------------------------------------------------------------------------


def _params_text(parameters: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(parameters.items())) or "(no parameters)"


def _result_line(decision: dict[str, Any]) -> str:
    outcome = decision.get("outcome")
    if outcome == "trigger":
        confidence = decision.get("confidence")
        conf = f", confidence {confidence:.2f}" if isinstance(confidence, (int, float)) else ""
        parameters = _params_text(decision.get("parameters") or {})
        return f"trigger {decision.get('function')} {parameters} (by {decision.get('stage')}{conf})"
    if outcome == "escalate":
        return "escalate: no stage yielded a valid, allowed remediation"
    return f"{outcome}: {decision.get('reasoning', '')}"


def _stage_rows(trace: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for number, stage in enumerate(trace, start=1):
        proposal = ""
        if stage.get("function"):
            proposal = f"{stage['function']} {_params_text(stage.get('parameters') or {})}"
        confidence = stage.get("confidence")
        if isinstance(confidence, (int, float)):
            proposal += f" @ {confidence:.2f}"
        rows.append(
            (
                f"{number}. {stage.get('stage')}",
                str(stage.get("outcome")),
                f"{stage.get('latency_ms', 0):.1f} ms",
                proposal.strip(),
                str(stage.get("reason", "")),
            )
        )
    return rows


def render_decision(decision: dict[str, Any], out: TextIO, *, rich: bool = False) -> None:
    """One decision: what was decided, then every chain stage and why it was accepted or passed over."""
    head = [
        f"decision {decision.get('id') or '-'}",
        (
            f"  alert:    {decision.get('alertname') or '?'} (fingerprint {decision.get('fingerprint') or '?'}, "
            f"incident {decision.get('incident_key') or '?'})"
        ),
        f"  policy:   {decision.get('policy') or '(none matches)'}",
        f"  result:   {_result_line(decision)}",
    ]
    out.write("\n".join(head) + "\n")
    rows = _stage_rows(list(decision.get("trace") or []))
    if not rows:
        out.write("\n")
        return
    if rich:
        from rich.console import Console
        from rich.table import Table

        table = Table("stage", "outcome", "time", "proposal", "reason", title="chain", title_justify="left")
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
    else:
        out.write("  stages:\n")
        for name, outcome, latency, proposal, reason in rows:
            out.write(f"    {name:<20} {outcome:<16} {latency:>10}  {proposal}\n")
            out.write(f"    {'':<20} {reason}\n")
    out.write("\n")


def render_history(history: dict[str, Any], out: TextIO, *, rich: bool = False) -> None:
    """A stored decision (`GET /decisions/{id}`) plus what happened to it afterwards."""
    incident = history.get("incident") or {}
    decision = {
        **history,
        "alertname": history.get("alertname") or incident.get("alertname"),
        "fingerprint": history.get("fingerprint") or incident.get("fingerprint"),
    }
    render_decision(decision, out, rich=rich)
    out.write(
        f"  mode:     {history.get('mode')}; state: {history.get('state')}"
        f"{' (' + history['reason'] + ')' if history.get('reason') else ''}\n"
    )
    if history.get("result"):
        out.write(f"  result:   {history['result']} (from the lambda's response)\n")
    if history.get("trace_id"):
        out.write(f"  trace:    {history['trace_id']} (OpenTelemetry)\n")
    if incident:
        resolved = f"resolved at {incident.get('resolved_at')}" if incident.get("resolved") else "still firing"
        out.write(
            f"  incident: started {incident.get('starts_at')}, re-sent {incident.get('resend_count', 0)} times, "
            f"{resolved}\n"
        )
    for delivery in history.get("deliveries") or []:
        when = (
            f"at {delivery['delivered_at']}"
            if delivery.get("delivered_at")
            else f"last error: {delivery.get('last_error')}"
        )
        out.write(
            f"  event:    {delivery.get('type')} {delivery.get('event_id')} -> "
            f"{delivery.get('sink') or 'default sink'}: "
            f"{delivery.get('state')} after {delivery.get('attempts')} attempt(s), {when}\n"
        )
    approval = history.get("approval")
    if approval:
        out.write(
            f"  approval: {approval.get('state')} (requested {approval.get('requested_at')}, "
            f"expires {approval.get('expires_at')}{', by ' + approval['actor'] if approval.get('actor') else ''})\n"
        )
    out.writelines(
        f"  response: {'success' if response.get('success') else 'error'} at {response.get('received_at')}\n"
        for response in history.get("responses") or []
    )
    verification = history.get("verification")
    if verification:
        out.write(f"  outcome:  {_outcome_line(verification)}\n")
    silence = history.get("silence")
    if silence:
        out.write(f"  silence:  {_silence_line(silence)}\n")
    out.write("\n")


def _silence_line(s: dict[str, Any]) -> str:
    """One line for the Alertmanager silence tied to a trigger (`controller.engine.silences`)."""
    line = f"{s.get('state')} {s.get('silenceId') or '(not created)'} until {s.get('endsAt')}"
    if s.get("reason"):
        line += f" ({s['reason']})"
    if s.get("resolutionSource"):
        line += f"; resolved at {s.get('resolvedAt')} ({s['resolutionSource']})"
    return line


def _outcome_line(v: dict[str, Any]) -> str:
    """One line for a trigger's outcome (`controller.engine.outcomes`)."""
    state = v.get("state")
    when = {
        "pending": f"waiting for the incident to resolve until {v.get('windowEndsAt')}",
        "resolved": f"resolved at {v.get('resolvedAt')}; watching for a recurrence until {v.get('recurrenceEndsAt')}",
    }.get(str(state), f"judged at {v.get('finishedAt')}")
    evidence = v.get("evidence") or {}
    detail = "; ".join(f"{k}: {val}" for k, val in sorted(evidence.items()) if k != "target")
    return f"{state} on {v.get('target')} (triggered {v.get('triggeredAt')}; {when}){'; ' + detail if detail else ''}"


def render_catalog(catalog: Any, out: TextIO, *, rich: bool = False) -> None:
    """Every function with its parameters: type, required or default, the labels that carry it."""
    if rich:
        from rich.console import Console
        from rich.table import Table

        table = Table("function", "risk", "parameter", "type", "required / default", "from labels", "description")
        for runbook in catalog.functions:
            for i, param in enumerate(runbook.parameters):
                table.add_row(
                    runbook.name if i == 0 else "",
                    runbook.risk if i == 0 else "",
                    param.name,
                    param.type,
                    "required"
                    if param.required
                    else f"default {param.default}"
                    if param.default is not None
                    else "optional",
                    ", ".join(param.sources),
                    param.description,
                )
        Console(file=out).print(table)
        return
    for runbook in catalog.functions:
        out.write(f"{runbook.name}  (risk: {runbook.risk})\n")
        out.write(f"  {' '.join(runbook.description.split())}\n")
        for param in runbook.parameters:
            need = (
                "required"
                if param.required
                else f"default {param.default}"
                if param.default is not None
                else "optional"
            )
            extra = []
            if param.enum:
                extra.append("one of " + "|".join(param.enum))
            if param.sources:
                extra.append("from labels " + ", ".join(param.sources))
            out.write(f"    {param.name:<10} {param.type:<8} {need:<16} {'; '.join(extra)}\n")
        out.writelines(f"    (one of {' or '.join(group)} is required)\n" for group in runbook.requires_one_of)
        out.write("\n")
