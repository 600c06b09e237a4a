"""Alert -> a bounded sequence of hashed-feature tokens, with label slots the decoder points at.

Layout of one encoded alert (fixed, so the pointer heads know where the label slots are):

    [CLS] [alertname words x W] [label slots x S] [annotation words x A]      length L = 1 + W + S + A

- Every token is a *bag* of hashed feature strings (word, 4-char prefix, char trigrams; for a
  label slot also the key, the key's words and the value's shape), so an unseen word still
  shares trigrams/prefixes with known ones, and an unseen value is described by its shape.
- Label slots hold one label each (alertname excluded). They are the only place parameter
  values come from: the model outputs an index into the slots, and the decoder copies that
  slot's *original* value verbatim. Nothing is generated from a vocabulary, so a pod name the
  model never saw comes out exactly right, and a hostile value is refused by the catalog's
  validation rather than "repaired".
- Everything is truncated before any work proportional to the input: at most `scan_labels`
  labels are looked at, values and annotations are cut to a few hundred characters, bytes are
  decoded with replacement, and non-string values are described (but copied as they are, so
  validation refuses them).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

import numpy as np

from runbooks.catalog import is_dns1123_label, is_dns1123_subdomain

# Token kinds (segment ids).
PAD, CLS, NAME, SLOT, SUMMARY, DESCRIPTION, URL, EXPR = range(8)
N_SEGMENTS = 8  # checkpoints record how many they were trained with (TRMConfig.n_segments)
MAX_VALUE_CHARS = 256  # label values longer than this are described by their first 256 chars
MAX_ANNOTATION_CHARS = 600  # per annotation; rendered descriptions put the gist first
ANNOTATION_KEYS = ("summary", "description", "message")

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_K8S = re.compile(r"(?i)k8s")
_RS_POD = re.compile(r"^[a-z0-9.-]+-[a-z0-9]{6,10}-[a-z0-9]{5}$")
_SHORT_SUFFIX_POD = re.compile(r"^[a-z0-9.-]+-[a-z0-9]{5}$")
_ORDINAL = re.compile(r"^[a-z0-9.-]+-[0-9]{1,3}$")
MAX_EXPR_CHARS = 2000
_EXPR_PARAM = re.compile(r"[?&]g0\.expr=([^&#]*)")
_PROM_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_PROM_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"")
_PROM_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_PROM_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_PROM_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    ]
)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "has",
        "have",
        "had",
        "of",
        "for",
        "in",
        "on",
        "at",
        "to",
        "from",
        "by",
        "with",
        "than",
        "then",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "or",
        "and",
        "as",
        "more",
        "less",
        "longer",
        "over",
        "under",
        "since",
        "which",
        "who",
        "when",
        "per",
        "has",
        "been",
        "this",
        "than",
        "please",
        "check",
        "see",
        "details",
        "value",
        "current",
        "currently",
        "last",
    ]
)


@dataclass(frozen=True)
class EncoderSettings:
    """Sizes of the encoded sequence; stored in the checkpoint config (changing them needs retraining)."""

    buckets: int = 16384  # hashed feature ids; ~6k distinct features in training, so collisions are rare
    max_features: int = 24  # features per token (a label slot uses ~15-22)
    max_name_words: int = 8  # alertname words (real names have 2-6)
    max_labels: int = 20  # label slots (kube-prometheus alerts carry 6-14 labels besides alertname)
    max_annotation_words: int = 16  # first words of runbook_url / summary / description
    max_expr_tokens: int = 0  # tokens of the rule expression read from generatorURL (0 = ignore the URL)
    drop_stopwords: bool = False  # annotation words: skip filler ("the", "for", "than") so more content fits
    scan_labels: int = 512  # labels looked at beyond the priority keys (10,000-label alerts stay cheap)
    value_feature: bool = False  # also hash a short label value whole ("kind=HelmRepository" vs "GitRepository")
    segment_vocab: tuple[str, ...] = ()  # known words for splitting run-together names ("kubepodcrashlooping")
    priority_keys: tuple[str, ...] = ()  # labels kept first when an alert has more than max_labels

    @property
    def seq_len(self) -> int:
        return 1 + self.max_name_words + self.max_labels + self.max_expr_tokens + self.max_annotation_words

    @property
    def slot_start(self) -> int:
        return 1 + self.max_name_words


@dataclass
class EncodedAlert:
    feats: np.ndarray  # (L, F) int32 feature ids, 0 = padding
    segments: np.ndarray  # (L,) int8 token kind
    positions: np.ndarray  # (L,) int8 position within its segment
    slot_keys: list[str]  # label key of each filled slot (<= max_labels)
    slot_values: list[Any]  # the original value of each filled slot, copied verbatim on output


# ---------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------
def as_text(value: Any, limit: int) -> str:
    """Any value -> a bounded str for feature extraction (bytes decoded with replacement)."""
    if isinstance(value, str):
        text = value[:limit]
    elif isinstance(value, (bytes, bytearray)):
        text = bytes(value[: limit * 4]).decode("utf-8", "replace")[:limit]
    elif value is None or isinstance(value, (bool, int, float)):
        text = str(value)
    else:
        text = type(value).__name__  # never str() an arbitrary object: it could be huge or raise
    return text


def _hash(feature: str, buckets: int) -> int:
    return zlib.crc32(feature.encode("utf-8", "replace")) % (buckets - 1) + 1


def words_of(text: str) -> list[str]:
    """'KubePodCrashLooping' / 'kube_pod_crash_looping' / 'CPUThrottlingHigh' -> lowercase words."""
    out: list[str] = []
    text = _K8S.sub(" Kubernetes ", text)  # "K8sPodCrashLooping": k8s is one word, the same as kubernetes
    for chunk in _SPLIT.split(text):
        if chunk:
            out += [w.lower() for w in _WORD.findall(chunk)]
    return out


def segment(word: str, vocab: frozenset[str]) -> list[str]:
    """Split a run-together word into known words when that covers it entirely ('podcrashlooping')."""
    n = len(word)
    if n < 6 or word in vocab or n > 48:
        return [word]
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for end in range(1, n + 1):
        for start in range(max(0, end - 24), end):
            prev = best[start]
            piece = word[start:end]
            if prev is not None and piece in vocab and (best[end] is None or len(prev) + 1 < len(best[end])):
                best[end] = prev + [piece]
    return best[n] if best[n] and len(best[n]) > 1 else [word]


def normalise_value_word(word: str) -> str:
    """Random ids (ReplicaSet hashes, uids) and numbers say nothing by themselves: map them to a class."""
    if word.isdigit():
        return "<num>"
    if len(word) >= 5 and any(c.isdigit() for c in word):
        return "<id>"
    return word


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------
class AlertEncoder:
    """Turns one Alertmanager alert (a mapping) into an `EncodedAlert`. Pure, deterministic, never raises."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.s = settings
        self.vocab = frozenset(settings.segment_vocab)
        self.priority = {k: i for i, k in enumerate(settings.priority_keys)}
        self._word_features = lru_cache(maxsize=1 << 16)(self._word_features_uncached)
        self._slot_features = lru_cache(maxsize=1 << 16)(self._slot_features_uncached)

    # -- features -------------------------------------------------------------------------------
    def _ids(self, features: Sequence[str]) -> tuple[int, ...]:
        b = self.s.buckets
        return tuple(_hash(f, b) for f in features[: self.s.max_features])

    def _word_features_uncached(self, word: str) -> tuple[int, ...]:
        feats = ["w:" + word, "p:" + word[:4]]
        padded = f"^{word}$"
        feats += ["t:" + padded[i : i + 3] for i in range(min(len(padded) - 2, self.s.max_features - 2))]
        return self._ids(feats)

    def _slot_features_uncached(self, key: str, text: str, is_str: bool) -> tuple[int, ...]:
        feats = ["k:" + key] + ["kw:" + w for w in words_of(key)[:3]]
        shape = ["s:str" if is_str else "s:nonstr"]
        if not text:
            shape.append("s:empty")
        elif text.isdigit():
            shape.append("s:int" if len(text) <= 6 else "s:bigint")
        elif is_dns1123_label(text):
            shape.append("s:dns-label")
        elif is_dns1123_subdomain(text):
            shape.append("s:dns-subdomain")
        else:
            shape.append("s:invalid-name")
        for pattern, tag in ((_RS_POD, "s:rs-pod"), (_SHORT_SUFFIX_POD, "s:suffix5"), (_ORDINAL, "s:ordinal")):
            if pattern.match(text):
                shape.append(tag)
                break
        shape.append(f"s:len{min(len(text), 64).bit_length()}")
        vwords = [normalise_value_word(w) for w in words_of(text)[:5]]
        feats += shape + ["w:" + w for w in vwords]
        if self.s.value_feature and 0 < len(text) <= 40 and "<id>" not in vwords:
            feats.append("v:" + key + "=" + text.lower())
        for w in vwords[:2]:
            if w[0] != "<":
                padded = f"^{w}$"
                feats += ["t:" + padded[i : i + 3] for i in range(min(len(padded) - 2, 6))]
        return self._ids(feats)

    def _expr_tokens(self, alert: Mapping[str, Any]) -> list[tuple[str, ...]]:
        """Feature bags of the expression: one per metric, one for functions, one for grouping keys, one per matcher."""
        if self.s.max_expr_tokens <= 0:
            return []
        try:
            expr = expression_of(alert)
        except Exception:  # noqa: BLE001 - hostile input
            return []
        if not expr:
            return []
        metrics, functions, grouping, matchers = expression_parts(expr)
        tokens: list[tuple[str, ...]] = []
        for metric in metrics[:4]:
            words = words_of(metric)
            tokens.append(
                tuple(
                    ["m:" + metric, "mp:" + "_".join(words[:3]), "mp:" + "_".join(words[:2])]
                    + ["w:" + w for w in words[:8]]
                )
            )
        if functions:
            tokens.append(tuple("f:" + f.lower() for f in functions[:12]))
        if grouping:
            tokens.append(tuple("g:" + k for k in grouping[:12]))
        for key, op, value in matchers:
            if len(tokens) >= self.s.max_expr_tokens:
                break
            if key in ("job", "__name__") and op == "=":
                continue
            vwords = [normalise_value_word(w) for w in words_of(value)[:6]]
            tokens.append(
                tuple(["k:" + key, "op:" + op, "v:" + key + "=" + value[:40].lower()] + ["w:" + w for w in vwords])
            )
        return tokens[: self.s.max_expr_tokens]

    # -- pieces of the alert ----------------------------------------------------------------------
    def _select_labels(self, labels: Mapping[Any, Any]) -> list[tuple[str, Any]]:
        """Priority keys first (the catalog's parameter sources, kinds...), then the rest by name."""
        picked: dict[str, Any] = {}
        for key in self.s.priority_keys:
            try:
                if key in labels:
                    picked[key] = labels[key]
            except Exception:  # noqa: BLE001 - a hostile mapping whose __contains__/__getitem__ raises
                break
        rest: list[tuple[str, Any]] = []
        try:
            for key, value in islice(labels.items(), self.s.scan_labels + len(picked) + 1):
                k = as_text(key, 128)
                if k != "alertname" and k not in picked:
                    rest.append((k, value))
        except Exception:  # noqa: BLE001, S110 - hostile input: keep what was read so far
            pass
        rest.sort(key=lambda kv: kv[0])
        out = list(picked.items()) + rest
        return out[: self.s.max_labels]

    def _name_words(self, alertname: Any) -> list[str]:
        words: list[str] = []
        for w in words_of(as_text(alertname, 200)):
            words += segment(w, self.vocab)
        return words[: self.s.max_name_words]

    def _annotation_words(self, annotations: Any) -> list[tuple[int, str]]:
        if not isinstance(annotations, Mapping):
            return []
        out: list[tuple[int, str]] = []
        try:
            url = annotations.get("runbook_url")
            if url is not None:
                tail = as_text(url, 300).rstrip("/").rsplit("/", 1)[-1]
                out += [(URL, w) for w in words_of(tail)[:4]]
            for key, seg in (("summary", SUMMARY), ("description", DESCRIPTION), ("message", DESCRIPTION)):
                text = annotations.get(key)
                if text is not None:
                    words = [normalise_value_word(w) for w in words_of(as_text(text, MAX_ANNOTATION_CHARS))]
                    if self.s.drop_stopwords:
                        words = [w for w in words if w not in STOPWORDS and len(w) > 1]
                    out += [(seg, w) for w in words]
                if len(out) >= self.s.max_annotation_words:
                    break
        except Exception:  # noqa: BLE001, S110 - hostile input: keep what was read so far
            pass
        return out[: self.s.max_annotation_words]

    # -- the whole alert ----------------------------------------------------------------------------
    def encode(self, alert: Any) -> EncodedAlert:
        s = self.s
        L, F = s.seq_len, s.max_features
        feats = np.zeros((L, F), dtype=np.int32)
        segments = np.zeros(L, dtype=np.int8)
        positions = np.zeros(L, dtype=np.int8)
        if not isinstance(alert, Mapping):
            alert = {}
        labels = alert.get("labels")
        labels = labels if isinstance(labels, Mapping) else {}
        annotations = alert.get("annotations")

        def put(i: int, ids: Sequence[int], seg: int, pos: int) -> None:
            feats[i, : len(ids)] = ids
            segments[i], positions[i] = seg, min(pos, 31)

        put(0, self._ids(["cls"]), CLS, 0)
        try:
            alertname = labels.get("alertname", "")
        except Exception:  # noqa: BLE001 - hostile mapping
            alertname = ""
        for j, w in enumerate(self._name_words(alertname)):
            put(1 + j, self._word_features(w), NAME, j)

        slot_keys: list[str] = []
        slot_values: list[Any] = []
        for j, (key, value) in enumerate(self._select_labels(labels)):
            is_str = isinstance(value, str)
            put(s.slot_start + j, self._slot_features(key, as_text(value, MAX_VALUE_CHARS), is_str), SLOT, 0)
            slot_keys.append(key)
            slot_values.append(value)

        base = s.slot_start + s.max_labels
        for j, bag in enumerate(self._expr_tokens(alert)):
            put(base + j, self._ids(bag), EXPR, j)
        base += s.max_expr_tokens
        counters: dict[int, int] = {}
        for j, (seg, w) in enumerate(self._annotation_words(annotations)):
            counters[seg] = counters.get(seg, -1) + 1
            put(base + j, self._word_features(w), seg, counters[seg])
        return EncodedAlert(feats, segments, positions, slot_keys, slot_values)


