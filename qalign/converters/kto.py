"""Desirable / undesirable answers from the model's own samples -> LLaMA-Factory KTO data.

Labels under strategy `em` (default): desirable = the exact samples (EM 1), best F1 first, ties to the fewest
normalised words, and/or the first gold alias (`--desirable`: the gold alias when no sample is exact, by default);
undesirable = every other sample, **including** correct-but-verbose ones (SubEM 1, EM 0), marked `near` when its
F1 is within `margin` of the best desirable F1. Under `subem` / `f1` (the old rules): desirable = correct samples
(a gold alias inside / F1 >= threshold) best F1 first, undesirable = the wrong ones. Cleaning drops, and counts by
reason:

- empty: nothing left after normalisation (`<think>` blocks, punctuation and articles removed);
- degenerate: a word or a 2- or 3-word phrase repeated 4+ times in a row, or 16+ words of which < 30% distinct;
- contains_gold (undesirables, `subem` / `f1` only): a gold alias occurs in it (SubEM);
- duplicate: the same normalised text was already kept (or found near) for this question;
- near_desirable (undesirables, `em` only): F1 within the margin of the desirable answer, no clear negative;
- over_cap: more than `max_per_question` examples of that label for this question.

Counted as well: kept undesirables that are `wrong` (SubEM 0) or `verbose` (SubEM 1), and the mean length in
normalised words of each label (recorded as `mean_words` in the registry entry, with `desirable_rows` and
`undesirable_rows`, from which `kto_*_weight: auto` is resolved at train time: qalign/converters/kto_weights.py).

Rows are interleaved across questions (every question's first example, then every second one, ...): LLaMA-Factory's
KTO pairs each prompt with the previous row's response for its KL term, so neighbours should be other questions.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any, Literal

from qalign.converters.job import ConvertJob
from qalign.converters.kto_weights import balance_weights
from qalign.converters.registry import ALPACA_COLUMNS, ConversionResult
from qalign.evaluators.metrics import f1_score, normalize_answer, strip_think, substring_exact_match
from qalign.generate.sampling import (
    DEFAULT_MARGIN,
    SamplingConfig,
    Strategy,
    answer_words,
    check_margin,
    is_correct,
    mean_words,
    near,
    sample_questions,
)

Desirable = Literal["samples", "gold", "both", "fallback"]
DESIRABLE_POLICIES = ("samples", "gold", "both", "fallback")
KTO_COLUMNS = {**ALPACA_COLUMNS, "kto_tag": "kto_tag"}
_RUN = 4  # repetitions in a row that make an answer degenerate
_LONG, _MIN_DISTINCT = 16, 0.3


@dataclass(frozen=True)
class Example:
    text: str
    desirable: bool
    f1: float
    source: str  # "sample" or "gold"
    near: bool = False  # strategy em: an undesirable within the margin of the desirable F1 (cleaning drops it)


def is_degenerate(text: str) -> bool:
    """A word or 2-/3-word phrase repeated 4+ times in a row, or a long answer with few distinct words."""
    words = normalize_answer(strip_think(text)).split()
    for n in (1, 2, 3):
        for start in range(len(words) - n * _RUN + 1):
            gram = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == gram for k in range(1, _RUN)):
                return True
    return len(words) >= _LONG and len(set(words)) / len(words) < _MIN_DISTINCT


def label_examples(texts: list[str], answers: list[str], *, strategy: Strategy = "em", threshold: float = 0.5,
                   desirable: Desirable = "fallback", margin: float = DEFAULT_MARGIN) -> list[Example]:
    """Label one question's samples; desirable ones first (best F1, then, under `em`, fewest words), undesirable
    ones in sampling order."""
    if desirable not in DESIRABLE_POLICIES:
        raise ValueError(f"unknown desirable policy {desirable!r}; use one of {DESIRABLE_POLICIES}")
    scored = [Example(t, is_correct(t, answers, strategy, threshold), f1_score(t, answers), "sample") for t in texts]
    rank = (lambda e: (-e.f1, answer_words(e.text))) if strategy == "em" else (lambda e: -e.f1)
    good = sorted((e for e in scored if e.desirable), key=rank) if desirable != "gold" else []
    gold = Example(answers[0], True, f1_score(answers[0], answers), "gold")
    if desirable in ("gold", "both") or (desirable == "fallback" and not good):
        good = [gold, *good]
    bad = [e for e in scored if not e.desirable]
    if strategy == "em":
        best = max((e.f1 for e in good), default=gold.f1)
        bad = [replace(e, near=near(e.f1, best, check_margin(margin))) for e in bad]
    return good + bad


def clean_examples(
    examples: list[Example], answers: list[str], max_per_question: int = 2, strategy: Strategy = "em"
) -> tuple[list[Example], Counter]:
    """Drop empty, degenerate, gold-holding (undesirable, old strategies), duplicate, near (undesirable, `em`) and
    over-cap examples; count why."""
    kept: list[Example] = []
    dropped: Counter = Counter()
    seen: set[str] = set()
    per_label: Counter = Counter()
    for example in examples:
        key = normalize_answer(strip_think(example.text))
        if not key:
            reason = "empty"
        elif is_degenerate(example.text):
            reason = "degenerate"
        elif strategy != "em" and not example.desirable and substring_exact_match(example.text, answers):
            reason = "contains_gold"  # the old rules: such a negative would teach the model to avoid the answer
        elif key in seen:
            reason = "duplicate"
        elif example.near:
            seen.add(key)  # its repeats count as duplicates, as in `convert preference`
            reason = "near_desirable"
        elif per_label[example.desirable] >= max_per_question:
            reason = "over_cap"
        else:
            seen.add(key)
            per_label[example.desirable] += 1
            kept.append(example)
            continue
        dropped[("desirable" if example.desirable else "undesirable", reason)] += 1
    return kept, dropped


def kept_counts(kept: list[Example], answers: list[str]) -> Counter:
    """Per label: rows and summed normalised words; undesirables split into `wrong` (SubEM 0) and `verbose`."""
    counts: Counter = Counter()
    for example in kept:
        label = "desirable" if example.desirable else "undesirable"
        counts[label] += 1
        counts[f"words_{label}"] += answer_words(example.text)
        if not example.desirable:
            counts["undesirable_verbose" if substring_exact_match(example.text, answers) else "undesirable_wrong"] += 1
    return counts


def kto_mean_words(counts: Counter) -> dict[str, float | None]:
    """Mean answer length of each label over the kept rows, in normalised words."""
    return {label: mean_words(counts[f"words_{label}"], counts[label]) for label in ("desirable", "undesirable")}


def convert_kto(
    job: ConvertJob,
    *,
    sampling: SamplingConfig | None = None,
    samples: str | Path | None = None,
    strategy: Strategy = "em",
    threshold: float = 0.5,
    desirable: Desirable = "fallback",
    max_per_question: int = 2,
    margin: float = DEFAULT_MARGIN,
) -> tuple[ConversionResult, Counter]:
    """Sample (or read cached samples), label and clean them, write `data/<name>.json` and register it for KTO."""
    sampled = sample_questions(job, sampling, samples)
    counts: Counter = Counter()
    per_question: list[list[dict[str, Any]]] = []
    for q in sampled.questions:
        labelled = label_examples(sampled.texts[q.id], q.answers, strategy=strategy, threshold=threshold,
                                  desirable=desirable, margin=margin)
        kept, dropped = clean_examples(labelled, q.answers, max_per_question, strategy)
        counts.update(dropped)
        counts.update(kept_counts(kept, q.answers))
        per_question.append([{"id": q.id, "question": q.question, "instruction": q.prompt, "input": "",
                              "output": e.text, "kto_tag": e.desirable, "f1": e.f1, "source": e.source}
                             for e in kept])
    # interleave questions: LLaMA-Factory's KTO pairs each prompt with the previous row's response for its KL term
    rows = [row for rank in zip_longest(*per_question) for row in rank if row is not None]
    entry = job.entry("kto", len(rows), **sampled.entry_metadata(), strategy=strategy, threshold=threshold,
                      margin=margin, desirable=desirable, max_per_question=max_per_question,
                      desirable_rows=counts["desirable"], undesirable_rows=counts["undesirable"],
                      undesirable_kinds={"wrong": counts["undesirable_wrong"],
                                         "verbose": counts["undesirable_verbose"]},
                      mean_words=kto_mean_words(counts))
    entry["columns"] = dict(KTO_COLUMNS)
    return job.write(rows, entry, sampled.stats), counts


def kto_summary(counts: Counter) -> str:
    """The desirable/undesirable balance (undesirables by kind), mean lengths, what was dropped and why, and a
    weight hint when unbalanced."""
    good, bad = counts["desirable"], counts["undesirable"]
    dropped = ", ".join(f"{counts[key]} {key[0]} {key[1].replace('_', ' ')}"
                        for key in sorted(k for k in counts if isinstance(k, tuple)))
    words = kto_mean_words(counts)
    line = (f"kto balance: {good} desirable / {bad} undesirable ({counts['undesirable_wrong']} wrong, "
            f"{counts['undesirable_verbose']} verbose); mean words desirable {words['desirable']} / undesirable "
            f"{words['undesirable']}; dropped: {dropped or 'none'}")
    if not good or not bad:
        return line + "; warning: only one label, KTO needs both"
    weights = dict(zip(("kto_chosen_weight", "kto_rejected_weight"), balance_weights(good, bad), strict=True))
    raised = [f"{key}={value:.2f}" for key, value in weights.items() if value != 1.0]
    if raised:  # the KTO paper's rule (kto_weights.py); `auto` in the recipe picks the same numbers
        line += f"; to balance, train with {raised[0]} (or kto_*_weight: auto)"
    return line


def add_kto_arguments(parser: argparse.ArgumentParser) -> None:
    from qalign.converters.sampling_args import add_sampling_arguments

    add_sampling_arguments(parser)
    parser.add_argument("--desirable", choices=DESIRABLE_POLICIES, default="fallback",
                        help="desirable examples: correct (under --strategy em: exact) samples, the gold answer, "
                             "both, or samples with the gold answer only when none is correct (fallback, default)")
    parser.add_argument("--max-per-question", type=int, default=2, metavar="N",
                        help="at most N desirable and N undesirable examples per question (default: 2)")
