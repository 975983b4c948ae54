"""SQuAD-style answer normalisation and the three metrics. Plain functions, reused by GRPO rewards."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_PUNCTUATION = set(string.punctuation)


def strip_think(text: str) -> str:
    """Drop `<think>...</think>` blocks; an unclosed `<think>` drops everything after it (no answer was given)."""
    text = _THINK_BLOCK.sub("", text)
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.replace("</think>", "").strip()


def _is_punctuation(ch: str) -> bool:
    # SQuAD drops string.punctuation; we also drop Unicode punctuation (curly quotes, dashes) so that
    # "“Paris”" matches "Paris". On ASCII text this is exactly SQuAD's rule.
    return ch in _PUNCTUATION or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation (ASCII and Unicode), drop articles, collapse whitespace (SQuAD v1.1)."""
    text = text.lower()
    text = "".join(ch for ch in text if not _is_punctuation(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold alias (empty golds never match)."""
    pred = normalize_answer(strip_think(prediction))
    return float(any((norm := normalize_answer(gold)) and pred == norm for gold in golds))


def substring_exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when some normalised gold alias occurs inside the normalised prediction (empty golds never match)."""
    pred = normalize_answer(strip_think(prediction))
    return float(any((norm := normalize_answer(gold)) and norm in pred for gold in golds))


def _token_f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: list[str]) -> float:
    """Max over gold aliases of token-overlap F1."""
    pred = strip_think(prediction)
    return max((_token_f1(pred, gold) for gold in golds), default=0.0)


def score_all(prediction: str, golds: list[str]) -> dict[str, float]:
    return {
        "subem": substring_exact_match(prediction, golds),
        "em": exact_match(prediction, golds),
        "f1": f1_score(prediction, golds),
    }
