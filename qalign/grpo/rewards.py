"""GRPO rewards: plain functions `f(completions, answers, **kwargs) -> list[float]`.

TRL's GRPOTrainer calls each with `prompts`, `completions`, `completion_ids`, `trainer_state` and every extra
dataset column (here `answers`, the gold aliases of each prompt) as keyword arguments. Completions are strings, or
conversational lists `[{"role": "assistant", "content": ...}]`. Scores reuse the evaluators' metrics, so the reward
is the metric the study reports.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from qalign.evaluators.metrics import exact_match, extract_answer, f1_score, substring_exact_match

MAX_ANSWER_WORDS = 10
_THINK_THEN_ANSWER = re.compile(r"<think>(.*?)</think>(.*)", re.DOTALL)


def message_text(item: Any) -> str:
    """The text of a completion or prompt: a string, a message dict, or a list of messages (contents joined)."""
    if item is None:
        return ""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        content = item.get("content", "")
        if isinstance(content, list):  # multimodal parts: keep the text ones
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return "".join(message_text(message) for message in item)


def _golds(answers: Any) -> list[str]:
    if answers is None:
        return []
    return [answers] if isinstance(answers, str) else [str(a) for a in answers]


def _score(metric: Callable[[str, list[str]], float], completions: Sequence[Any], answers: Sequence[Any]
           ) -> list[float]:
    if len(answers) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} answer lists")
    return [metric(message_text(c), _golds(a)) for c, a in zip(completions, answers, strict=True)]


def subem(completions: Sequence[Any], answers: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when a normalised gold alias occurs in the normalised answer (think stripped)."""
    return _score(substring_exact_match, completions, answers)


def em(completions: Sequence[Any], answers: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the normalised answer equals a normalised gold alias."""
    return _score(exact_match, completions, answers)


def f1(completions: Sequence[Any], answers: Sequence[Any], **kwargs: Any) -> list[float]:
    """Max token-overlap F1 against the gold aliases."""
    return _score(f1_score, completions, answers)


def _short(answer: str, max_words: int) -> bool:
    return 1 <= len(answer.split()) <= max_words


# Format credit needs a correct answer too, or a short wrong answer out-earns a long right one. "Correct" is
# F1 >= 0.5, not EM: a near-miss alias ("in 1945" for "1945", F1 0.67) keeps the credit, while a padded answer
# cannot (F1 >= 0.5 at full recall needs precision >= 1/3: at most 3x the gold's tokens).
FORMAT_MIN_F1 = 0.5


def format_reward(
    completions: Sequence[Any],
    answers: Sequence[Any] | None = None,
    prompts: Sequence[Any] | None = None,
    max_words: int = MAX_ANSWER_WORDS,
    min_f1: float = FORMAT_MIN_F1,
    **kwargs: Any,
) -> list[float]:
    """1.0 for a short final answer (1..max_words words of `extract_answer`: think and answer marker dropped) that
    is also correct (F1 >= min_f1).

    When the prompt asks for `<think>` (the think_then_answer prompt), the completion must also be exactly one
    `<think>...</think>` block followed by that short answer. A prompt that already ends with `<think>` (a chat
    template opening the block) counts the block as opened.
    """
    if answers is None:
        raise ValueError("format_reward needs the gold `answers` (its credit is gated on a correct answer); the GRPO "
                         "dataset must carry an `answers` column (qalign convert grpo writes it).")
    correct = [score >= min_f1 for score in f1(completions, answers)]
    rewards = []
    for i, completion in enumerate(completions):
        text = message_text(completion).strip()
        prompt = message_text(prompts[i]) if prompts is not None else ""
        if "<think>" not in prompt:
            rewards.append(float(correct[i] and _short(extract_answer(text) or "", max_words)))
            continue
        if prompt.rstrip().endswith("<think>") and not text.startswith("<think>"):
            text = "<think>" + text
        match = _THINK_THEN_ANSWER.fullmatch(text)
        well_formed = match is not None and text.count("<think>") == 1 and text.count("</think>") == 1
        rewards.append(float(correct[i] and well_formed and _short(match.group(2).strip(), max_words)))
    return rewards


REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "subem": subem,
    "em": em,
    "f1": f1,
    "format": format_reward,
}
# Not subem: a truncated sentence that mentions the gold earns SubEM 1, so GRPO from base learned long answers
# (issue 20: 80-93 % of completions hit the 32-token cap, F1 +1.6). EM and F1 both fall as an answer grows.
DEFAULT_REWARDS = ("em", "f1")


def get_reward_funcs(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    """The functions for `names` (keys of REWARD_FUNCS)."""
    unknown = [name for name in names if name not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"Unknown reward function(s) {unknown}; choose from: {', '.join(REWARD_FUNCS)}.")
    return [REWARD_FUNCS[name] for name in names]
