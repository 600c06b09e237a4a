"""Does an alert fall under an `AlertMatch`? (policies and rules use the same criteria)

`AlertMatch` is the spec as written; `CompiledMatch` is the same criteria made
ready to evaluate many times: regexes compiled once, name lists as sets. The
policy index keeps one `CompiledMatch` per policy, so matching an alert against
a thousand policies never compiles a regex; rules are compiled through a small
cache keyed by the (frozen, hashable) `AlertMatch`.

Semantics follow Alertmanager, so a matcher behaves the same in a
RemediationPolicy as in an Alertmanager route:
- every criterion that is set must hold; an `AlertMatch` with none set matches every alert;
- `alertNames`: the `alertname` label equals one of them;
- `alertNameRegex`: the `alertname` label matches the regex **in full** (anchored);
- `matchers`: `=`, `!=`, `=~`, `!~` on a label, regexes anchored; a missing label
  is the empty string (so `pod=""` means "has no pod label");
- `severities`: the `severity` label equals one of them (exact, case-sensitive).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from controller.schemas.policy import AlertMatch, LabelMatcher


@lru_cache(maxsize=4096)
def compile_anchored(pattern: str) -> re.Pattern[str]:
    """A regex compiled once per distinct pattern; callers use `fullmatch`, as Alertmanager anchors."""
    return re.compile(pattern)


def _compile_matcher(matcher: LabelMatcher) -> Callable[[Mapping[str, str]], bool]:
    label, value = matcher.label, matcher.value
    if matcher.op == "=":
        return lambda labels: labels.get(label, "") == value
    if matcher.op == "!=":
        return lambda labels: labels.get(label, "") != value
    regex = compile_anchored(value)
    if matcher.op == "=~":
        return lambda labels: regex.fullmatch(labels.get(label, "")) is not None
    return lambda labels: regex.fullmatch(labels.get(label, "")) is None


@dataclass(frozen=True, slots=True)
class CompiledMatch:
    """An `AlertMatch` ready for repeated evaluation against alert labels."""

    alert_names: frozenset[str]
    alert_name_regex: re.Pattern[str] | None
    matchers: tuple[Callable[[Mapping[str, str]], bool], ...]
    severities: frozenset[str]
    specificity: int

    @classmethod
    def of(cls, match: AlertMatch) -> CompiledMatch:
        return cls(
            alert_names=frozenset(match.alert_names),
            alert_name_regex=compile_anchored(match.alert_name_regex) if match.alert_name_regex is not None else None,
            matchers=tuple(_compile_matcher(m) for m in match.matchers),
            severities=frozenset(match.severities),
            specificity=match.specificity,
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        alertname = labels.get("alertname", "")
        if self.alert_names and alertname not in self.alert_names:
            return False
        if self.alert_name_regex is not None and self.alert_name_regex.fullmatch(alertname) is None:
            return False
        if self.severities and labels.get("severity", "") not in self.severities:
            return False
        return all(matcher(labels) for matcher in self.matchers)


@lru_cache(maxsize=4096)
def compile_match(match: AlertMatch) -> CompiledMatch:
    """The compiled form of a (frozen) `AlertMatch`, cached: rules are evaluated on every decision."""
    return CompiledMatch.of(match)


def alert_matches(match: AlertMatch, labels: Mapping[str, str]) -> bool:
    """True when the alert with these labels falls under `match`."""
    return compile_match(match).matches(labels)