def expression_of(alert: Mapping[str, Any]) -> str:
    """The PromQL expression of an alert, from `generatorURL` (`.../graph?g0.expr=<query-escaped>&g0.tab=1`)."""
    from urllib.parse import unquote_plus

    url = alert.get("generatorURL")
    if not isinstance(url, str):
        return ""
    m = _EXPR_PARAM.search(url[: MAX_EXPR_CHARS * 3])
    return unquote_plus(m.group(1))[:MAX_EXPR_CHARS] if m else ""


def expression_parts(expr: str) -> tuple[list[str], list[str], list[str], list[tuple[str, str, str]]]:
    """(metric names, functions and aggregations, grouping label keys, matchers) of a PromQL expression."""
    matchers = _PROM_MATCHER.findall(expr)
    grouping: list[str] = []
    for _, keys in _PROM_CLAUSE.findall(expr):
        grouping += [k.strip() for k in keys.split(",") if k.strip() and k.strip() not in grouping]
    bare = _PROM_CLAUSE.sub(" ", re.sub(r"\{[^}]*\}", " ", _PROM_STRING.sub(" ", expr)))
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    metrics: list[str] = []
    functions: list[str] = []
    for m in _PROM_IDENT.finditer(bare):
        name, call = m.group(1), m.group(2)
        if name.lower() in _PROM_KEYWORDS:
            continue
        bucket = functions if call else metrics
        if name not in bucket:
            bucket.append(name)
    for clause in ("by", "without", "group_left", "on"):
        if re.search(rf"\b{clause}\s*\(", expr):
            functions.append(clause)
    return metrics, functions, grouping, matchers


def default_priority_keys(catalog: Any) -> tuple[str, ...]:
    """The catalog's parameter sources (best first), then labels that say *what* the alert is about."""
    keys: list[str] = []
    for runbook in catalog.functions:
        for param in runbook.parameters:
            keys += [k for k in param.sources if k not in keys]
    for k in (
        "kind",
        "customresource_kind",
        "statefulset",
        "daemonset",
        "job_name",
        "horizontalpodautoscaler",
        "node",
        "container",
        "reason",
        "phase",
        "condition",
        "persistentvolume",
        "job",
        "service",
        "instance",
        "type",
        "status",
        "ready",
        "suspended",
        "created_by_name",
        "owner_name",
        "owner_kind",
    ):
        if k not in keys:
            keys.append(k)
    return tuple(keys)
