"""The pure decision core: policy matching, the fallback chain, its stages, one parser, one validator.

No kopf, no HTTP server, no store: the only I/O (the TRM model, an HTTP client
for function calling, a secret resolver) is handed in through `StageClients`.
Entry points: `select_policy` (which policy governs an alert) and `decide`
(what to do about it under that policy).
"""

from controller.decision.chain import annotated_call, decide, decide_shadows, select_policy, select_shadow_policies
from controller.decision.parsing import ParsedCall, ParseError, parse_call
from controller.decision.stages import StageClients
from controller.decision.templates import TemplateError, check_template, render_template
from controller.decision.validation import Verdict, validate_proposal

__all__ = [
    "ParseError",
    "ParsedCall",
    "StageClients",
    "TemplateError",
    "Verdict",
    "annotated_call",
    "check_template",
    "decide",
    "decide_shadows",
    "parse_call",
    "render_template",
    "select_policy",
    "select_shadow_policies",
    "validate_proposal",
]
