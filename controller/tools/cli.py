"""`trm-sre` (also `python -m controller`): run the controller, or use its decision path by hand.

Each subcommand is a small function taking parsed arguments and returning an
exit code; `main(argv)` is the console script. Exit codes: 0 success, 1 a
failure at run time (nothing found, a component failed), 2 bad usage or
invalid settings (the message says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from controller import __version__
from controller.tools import PROG
from controller.tools.explain import cmd_explain, cmd_select, render_catalog
from controller.tools.export_feedback import add_arguments as add_export_feedback_arguments
from controller.tools.export_feedback import cmd_export_feedback
from controller.tools.validate_cmd import cmd_validate_policy

_DESCRIPTION = """\
trm-sre turns Prometheus alerts into safe, automatic remediations: it receives
Alertmanager webhooks and CloudEvents, picks a remediation function from the
runbook catalog through a RemediationPolicy's fallback chain (static annotation,
the Tiny Recursive Model, an optional LLM, rules), validates it, and emits an
io.homelab.agent-sre.lambda.trigger CloudEvent once per incident."""

_EPILOG = """\
examples:
  trm-sre run --standalone                          # embedded default policy, http://127.0.0.1:8080
  trm-sre run --standalone --policies policies.yaml --sink http://broker/ns/default
  trm-sre run --host 0.0.0.0 --token-file /var/run/secrets/trm-sre/token   # in a cluster
  trm-sre select < tests/fixtures/alerts/crashloop.json
  trm-sre explain 3f2a9c0d1e4b5a6f7081928374655647
  trm-sre catalog
  trm-sre validate-policy deploy/samples/*.yaml
  trm-sre eval --from-store --state-dir /var/lib/trm-sre --since 7d   # shadow agreement, natural resolution
  trm-sre export-feedback --state-dir /var/lib/trm-sre --since 30d --out feedback.jsonl
  nice trm-sre train --feedback feedback.jsonl --out /tmp/trm-feedback   # refused if it regresses
"""

_VALIDATE_DESCRIPTION = """\
Check RemediationPolicy manifests without a cluster. Each file may hold several
YAML documents; documents of other kinds are skipped. Every policy is checked,
in order, against:

  1. the CRD's OpenAPI schema (crds/remediationpolicy.yaml): types, required
     fields, enums, bounds, lengths, patterns, item counts, duplicates in sets,
     and unknown fields, which kubectl's default strict field validation refuses;
  2. what the operator checks before it marks a policy Ready: every function in
     the runbook catalog and every rule's function in allowedFunctions, rule
     parameters and their templates, regexes that compile, and the CRD's CEL
     rules (the policy model enforces the same constraints).

A CEL rule the policy model does not enforce is named in a note: only the
apiserver checks it (kubectl apply --dry-run=server -f FILE)."""

_VALIDATE_EPILOG = """\
output:
  FILE: NAMESPACE/NAME: valid (N stages, M allowed functions)
  FILE:DOCUMENT: NAMESPACE/NAME: FIELD: PROBLEM      one line per problem, e.g.
  policies.yaml:2: shop/restarts: spec.chain[1].trm.minConfidence: must be <= 1 (got 1.5)
  (DOCUMENT counts the file's YAML documents from 1; without metadata.namespace a policy is in "default")

examples:
  trm-sre validate-policy deploy/samples/*.yaml
  trm-sre validate-policy --quiet policies/             # every .yaml, .yml and .json file in policies/
  helm template trm-sre deploy/helm/trm-sre | trm-sre validate-policy -   # other kinds are skipped
  trm-sre validate-policy --json policies.yaml | jq '.[] | select(.status != "valid")'

exit status: 0 every policy is valid; 1 a policy is invalid; 2 a file is missing,
unreadable or not valid YAML (the message names the file and the line).
"""

_RUN_EPILOG = """\
examples:
  trm-sre run --standalone
      Embedded default policy, loopback only, no token; triggers go to $K_SINK,
      or are appended to <state dir>/triggers.jsonl when there is no sink.
  TRM_SRE_WEBHOOK_TOKEN=s3cret trm-sre run --standalone --host 0.0.0.0 --policies policies.yaml
      Listen on every interface (a token is then required) with your own policies.
  trm-sre run --namespace monitoring --namespace shop --token-file /etc/trm-sre/token
      Cluster mode: watch RemediationPolicies in two namespaces (KUBECONFIG or in-cluster config).

Without a token (TRM_SRE_WEBHOOK_TOKEN or --token-file) the server accepts
unauthenticated requests and therefore refuses to listen anywhere but loopback.
"""


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--device", choices=("cpu", "cuda", "auto"), default="cpu", help="where the TRM runs (default: cpu)"
    )
    group.add_argument(
        "--runtime", choices=("onnx", "torch"), default="onnx", help="onnx (default) or torch (trm-sre[train])"
    )
    group.add_argument(
        "--no-model", action="store_true", help="disable the TRM stage deliberately (it hands over to the next stage)"
    )
    group.add_argument(
        "--checkpoint", metavar="DIR", help="TRM checkpoint directory (default: the one shipped in models/checkpoints)"
    )


def _add_policy_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--policies", nargs="+", metavar="FILE", help=help_text)


def _add_command(
    sub: Any, name: str, handler: Any, *, help_text: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand whose parsed arguments go to `handler`; with an epilog (examples), line breaks are kept."""
    layout: dict[str, Any] = (
        {"epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter} if epilog else {}
    )
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description, **layout)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = _add_command(
        sub,
        "run",
        cmd_run,
        help_text="run the controller (HTTP API + pipeline, and the kopf operator in cluster mode)",
        description="Run the controller: the HTTP API and the pipeline; in cluster mode also the kopf operator "
        "that indexes RemediationPolicies and writes their status.",
        epilog=_RUN_EPILOG,
    )
    # Every flag's dest is the setting's dotted path in `controller.settings.Settings`; a flag not given
    # is absent (SUPPRESS), so the environment and the model's defaults apply (`settings_values`).
    run.argument_default = argparse.SUPPRESS
    run.add_argument(
        "--standalone", action="store_true", help="no cluster: policies come from --policies (or the embedded default)"
    )
    run.add_argument(
        "--policies",
        nargs="+",
        metavar="FILE",
        dest="policy_files",
        help="RemediationPolicy YAML files (multi-document OK); standalone only; default: the embedded default policy",
    )
    run.add_argument("--host", help="address to listen on (default: 127.0.0.1; anything else needs a token)")
    run.add_argument("--port", type=int, help="HTTP port (default: 8080)")
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        dest="state_dir",
        help="where the SQLite store lives (default: the user data dir, e.g. ~/.local/share/trm-sre)",
    )
    run.add_argument(
        "--store",
        metavar="URL",
        dest="store_url",
        help="sqlite:///PATH (default: the SQLite file in --state-dir; one replica) or postgresql://… "
        "(several active replicas share it; the password from PGPASSWORD)",
    )
    run.add_argument(
        "--retention-days",
        type=int,
        metavar="DAYS",
        dest="engine.retention_days",
        help="delete finished incidents (and their alerts, decisions, events, approvals) idle this many days "
        "from the store; 0 keeps everything (default: 30)",
    )
    run.add_argument(
        "--token-file",
        metavar="FILE",
        dest="token_file",
        help="bearer token file, re-read when it changes (default: $TRM_SRE_WEBHOOK_TOKEN)",
    )
    run.add_argument(
        "--system-namespace",
        metavar="NS",
        dest="system_namespace",
        help="the controller's own namespace: only policies there may target other namespaces or set a sink "
        "(default: the pod's namespace, $POD_NAMESPACE; trm-sre standalone)",
    )
    run.add_argument(
        "--approver-token-file",
        metavar="FILE",
        dest="approver_token_file",
        help="standalone: the token /approvals requires, never the webhook token (default: "
        "$TRM_SRE_APPROVER_TOKEN; none: nobody can approve). In a cluster approvers are Kubernetes users "
        "with 'approve' on remediationpolicies",
    )
    run.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        dest="namespaces",
        help="watch policies in this namespace (repeatable; default: cluster-wide)",
    )
    run.add_argument(
        "--sink",
        metavar="URL",
        dest="engine.sink",
        help="default CloudEvents sink for triggers (default: $K_SINK; none: <state dir>/triggers.jsonl)",
    )
    run.add_argument(
        "--alertmanager-url",
        metavar="URL",
        dest="engine.alertmanager_url",
        help="Alertmanager API base URL: silences tied to remediation (spec.actions.silence); none: no silences",
    )
    run.add_argument(
        "--alertmanager-token-file",
        metavar="FILE",
        dest="engine.alertmanager_token_file",
        help="a bearer token for the Alertmanager API, re-read on every request",
    )
    run.add_argument(
        "--alertmanager-ca-file",
        metavar="FILE",
        dest="engine.alertmanager_ca_file",
        help="PEM CA bundle that verifies Alertmanager's HTTPS certificate",
    )
    run.add_argument(
        "--liveness-port",
        type=int,
        dest="liveness_port",
        help="kopf's liveness endpoint port, cluster mode (default: 8081; 0 disables)",
    )
    run.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        dest="log_level",
        help="default: INFO",
    )
    tls = run.add_argument_group("TLS (optional; the bearer token is still checked)")
    tls.add_argument(
        "--tls-cert-file", metavar="FILE", dest="tls.cert_file", help="serve HTTPS with this PEM certificate (chain)"
    )
    tls.add_argument(
        "--tls-key-file", metavar="FILE", dest="tls.key_file", help="the PEM private key of --tls-cert-file"
    )
    tls.add_argument(
        "--client-ca-file",
        metavar="FILE",
        dest="tls.client_ca_file",
        help="require client certificates signed by this PEM CA (mutual TLS)",
    )
    knative = run.add_argument_group(
        "Knative sender identity on /events (cluster mode; the bearer token keeps working; docs/api.md)"
    )
    knative.add_argument(
        "--events-audience",
        metavar="AUDIENCE",
        dest="knative.audience",
        help="also accept Knative Eventing OIDC tokens issued for this audience on /events, checked "
        "with the TokenReview API (default: $TRM_SRE_KNATIVE__AUDIENCE; none: off)",
    )
    knative.add_argument(
        "--events-allowed-subject",
        action="append",
        metavar="USER",
        dest="knative.allowed_subjects",
        help="a ServiceAccount allowed to send them, system:serviceaccount:NS:NAME (repeatable; required "
        "with --events-audience; default: $TRM_SRE_KNATIVE__ALLOWED_SUBJECTS, comma-separated)",
    )
    limits = run.add_argument_group("limits")
    limits.add_argument(
        "--max-body-bytes",
        type=int,
        metavar="N",
        dest="limits.max_body_bytes",
        help="largest request body; larger ones get 413 (default: 4194304, 4 MiB)",
    )
    limits.add_argument(
        "--queue-size",
        type=int,
        metavar="N",
        dest="engine.queue_size",
        help="alerts waiting for a decision; beyond it 503 + Retry-After (default: 10000)",
    )
    model = run.add_argument_group("model")
    model.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        dest="model.device",
        help="where the TRM runs: cuda is strict (not ready without a usable GPU), auto falls back (default: cpu)",
    )
    model.add_argument(
        "--runtime",
        choices=("onnx", "torch"),
        dest="model.runtime",
        help="onnx (onnxruntime, no torch) or torch (needs trm-sre[train]) (default: onnx)",
    )
    model.add_argument(
        "--no-model",
        action="store_false",
        dest="model.enabled",
        help="disable the TRM stage deliberately (it hands over to the next stage)",
    )
    model.add_argument(
        "--checkpoint",
        metavar="DIR",
        dest="model.checkpoint_dir",
        help="TRM checkpoint directory (default: the one shipped in models/checkpoints)",
    )

    select = _add_command(
        sub,
        "select",
        cmd_select,
        help_text="decide for one alert (or one webhook payload) read from stdin; print the decision as JSON",
        description="Read one Alertmanager alert object, or one whole webhook payload, from stdin and print the "
        "decision the policy chain makes (one object for an alert, a list for a payload). Nothing is emitted.",
        epilog="example:\n  trm-sre select --no-model < tests/fixtures/alerts/crashloop.json",
    )
    _add_policy_option(select, "RemediationPolicy YAML files (default: the embedded default policy)")
    _add_model_options(select)

    explain = _add_command(
        sub,
        "explain",
        cmd_explain,
        help_text="show a decision's trace stage by stage (a stored decision id, or a fresh one for an alert file)",
        description="Explain a decision: with a decision id, read it (and its delivery, approval and outcome history) "
        "from the store in --state-dir, or from a running server with --url; with an alert (or payload) JSON file, "
        "make a fresh decision and explain it.",
        epilog="examples:\n  trm-sre explain 3f2a9c0d1e4b5a6f7081928374655647 --state-dir /var/lib/trm-sre\n"
        "  trm-sre explain --url http://127.0.0.1:8080 3f2a9c0d1e4b5a6f7081928374655647\n"
        "  trm-sre explain tests/fixtures/alerts/crashloop.json --no-model",
    )
    explain.add_argument("target", metavar="DECISION_ID_OR_ALERT_FILE")
    explain.add_argument(
        "--state-dir", metavar="DIR", help="the store to read the decision from (default: the user data dir)"
    )
    explain.add_argument("--url", help="read the decision from a running trm-sre instead (GET /decisions/{id})")
    explain.add_argument(
        "--token-file", metavar="FILE", help="bearer token for --url (default: $TRM_SRE_WEBHOOK_TOKEN)"
    )
    explain.add_argument("--json", action="store_true", help="print the raw JSON instead of text")
    _add_policy_option(
        explain, "for an alert file: RemediationPolicy YAML files (default: the embedded default policy)"
    )
    _add_model_options(explain)

    catalog = _add_command(
        sub,
        "catalog",
        cmd_catalog,
        help_text="list the remediation functions and their parameters",
        description="The runbook catalog: every remediation function, its risk, and its parameters "
        "(type, required, default, the alert labels that usually carry it).",
    )
    catalog.add_argument("--json", action="store_true", help="print the tool schemas as JSON instead")

    validate = _add_command(
        sub,
        "validate-policy",
        cmd_validate_policy,
        help_text="check RemediationPolicy YAML files offline, as the apiserver and the operator would",
        description=_VALIDATE_DESCRIPTION,
        epilog=_VALIDATE_EPILOG,
    )
    validate.add_argument(
        "files", nargs="+", metavar="FILE", help="YAML or JSON files (multi-document OK), directories, or - for stdin"
    )
    validate.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the problems and errors (with --json: only the documents that have some)",
    )
    validate.add_argument("--json", action="store_true", help="print a JSON list, one entry per document")
    validate.add_argument(
        "--crd", metavar="FILE", help="the CRD to check against (default: the one shipped with trm-sre)"
    )
    validate.add_argument(
        "--system-namespace",
        metavar="NS",
        default="trm-sre",
        help="the controller's namespace: only policies there may target other namespaces or set a sink; "
        "a policy in any other namespace acts only on its own (default: trm-sre)",
    )

    export_feedback = _add_command(
        sub,
        "export-feedback",
        cmd_export_feedback,
        help_text="write labelled examples from the store (corrections, annotations, approved and verified calls)",
        description="Write the store's labelled decisions as a JSONL dataset the model trains and evaluates on "
        "(trm-sre train --feedback, trm-sre eval): a rejection's correction, the rule author's annotation, an "
        "approved or active call whose outcome was verified. Ineffective or recurred outcomes give no label. "
        "Annotation text and address- or secret-like label values are redacted unless --no-redact "
        "(docs/operations.md, Learning from feedback).",
        epilog="example:\n  trm-sre export-feedback --state-dir /var/lib/trm-sre --since 30d --out feedback.jsonl",
    )
    add_export_feedback_arguments(export_feedback)

    delegated_commands = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export}
    for name, text in (
        (
            "train",
            (
                "train the Tiny Recursive Model (arguments go to models.train; see `trm-sre train --help`); with "
                "--feedback FILE.jsonl fine-tune a checkpoint on it behind a no-regression gate (models.finetune)"
            ),
        ),
        (
            "eval",
            (
                "evaluate the model against the rules and the full chain (arguments go to models.evaluate); "
                "with --from-store, report shadow agreement and the natural-resolution baseline from a store"
            ),
        ),
        ("export", "export checkpoints to ONNX, model.onnx beside model.safetensors (needs trm-sre[train])"),
    ):
        delegated = sub.add_parser(name, help=text, description=text, add_help=False)
        delegated.add_argument("args", nargs=argparse.REMAINDER)
        delegated.set_defaults(handler=delegated_commands[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # train/eval forward everything (including --help) to their own parsers.
    if argv and argv[0] in ("train", "eval", "export"):
        return {"train": cmd_train, "eval": cmd_eval, "export": cmd_export}[argv[0]](argv[1:])
    args = parser.parse_args(argv)
    return int(args.handler(args))


# --------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from controller.app import run_controller
    from controller.engine.pipeline import StoreUnavailable
    from controller.engine.store import StoreError
    from controller.observability.logging import configure_logging
    from controller.settings import Settings, SettingsError

    try:
        settings = Settings.load(settings_values(args))
        configure_logging(settings.log_level)
        return asyncio.run(run_controller(settings, announce=_announce))
    except SettingsError as exc:
        print(f"{PROG} run: error: {exc}", file=sys.stderr)
        return 2
    except (StoreError, StoreUnavailable) as exc:
        print(f"{PROG} run: error: {exc}", file=sys.stderr)
        return 1


def settings_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as the nested mapping `Settings.load` takes: dest `engine.sink` → {"engine": {"sink": ...}}."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest in ("command", "handler"):
            continue
        *sections, name = dest.split(".")
        target = values
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    return values


def _announce(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------
# catalog, train, eval
# --------------------------------------------------------------------------


def cmd_catalog(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    from runbooks import default_catalog

    stdout = stdout or sys.stdout
    catalog = default_catalog()
    if args.json:
        json.dump(catalog.tool_schemas(), stdout, indent=2)
        stdout.write("\n")
    else:
        render_catalog(catalog, stdout, rich=stdout.isatty())
    return 0


def cmd_train(argv: list[str]) -> int:
    if any(a == "--feedback" or a.startswith("--feedback=") for a in argv):
        from models import finetune

        return int(finetune.main(argv) or 0)
    from models import train

    return int(train.main(argv) or 0)


def cmd_export(argv: list[str]) -> int:
    try:
        from models import export
    except ImportError as exc:
        print(f"{PROG} export: needs the train extra (pip install 'trm-sre[train]'): {exc}", file=sys.stderr)
        return 2
    return int(export.main(argv) or 0)


#: `trm-sre eval` subcommands; anything else is `eval DATASET ...` (the documented form, the default).
EVAL_SUBCOMMANDS = ("eval", "compare", "steps")


def cmd_eval(argv: list[str]) -> int:
    if "--from-store" in argv:  # shadow decisions and the natural-resolution baseline, from a controller's store
        from controller.tools import shadow_eval

        return shadow_eval.main(argv)
    from controller.tools.selectors import ChainSelector, RulesSelector
    from models import evaluate

    if not argv or argv[0] not in (*EVAL_SUBCOMMANDS, "-h", "--help"):
        argv = ["eval", *argv]
    return int(evaluate.main(argv, extra_selectors={"rules": RulesSelector, "chain": ChainSelector}) or 0)
