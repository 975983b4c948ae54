"""SQuAD-style answer normalisation and the three metrics. Plain functions, reused by GRPO rewards.

Every metric scores `extract_answer(prediction)` (think blocks, the answer marker; no answer scores 0)."""

from __future__ import annotations

from collections import Counter

from qalign.text import extract_answer, normalize_answer, strip_think

__all__ = ["exact_match", "extract_answer", "f1_score", "normalize_answer", "score_all", "strip_think",
           "substring_exact_match"]


def exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold alias (empty golds never match)."""
    pred = normalize_answer(extract_answer(prediction) or "")
    return float(any((norm := normalize_answer(gold)) and pred == norm for gold in golds))


def substring_exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when some normalised gold alias occurs inside the normalised prediction (empty golds never match)."""
    pred = normalize_answer(extract_answer(prediction) or "")
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
    pred = extract_answer(prediction) or ""
    return max((_token_f1(pred, gold) for gold in golds), default=0.0)


def score_all(prediction: str, golds: list[str]) -> dict[str, float]:
    return {
        "subem": substring_exact_match(prediction, golds),
        "em": exact_match(prediction, golds),
        "f1": f1_score(prediction, golds),
    }
