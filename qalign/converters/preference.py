"""Preference pairs mined from the model's own samples -> LLaMA-Factory ranking data (DPO, ORPO).

Per question: chosen = the correct sample with the highest F1 (or the first gold alias when no sample is correct);
rejected = distinct wrong samples that contain no gold alias (SubEM 0), in sampling order. A pair is kept only
when chosen F1 > rejected F1 (ties and inversions are dropped and counted); at most `max_pairs` per question.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.converters.job import ConvertJob
from qalign.converters.registry import ConversionResult
from qalign.converters.sampling import (
    SamplingConfig,
    Strategy,
    is_correct,
    sample_questions,
)
from qalign.evaluators.metrics import f1_score, normalize_answer, strip_think, substring_exact_match

RANKING_COLUMNS = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}


@dataclass(frozen=True)
class Pair:
    chosen: str
    rejected: str
    chosen_f1: float
    rejected_f1: float
    chosen_from: str  # "sample" or "gold"


def build_pairs(
    texts: list[str], answers: list[str], *, strategy: Strategy = "subem", threshold: float = 0.5, max_pairs: int = 2
) -> tuple[list[Pair], Counter]:
    """Pairs for one question from its samples `texts` and gold `answers`, plus counts of what was dropped."""
    counts: Counter = Counter()
    scored = [(text, f1_score(text, answers), is_correct(text, answers, strategy, threshold)) for text in texts]
    correct = [(text, f1) for text, f1, ok in scored if ok]
    if correct:
        chosen, chosen_f1 = max(correct, key=lambda item: item[1])  # max keeps the first of equal F1s
        source = "sample"
        counts["questions_with_correct"] += 1
    else:
        chosen, chosen_f1, source = answers[0], f1_score(answers[0], answers), "gold"
        counts["questions_gold_chosen"] += 1
    pairs: list[Pair] = []
    seen = {normalize_answer(strip_think(chosen))}
    for text, f1, ok in scored:
        key = normalize_answer(strip_think(text))
        if ok or not key:
            continue  # correct samples are never rejected; empty ones say nothing
        if substring_exact_match(text, answers):
            counts["dropped_contains_gold"] += 1  # wrong by F1 but holds the answer: not a clean negative
            continue
        if key in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(key)
        if f1 == chosen_f1:
            counts["dropped_tie"] += 1
        elif f1 > chosen_f1:
            counts["dropped_inverted"] += 1
        elif len(pairs) >= max_pairs:
            counts["dropped_over_cap"] += 1
        else:
            pairs.append(Pair(chosen, text, chosen_f1, f1, source))
    if not pairs:
        counts["questions_without_pair"] += 1
    counts["pairs"] += len(pairs)
    return pairs, counts


def convert_preference(
    job: ConvertJob,
    *,
    sampling: SamplingConfig | None = None,
    samples: str | Path | None = None,
    strategy: Strategy = "subem",
    threshold: float = 0.5,
    max_pairs: int = 2,
) -> tuple[ConversionResult, Counter]:
    """Sample (or read cached samples), mine pairs, write `data/<name>.json` and register it as ranking data."""
    sampled = sample_questions(job, sampling, samples)
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    for q in sampled.questions:
        pairs, question_counts = build_pairs(sampled.texts[q.id], q.answers, strategy=strategy, threshold=threshold,
                                             max_pairs=max_pairs)
        counts.update(question_counts)
        rows += [{"id": q.id, "question": q.question, "instruction": q.prompt, "input": "", "chosen": p.chosen,
                  "rejected": p.rejected, "chosen_f1": p.chosen_f1, "rejected_f1": p.rejected_f1,
                  "chosen_from": p.chosen_from} for p in pairs]
    entry = job.entry("preference", len(rows), **sampled.entry_metadata(), strategy=strategy, threshold=threshold,
                      max_pairs=max_pairs)
    entry.update(ranking=True, columns=dict(RANKING_COLUMNS))
    return job.write(rows, entry, sampled.stats), counts


def pair_summary(counts: Counter) -> str:
    """One line: questions, how chosen was picked, pairs, and what was dropped."""
    dropped = ", ".join(f"{counts[k]} {k.removeprefix('dropped_').replace('_', ' ')}" for k in sorted(counts)
                        if k.startswith("dropped_") and counts[k])
    return (f"mined {counts['pairs']} pairs: {counts['questions_with_correct']} questions with a correct sample, "
            f"{counts['questions_gold_chosen']} with the gold answer as chosen, {counts['questions_without_pair']} "
            f"without a pair; dropped rejected: {dropped or 'none'}")


def add_preference_arguments(parser: argparse.ArgumentParser) -> None:
    from qalign.converters.sampling_args import add_sampling_arguments

    add_sampling_arguments(parser)
    parser.add_argument("--max-pairs", type=int, default=2, metavar="N", help="pairs per question (default: 2)")
