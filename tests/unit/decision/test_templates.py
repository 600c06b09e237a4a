"""Rule parameter templates: references, fallbacks, literals, and what is refused."""

from __future__ import annotations

import pytest

from controller.decision.templates import (
    TemplateError,
    check_template,
    parse_template,
    render_template,
)

LABELS = {"pod": "cart-7f9", "namespace": "shop", "exported_namespace": "apps", "empty": ""}
ANNOTATIONS = {"target": "cart", "summary": "Pod is crash looping."}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ $labels.pod }}", "cart-7f9"),
        ("{{$labels.pod}}", "cart-7f9"),
        ("{{ $annotations.target }}", "cart"),
        ("pod", "pod"),
        ("", ""),
        ("app={{ $labels.pod }}", "app=cart-7f9"),
        ("{{ $labels.namespace }}/{{ $labels.pod }}", "shop/cart-7f9"),
        ('{{ $labels.exported_namespace | $labels.namespace | "flux-system" }}', "apps"),
        ('{{ $labels.missing | $labels.namespace | "flux-system" }}', "shop"),
        ('{{ $labels.missing | $labels.empty | "flux-system" }}', "flux-system"),
        ("{{ $labels.missing }}", ""),
        ("{{ $labels.missing | $annotations.missing }}", ""),
        ('{{ "a|b" }}', "a|b"),
        ('{{ "say \\"hi\\"" }}', 'say "hi"'),
        ('{{ "back\\\\slash" }}', "back\\slash"),
        ("single } brace and }} closers are text", "single } brace and }} closers are text"),
    ],
)
def test_templates_render_labels_annotations_and_first_non_empty_fallbacks(template: str, expected: str) -> None:
    assert render_template(template, LABELS, ANNOTATIONS) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ $labels.pod ",
        "{{ }}",
        "{{ .Labels.pod }}",
        "{{ $labels }}",
        "{{ $labels.pod-name }}",
        "{{ $labels.pod | }}",
        "{{ $values.pod }}",
        '{{ printf "%s" $labels.pod }}',
        "{{ $labels.pod | upper }}",
        "{{ 'single' }}",
        '{{ "unterminated }}',
        "{{ $labels.a $labels.b }}",
        "{{ {{ $labels.pod }} }}",
    ],
)
def test_anything_else_in_braces_is_a_template_error(template: str) -> None:
    with pytest.raises(TemplateError):
        render_template(template, LABELS, ANNOTATIONS)
    assert check_template(template) is not None


def test_check_template_accepts_what_renders() -> None:
    assert check_template('{{ $labels.a | "x" }}') is None


def test_parsing_is_cached_and_immutable() -> None:
    first = parse_template("{{ $labels.pod }}-x")
    assert parse_template("{{ $labels.pod }}-x") is first
    assert isinstance(first, tuple)
