"""Parameter templates of policy rules: ``{{ $labels.pod }}`` and friends.

The grammar is deliberately tiny, so a rule can copy values out of the alert
and nothing else (no functions, no conditionals, no code):

    template     := (text | "{{" alternatives "}}")*
    alternatives := term ("|" term)*            -- the first non-empty value wins
    term         := "$labels." NAME | "$annotations." NAME | '"' literal '"'
    NAME         := [A-Za-z_][A-Za-z0-9_]*      -- a Prometheus label name

Literals accept the escapes ``\\"`` and ``\\\\``. Anything else between ``{{``
and ``}}``, or a ``{{`` that is never closed, is a `TemplateError`: the rules
stage reports the rule as INVALID instead of guessing. A reference to a label
the alert does not have renders as the empty string, and the rules stage treats
an empty parameter as absent (so the runbook's default, or its "required"
check, applies).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

_REFERENCE = re.compile(r"\$(labels|annotations)\.([A-Za-z_][A-Za-z0-9_]*)")
_LITERAL = re.compile(r'"((?:[^"\\]|\\["\\])*)"')
_LITERAL_ESCAPE = re.compile(r"\\([\"\\])")


class TemplateError(ValueError):
    """A parameter template outside the grammar above."""


@dataclass(frozen=True, slots=True)
class Reference:
    source: Literal["labels", "annotations"]
    name: str


@dataclass(frozen=True, slots=True)
class Constant:
    value: str


Term = Reference | Constant
# A parsed template: literal text, or a tuple of alternatives for one `{{ }}`.
Part = str | tuple[Term, ...]


def _parse_term(text: str, template: str) -> Term:
    term = text.strip()
    if ref := _REFERENCE.fullmatch(term):
        return Reference(ref.group(1), ref.group(2))  # type: ignore[arg-type]
    if lit := _LITERAL.fullmatch(term):
        return Constant(_LITERAL_ESCAPE.sub(r"\1", lit.group(1)))
    shown = term if len(term) <= 64 else term[:61] + "..."
    raise TemplateError(
        f'{{{{ {shown} }}}} in {template[:128]!r}: only $labels.NAME, $annotations.NAME and "literals", '
        "separated by |, are allowed"
    )


def _split_alternatives(inner: str) -> list[str]:
    """Split on `|` outside of double-quoted literals."""
    parts, current, in_literal, escaped = [], [], False, False
    for char in inner:
        if in_literal:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_literal = False
        elif char == '"':
            in_literal = True
            current.append(char)
        elif char == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@lru_cache(maxsize=4096)
def parse_template(template: str) -> tuple[Part, ...]:
    """Parse once (cached: rules are rendered on every decision); raise TemplateError if malformed."""
    parts: list[Part] = []
    position = 0
    while True:
        start = template.find("{{", position)
        if start < 0:
            if position < len(template):
                parts.append(template[position:])
            return tuple(parts)
        end = template.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"unclosed '{{{{' in {template[:128]!r}")
        if start > position:
            parts.append(template[position:start])
        inner = template[start + 2 : end]
        if not inner.strip():
            raise TemplateError(f"empty '{{{{ }}}}' in {template[:128]!r}")
        parts.append(tuple(_parse_term(alt, template) for alt in _split_alternatives(inner)))
        position = end + 2


def _value(term: Term, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
    if isinstance(term, Constant):
        return term.value
    return (labels if term.source == "labels" else annotations).get(term.name, "")


def render_template(template: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
    """Render a parameter template against an alert; raise TemplateError if malformed."""
    rendered: list[str] = []
    for part in parse_template(template):
        if isinstance(part, str):
            rendered.append(part)
        else:
            rendered.append(next((v for v in (_value(t, labels, annotations) for t in part) if v), ""))
    return "".join(rendered)


def check_template(template: str) -> str | None:
    """None when the template is well-formed, else the reason (for admission-time checks)."""
    try:
        parse_template(template)
    except TemplateError as exc:
        return str(exc)
    return None
