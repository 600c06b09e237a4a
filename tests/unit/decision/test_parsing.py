"""The one output parser: table tests and a property test (any text → a result or ParseError)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.decision.parsing import (
    MAX_TEXT_CHARS,
    ParsedCall,
    ParseError,
    call_from_object,
    load_json_object,
    parse_call,
)

from .helpers import assert_call_or_parse_error

RESTART = {"name": "cart-7f9", "namespace": "shop"}

ACCEPTED = [
    pytest.param(
        '{"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}', id="plain-json"
    ),
    pytest.param(
        '  \n{"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}\n ',
        id="whitespace",
    ),
    pytest.param(
        'Here is my answer:\n```json\n{"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}\n```\nDone.',
        id="fenced-json",
    ),
    pytest.param(
        '```\n{"function": "pod-restart", "arguments": {"name": "cart-7f9", "namespace": "shop"}}\n```',
        id="fence-no-language",
    ),
    pytest.param(
        '```json\n{"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}',
        id="unclosed-fence",
    ),
    pytest.param(
        'The pod is crash looping, so I pick {"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}} as the fix.',
        id="embedded-in-prose",
    ),
    pytest.param(
        '{"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}} trailing garbage }{',
        id="trailing-garbage",
    ),
    pytest.param(
        '{"function": "pod-restart", "arguments": {"name": "cart-7f9", "namespace": "shop"}}', id="function-arguments"
    ),
    pytest.param(
        '{"name": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}', id="name-parameters"
    ),
    pytest.param(
        '{"name": "pod-restart", "arguments": "{\\"name\\": \\"cart-7f9\\", \\"namespace\\": \\"shop\\"}"}',
        id="arguments-as-json-string",
    ),
    pytest.param(
        '{"type": "function", "function": {"name": "pod-restart", "arguments": {"name": "cart-7f9", "namespace": "shop"}}}',
        id="openai-nested",
    ),
    pytest.param(
        '{"reasoning": "thinking {first}"} then {"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}',
        id="first-object-without-function-skipped",
    ),
    pytest.param(
        '{"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}, "confidence": 0.93}',
        id="extra-keys-ignored",
    ),
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_proposals_in_every_accepted_shape_parse_to_the_same_call(text: str) -> None:
    parsed = parse_call(text)
    assert parsed == ParsedCall("pod-restart", RESTART, parsed.reasoning)
    assert not parsed.abstained


ABSTAINED = [
    "null",
    "none",
    "None",
    '"none"',
    " NULL ",
    "no_automated_remediation",
    '{"lambda_function": null, "parameters": {}}',
    '{"lambda_function": "none"}',
    '{"function": "no_automated_remediation", "arguments": {"reason": "nothing fits"}}',
    "```json\nnull\n```",
    '{"name": null}',
]


@pytest.mark.parametrize("text", ABSTAINED)
def test_null_none_and_the_abstain_tool_mean_abstain(text: str) -> None:
    parsed = parse_call(text)
    assert parsed.abstained
    assert parsed.parameters == {}


REJECTED = [
    pytest.param("", id="empty"),
    pytest.param("   \n ", id="blank"),
    pytest.param("I would restart the pod.", id="prose-only"),
    pytest.param("{'lambda_function': 'pod-restart', 'parameters': {}}", id="single-quotes"),
    pytest.param('{"parameters": {"name": "x"}}', id="no-function-key"),
    pytest.param('{"lambda_function": 42}', id="function-not-a-string"),
    pytest.param('{"lambda_function": ["pod-restart"]}', id="function-a-list"),
    pytest.param('{"lambda_function": "pod-restart", "parameters": ["cart"]}', id="parameters-a-list"),
    pytest.param('{"lambda_function": "pod-restart", "parameters": "not json"}', id="arguments-string-not-json"),
    pytest.param('{"lambda_function": "pod-restart", "parameters": "[1, 2]"}', id="arguments-string-not-object"),
    pytest.param('[{"lambda_function": "pod-restart"}]', id="top-level-list"),
    pytest.param("42", id="number"),
    pytest.param('"pod-restart"', id="bare-string"),
    pytest.param('{"lambda_function": "pod-restart", "parameters": {"replicas": NaN}}', id="nan"),
    pytest.param('{"lambda_function": "pod-restart", "parameters": {"replicas": Infinity}}', id="infinity"),
    pytest.param('{"lambda_function": "pod-restart", "parameters": {"a": ' + "[" * 40 + "]" * 40 + "}}", id="too-deep"),
    pytest.param("[" * 100_000, id="deep-and-too-long"),
    pytest.param("{" * 5000, id="unbalanced-braces"),
    pytest.param('{"lambda_function": "pod-restart", "parameters": {"n": ' + "9" * 5000 + "}}", id="huge-integer"),
    pytest.param('{"lambda_function": "x", "parameters": {"v": "' + "a" * MAX_TEXT_CHARS + '"}}', id="over-size-limit"),
    pytest.param("```json\n{not json}\n```", id="fenced-garbage"),
]


@pytest.mark.parametrize("text", REJECTED)
def test_garbage_is_a_clean_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_call(text)


def test_non_text_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_call(None)  # type: ignore[arg-type]
    with pytest.raises(ParseError):
        parse_call(b'{"lambda_function": "pod-restart"}')  # type: ignore[arg-type]


def test_function_names_are_not_validated_or_normalised_here() -> None:
    parsed = parse_call('{"lambda_function": "  rm -rf /  ", "parameters": {"name": "$(reboot)"}}')
    assert parsed.function == "rm -rf /"
    assert parsed.parameters == {"name": "$(reboot)"}


def test_reasoning_is_kept_and_bounded() -> None:
    parsed = parse_call(json.dumps({"lambda_function": "pod-restart", "parameters": {}, "reasoning": "x" * 2000}))
    assert parsed.reasoning is not None and len(parsed.reasoning) == 500


def test_decoded_tool_calls_go_through_the_same_rules() -> None:
    assert call_from_object({"name": "pod-restart", "arguments": RESTART}).parameters == RESTART
    assert call_from_object(None).abstained
    with pytest.raises(ParseError):
        call_from_object({"name": "pod-restart", "arguments": 3})
    deep: dict = {}
    cursor = deep
    for _ in range(40):
        cursor["a"] = {}
        cursor = cursor["a"]
    with pytest.raises(ParseError):
        call_from_object({"name": "pod-restart", "arguments": deep})


def test_parameter_strings_must_hold_an_object() -> None:
    assert load_json_object('{"a": "b"}') == {"a": "b"}
    for bad in ("[]", "null", "{", "'a'", "x" * (MAX_TEXT_CHARS + 1)):
        with pytest.raises(ParseError):
            load_json_object(bad)


# --- property tests --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gives_a_result_or_a_parse_error(text: str) -> None:
    assert_call_or_parse_error(parse_call, text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["lambda_function", "function", "name", "parameters", "arguments", "x"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_values, st.text(max_size=40), st.text(max_size=40), st.booleans())
def test_json_like_text_in_any_wrapping_gives_a_result_or_a_parse_error(
    value: object, before: str, after: str, fence: bool
) -> None:
    body = json.dumps(value)
    text = f"{before}```json\n{body}\n```{after}" if fence else f"{before}{body}{after}"
    assert_call_or_parse_error(parse_call, text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}[]":,\\ aentu0123456789.-', max_size=300))
def test_bracket_soup_gives_a_result_or_a_parse_error(text: str) -> None:
    assert_call_or_parse_error(parse_call, text)
