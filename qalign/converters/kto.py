"""Desirable / undesirable answers from the model's own samples -> LLaMA-Factory KTO data.

Labels: desirable = correct samples and/or the first gold alias (`--desirable`), undesirable = wrong samples.
Cleaning drops, and counts by reason:

- empty: nothing left after normalisation (`<think>` blocks, punctuation and articles removed);
- degenerate: a word or a 2- or 3-word phrase repeated 4+ times in a row, or 16+ words of which < 30% distinct;
- contains_gold (undesirables only): a gold alias occurs in it (SubEM); such a negative would teach the model to
  avoid the answer;
- duplicate: the same normalised text was already kept for this question;
- over_cap: more than `max_per_question` examples of that label for this question.

Rows are interleaved across questions (every question's first example, then every second one, ...): LLaMA-Factory's
KTO pairs each prompt with the previous row's response for its KL term, so neighbours should be other questions.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any, Literal

from qalign.converters.job import ConvertJob
from qalign.converters.registry import ALPACA_COLUMNS, ConversionResult
from qalign.converters.sampling import (
    SamplingConfig,
    Strategy,
    is_correct,
    sample_questions,
)
from qalign.evaluators.metrics import f1_score, normalize_answer, strip_think, substring_exact_match

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


def is_degenerate(text: str) -> bool:
    """A word or 2-/3-word phrase repeated 4+ times in a row, or a long answer with few distinct words."""
    words = normalize_answer(strip_think(text)).split()
    for n in (1, 2, 3):
        for start in range(len(words) - n * _RUN + 1):
            gram = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == gram for k in range(1, _RUN)):
                return True
    return len(words) >= _LONG and len(set(words)) / len(words) < _MIN_DISTINCT


def label_examples(texts: list[str], answers: list[str], *, strategy: Strategy = "subem", threshold: float = 0.5,
                   desirable: Desirable = "fallback") -> list[Example]:
    """Label one question's samples; correct ones best-F1 first, wrong ones in sampling order."""
    if desirable not in DESIRABLE_POLICIES:
        raise ValueError(f"unknown desirable policy {desirable!r}; use one of {DESIRABLE_POLICIES}")
    scored = [Example(t, is_correct(t, answers, strategy, threshold), f1_score(t, answers), "sample") for t in texts]
    good = sorted((e for e in scored if e.desirable), key=lambda e: -e.f1) if desirable != "gold" else []
    gold = Example(answers[0], True, f1_score(answers[0], answers), "gold")
    if desirable in ("gold", "both") or (desirable == "fallback" and not good):
        good = [gold, *good]
    return good + [e for e in scored if not e.desirable]


def clean_examples(
    examples: list[Example], answers: list[str], max_per_question: int = 2
) -> tuple[list[Example], Counter]:
    """Drop empty, degenerate, gold-holding (undesirable), duplicate and over-cap examples; count why."""
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
        elif not example.desirable and substring_exact_match(example.text, answers):
            reason = "contains_gold"
        elif key in seen:
            reason = "duplicate"
        elif per_label[example.desirable] >= max_per_question:
            reason = "over_cap"
        else:
            seen.add(key)
            per_label[example.desirable] += 1
            kept.append(example)
            continue
        dropped[("desirable" if example.desirable else "undesirable", reason)] += 1
    return kept, dropped


def convert_kto(
    job: ConvertJob,
    *,
    sampling: SamplingConfig | None = None,
    samples: str | Path | None = None,
    strategy: Strategy = "subem",
    threshold: float = 0.5,
    desirable: Desirable = "fallback",
    max_per_question: int = 2,
) -> tuple[ConversionResult, Counter]:
    """Sample (or read cached samples), label and clean them, write `data/<name>.json` and register it for KTO."""
    sampled = sample_questions(job, sampling, samples)
    counts: Counter = Counter()
    per_question: list[list[dict[str, Any]]] = []
    for q in sampled.questions:
        labelled = label_examples(sampled.texts[q.id], q.answers, strategy=strategy, threshold=threshold,
                                  desirable=desirable)
        kept, dropped = clean_examples(labelled, q.answers, max_per_question)
        counts.update(dropped)
        counts.update("desirable" if e.desirable else "undesirable" for e in kept)
        per_question.append([{"id": q.id, "question": q.question, "instruction": q.prompt, "input": "",
                              "output": e.text, "kto_tag": e.desirable, "f1": e.f1, "source": e.source}
                             for e in kept])
    # interleave questions: LLaMA-Factory's KTO pairs each prompt with the previous row's response for its KL term
    rows = [row for rank in zip_longest(*per_question) for row in rank if row is not None]
    entry = job.entry("kto", len(rows), **sampled.entry_metadata(), strategy=strategy, threshold=threshold,
                      desirable=desirable, max_per_question=max_per_question, desirable_rows=counts["desirable"],
                      undesirable_rows=counts["undesirable"])
    entry["columns"] = dict(KTO_COLUMNS)
    return job.write(rows, entry, sampled.stats), counts


def kto_summary(counts: Counter) -> str:
    """The desirable/undesirable balance, what was dropped and why, and a weight hint when unbalanced."""
    good, bad = counts["desirable"], counts["undesirable"]
    dropped = ", ".join(f"{counts[key]} {key[0]} {key[1].replace('_', ' ')}"
                        for key in sorted(k for k in counts if isinstance(k, tuple)))
    line = f"kto balance: {good} desirable / {bad} undesirable; dropped: {dropped or 'none'}"
    # KTO paper: keep (chosen_weight * desirable) / (rejected_weight * undesirable) within [1, 4/3]
    if good and bad and not 1 <= good / bad <= 4 / 3:
        weight = "kto_chosen_weight" if good < bad else "kto_rejected_weight"
        line += f"; to balance, train with {weight}={max(good, bad) / min(good, bad):.2f}"
    elif not good or not bad:
        line += "; warning: only one label, KTO needs both"
    return line


def add_kto_arguments(parser: argparse.ArgumentParser) -> None:
    from qalign.converters.sampling_args import add_sampling_arguments

    add_sampling_arguments(parser)
    parser.add_argument("--desirable", choices=DESIRABLE_POLICIES, default="fallback",
                        help="desirable examples: correct samples, the gold answer, both, or samples with the gold "
                             "answer only when none is correct (fallback, default)")
    parser.add_argument("--max-per-question", type=int, default=2, metavar="N",
                        help="at most N desirable and N undesirable examples per question (default: 2)")
