"""Preference pairs mined from the model's own samples -> LLaMA-Factory ranking data (DPO, ORPO).

Strategy `em` (default) prefers the exact short answer. Per question: chosen = the exact sample (EM 1) with the
highest F1, ties to the fewest normalised words, else the first gold alias (the SFT target; `chosen_from: gold`);
rejected = every other distinct non-empty sample whose F1 is at least `margin` below chosen's, in sampling order,
**including** correct-but-verbose ones (SubEM 1, EM 0: the long answers DPO drifts to); samples within the margin
are dropped (`near_chosen`). Counted: rejected `wrong` (SubEM 0) vs `verbose` (SubEM 1), and the mean length in
normalised words of chosen and rejected (recorded as `mean_words` in the registry entry).

Strategies `subem` / `f1` (the old behaviour): correct = a gold alias inside the sample / F1 >= threshold;
chosen = the correct sample with the highest F1 (or the first gold alias); rejected = distinct wrong samples that
contain no gold alias (those are dropped as `contains_gold`), kept only when chosen F1 > rejected F1 (ties and
inversions are dropped and counted). Either way at most `max_pairs` per question.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.converters.job import ConvertJob
from qalign.converters.registry import ConversionResult
from qalign.evaluators.metrics import exact_match, f1_score, normalize_answer, strip_think, substring_exact_match
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

RANKING_COLUMNS = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}


@dataclass(frozen=True)
class Pair:
    chosen: str
    rejected: str
    chosen_f1: float
    rejected_f1: float
    chosen_from: str  # "sample" or "gold"


def build_pairs(
    texts: list[str], answers: list[str], *, strategy: Strategy = "em", threshold: float = 0.5, max_pairs: int = 2,
    margin: float = DEFAULT_MARGIN,
) -> tuple[list[Pair], Counter]:
    """Pairs for one question from its samples `texts` and gold `answers`, plus counts of what was kept and dropped
    (`rejected_wrong` / `rejected_verbose`, and `words_chosen` / `words_rejected` summed over the pairs)."""
    if strategy == "em":
        pairs, counts = _exact_pairs(texts, answers, max_pairs, check_margin(margin))
    else:
        pairs, counts = _correct_pairs(texts, answers, strategy, threshold, max_pairs)
    for pair in pairs:
        counts["rejected_verbose" if substring_exact_match(pair.rejected, answers) else "rejected_wrong"] += 1
        counts["words_chosen"] += answer_words(pair.chosen)
        counts["words_rejected"] += answer_words(pair.rejected)
    if not pairs:
        counts["questions_without_pair"] += 1
    counts["pairs"] += len(pairs)
    return pairs, counts


def _chosen(candidates: list[tuple[str, float]], answers: list[str], counts: Counter,
            rank: Callable[[tuple[str, float]], Any]) -> tuple[str, float, str]:
    """(text, F1, source) of chosen: the candidate (text, F1) lowest by `rank`, the first in sampling order of equal
    ranks, else the first gold alias (the SFT target); counted."""
    if candidates:
        counts["questions_with_correct"] += 1
        text, f1 = min(candidates, key=rank)
        return text, f1, "sample"
    counts["questions_gold_chosen"] += 1
    return answers[0], f1_score(answers[0], answers), "gold"


def _exact_pairs(texts: list[str], answers: list[str], max_pairs: int, margin: float) -> tuple[list[Pair], Counter]:
    """Strategy `em`: the best exact sample (shortest among equal F1) or the gold alias, against every sample at
    least `margin` below it in F1, verbose ones included."""
    counts: Counter = Counter()
    scored = [(text, f1_score(text, answers), exact_match(text, answers) == 1.0) for text in texts]
    exact = [(text, f1) for text, f1, ok in scored if ok]
    chosen, chosen_f1, source = _chosen(exact, answers, counts, lambda item: (-item[1], answer_words(item[0])))
    pairs: list[Pair] = []
    seen = {normalize_answer(strip_think(chosen))}
    for text, f1, ok in scored:
        key = normalize_answer(strip_think(text))
        if ok or not key:
            continue  # an exact answer is never rejected; an empty one says nothing
        if key in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(key)
        if near(f1, chosen_f1, margin):
            counts["dropped_near_chosen"] += 1  # too close to chosen (or better) to be a clear negative
        elif len(pairs) >= max_pairs:
            counts["dropped_over_cap"] += 1
        else:
            pairs.append(Pair(chosen, text, chosen_f1, f1, source))
    return pairs, counts


def _correct_pairs(texts: list[str], answers: list[str], strategy: Strategy, threshold: float,
                   max_pairs: int) -> tuple[list[Pair], Counter]:
    """Strategies `subem` / `f1` (the old rule): gold-holding negatives dropped, ties and inversions dropped."""
    counts: Counter = Counter()
    scored = [(text, f1_score(text, answers), is_correct(text, answers, strategy, threshold)) for text in texts]
    correct = [(text, f1) for text, f1, ok in scored if ok]
    chosen, chosen_f1, source = _chosen(correct, answers, counts, lambda item: -item[1])
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
    return pairs, counts


def convert_preference(
    job: ConvertJob,
    *,
    sampling: SamplingConfig | None = None,
    samples: str | Path | None = None,
    strategy: Strategy = "em",
    threshold: float = 0.5,
    max_pairs: int = 2,
    margin: float = DEFAULT_MARGIN,
) -> tuple[ConversionResult, Counter]:
    """Sample (or read cached samples), mine pairs, write `data/<name>.json` and register it as ranking data."""
    sampled = sample_questions(job, sampling, samples)
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    for q in sampled.questions:
        pairs, question_counts = build_pairs(sampled.texts[q.id], q.answers, strategy=strategy, threshold=threshold,
                                             max_pairs=max_pairs, margin=margin)
        counts.update(question_counts)
        rows += [{"id": q.id, "question": q.question, "instruction": q.prompt, "input": "", "chosen": p.chosen,
                  "rejected": p.rejected, "chosen_f1": p.chosen_f1, "rejected_f1": p.rejected_f1,
                  "chosen_from": p.chosen_from} for p in pairs]
    entry = job.entry("preference", len(rows), **sampled.entry_metadata(), strategy=strategy, threshold=threshold,
                      margin=margin, max_pairs=max_pairs,
                      rejected_kinds={"wrong": counts["rejected_wrong"], "verbose": counts["rejected_verbose"]},
                      mean_words=pair_mean_words(counts))
    entry.update(ranking=True, columns=dict(RANKING_COLUMNS))
    return job.write(rows, entry, sampled.stats), counts


def pair_mean_words(counts: Counter) -> dict[str, float | None]:
    """Mean answer length of chosen and rejected over the pairs, in normalised words."""
    return {side: mean_words(counts[f"words_{side}"], counts["pairs"]) for side in ("chosen", "rejected")}


def pair_summary(counts: Counter) -> str:
    """One line: questions, how chosen was picked, pairs by kind of rejected, mean lengths, and what was dropped."""
    dropped = ", ".join(f"{counts[k]} {k.removeprefix('dropped_').replace('_', ' ')}" for k in sorted(counts)
                        if k.startswith("dropped_") and counts[k])
    words = pair_mean_words(counts)
    return (f"mined {counts['pairs']} pairs (rejected: {counts['rejected_wrong']} wrong, {counts['rejected_verbose']} "
            f"verbose): {counts['questions_with_correct']} questions with a correct sample, "
            f"{counts['questions_gold_chosen']} with the gold answer as chosen, {counts['questions_without_pair']} "
            f"without a pair; mean words chosen {words['chosen']} / rejected {words['rejected']}; "
            f"dropped rejected: {dropped or 'none'}")


def add_preference_arguments(parser: argparse.ArgumentParser) -> None:
    from qalign.converters.sampling_args import add_sampling_arguments

    add_sampling_arguments(parser)
    parser.add_argument("--max-pairs", type=int, default=2, metavar="N", help="pairs per question (default: 2)")
