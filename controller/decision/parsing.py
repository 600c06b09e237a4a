"""The one output parser: whatever a stage produced → a proposed call, an abstention, or `ParseError`.

Every stage that proposes a call as text (the TRM's decision JSON, an LLM's
reply, a tool call's JSON-string arguments) goes through here, so they are all
held to the same rules and a quirk fixed once is fixed for all.

Accepted shapes:
- plain JSON, a fenced ```json block, or a JSON object embedded in prose
  (the first object that names a function wins; text after it is ignored);
- the function under ``lambda_function``, ``function``, ``name``, ``function_name``
  or ``tool``, and its arguments under ``parameters``, ``arguments``, ``args`` or
  ``params`` (an object, or a string holding a JSON object as OpenAI sends);
  OpenAI's nested ``{"function": {"name": ..., "arguments": ...}}`` too;
- ``null``, ``"none"``, a null function or the abstain tool's name = abstain.

Refused, with a `ParseError` saying why: non-JSON (Python-style single quotes
included: we do not guess), input over `MAX_TEXT_CHARS`, nesting deeper than
`MAX_DEPTH`, NaN/Infinity, a non-string function, non-object parameters.
Nothing else is ever raised, whatever the input: the parser is the boundary
between untrusted model output and the validator.

The parser does not check names or values: validation does, for every stage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT_CHARS = 64 * 1024
MAX_DEPTH = 16
# Bound on the `{` positions tried when looking for JSON inside prose (keeps the scan linear-ish).
MAX_EMBEDDED_ATTEMPTS = 64

ABSTAIN_TOOL = "no_automated_remediation"
_ABSTAIN_WORDS = frozenset({"", "null", "none", "no", "abstain", ABSTAIN_TOOL, ABSTAIN_TOOL.replace("_", "-")})
FUNCTION_KEYS = ("lambda_function", "function", "name", "function_name", "tool")
PARAMETER_KEYS = ("parameters", "arguments", "args", "params")
REASON_KEYS = ("reasoning", "reason")

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)(?:```|\Z)", re.DOTALL)


class ParseError(ValueError):
    """The output could not be read as a call or an abstention."""


class _TooDeep(ParseError):
    """Valid JSON, but nested beyond MAX_DEPTH: refused outright rather than searched for a smaller object."""


@dataclass(frozen=True)
class ParsedCall:
    """A proposed call (`function` set) or an abstention (`function` None). Not yet validated."""

    function: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    reasoning: str | None = None

    @property
    def abstained(self) -> bool:
        return self.function is None

    def as_dict(self) -> dict[str, Any]:
        return {"lambda_function": self.function, "parameters": dict(self.parameters)}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, iteratively (no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _checked(value: Any) -> Any:
    if _depth(value) > MAX_DEPTH:
        raise _TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def load_json(text: str, what: str = "output", max_chars: int = MAX_TEXT_CHARS) -> Any:
    """Strict, bounded `json.loads`: any JSON value, or ParseError."""
    if not isinstance(text, str):
        raise ParseError(f"{what} is not text")
    if len(text) > max_chars:
        raise ParseError(f"{what} is longer than {max_chars} characters")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so are int-size limits
        raise ParseError(f"{what} is not valid JSON: {str(exc)[:120]}") from None
    return _checked(value)


def load_json_object(text: str, what: str = "output") -> dict[str, Any]:
    """Like `load_json`, but the value must be a JSON object (a parameters map)."""
    value = load_json(text, what)
    if not isinstance(value, dict):
        raise ParseError(f"{what} is not a JSON object")
    return value


def _is_abstain_word(text: str) -> bool:
    return text.strip().strip("`'\".").strip().lower() in _ABSTAIN_WORDS


def _parameters(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        return load_json_object(raw, "the arguments string") if raw.strip() else {}
    if not isinstance(raw, dict):
        raise ParseError("parameters are not an object")
    return raw


def call_from_object(value: Any) -> ParsedCall:
    """Interpret already-decoded JSON (e.g. a tool call) as a call or an abstention."""
    _checked(value)
    return _interpret(value)


def _interpret(value: Any) -> ParsedCall:
    if value is None:
        return ParsedCall(None, reasoning="the output was null")
    if isinstance(value, str):
        if _is_abstain_word(value):
            return ParsedCall(None, reasoning=f"the output was {value.strip()[:32]!r}")
        raise ParseError("the output is a JSON string, not a call")
    if not isinstance(value, dict):
        raise ParseError(f"the output is a JSON {type(value).__name__}, not an object")
    key = next((k for k in FUNCTION_KEYS if k in value), None)
    if key is None:
        raise ParseError("no function named (expected lambda_function, function or name)")
    function = value[key]
    if key == "function" and isinstance(function, dict):
        return _interpret(function)  # OpenAI: {"type": "function", "function": {"name", "arguments"}}
    reasoning = next((value[k] for k in REASON_KEYS if isinstance(value.get(k), str)), None)
    reasoning = reasoning[:500] if reasoning else None
    if function is None:
        return ParsedCall(None, reasoning=reasoning)
    if not isinstance(function, str):
        raise ParseError(f"the function name is a {type(function).__name__}, not a string")
    if _is_abstain_word(function):
        return ParsedCall(None, reasoning=reasoning)
    raw_parameters = next((value[k] for k in PARAMETER_KEYS if k in value), None)
    return ParsedCall(function.strip(), _parameters(raw_parameters), reasoning)


def _objects_in(text: str) -> list[dict[str, Any]]:
    """JSON objects found in prose or a fence: each `{` is tried as the start of one."""
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    found: list[dict[str, Any]] = []
    position, attempts = text.find("{"), 0
    while position >= 0 and attempts < MAX_EMBEDDED_ATTEMPTS:
        attempts += 1
        try:
            value, end = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            position = text.find("{", position + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        position = text.find("{", end)
    return found


def parse_call(text: str) -> ParsedCall:
    """Read any stage's output text as a call or an abstention; raise ParseError otherwise."""
    if not isinstance(text, str):
        raise ParseError("the output is not text")
    if len(text) > MAX_TEXT_CHARS:
        raise ParseError(f"the output is longer than {MAX_TEXT_CHARS} characters")
    stripped = text.strip()
    if not stripped:
        raise ParseError("the output is empty")
    if _is_abstain_word(stripped):
        return ParsedCall(None, reasoning=f"the output was {stripped[:32]!r}")
    try:
        whole = load_json(stripped)
    except _TooDeep:
        raise
    except ParseError:
        pass  # not one JSON document: look for fences and objects inside the text
    else:
        return _interpret(whole)

    regions = [m.group(1) for m in _FENCE.finditer(stripped)] + [stripped]
    seen_object = False
    for region in regions:
        for candidate in _objects_in(region):
            seen_object = True
            _checked(candidate)
            if any(k in candidate for k in FUNCTION_KEYS):
                return _interpret(candidate)
        region_text = region.strip()
        if region is not stripped and region_text and _is_abstain_word(region_text):
            return ParsedCall(None, reasoning=f"the output was {region_text[:32]!r}")
    if seen_object:
        raise ParseError("the JSON in the output names no function")
    raise ParseError("no JSON object in the output")
