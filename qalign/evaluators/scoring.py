"""Per-question scores, their summary, the files `qalign eval` writes and the table it prints."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qalign.evaluators.metrics import extract_answer, score_all
from qalign.evaluators.predictions import GoldRecord, Prediction, load_aligned
from qalign.io import atomic_write_json, atomic_write_jsonl
from qalign.text import answer_words

METRICS = ("subem", "em", "f1")
METRIC_LABELS = {"subem": "SubEM", "em": "EM", "f1": "F1"}
SUMMARY_FILE = "summary.json"
SCORES_FILE = "scores.jsonl"


def score_pairs(pairs: Iterable[tuple[GoldRecord, Prediction]]) -> list[dict[str, Any]]:
    """One row per question: id, question, prediction (the extracted answer, "" for none), answers, subem, em, f1,
    no_answer (no answer could be extracted), words (the answer's normalised words)."""
    rows = []
    for gold, pred in pairs:
        answer = extract_answer(pred.text)
        rows.append(
            {
                "id": gold.id,
                "question": gold.question,
                "prediction": answer or "",
                "answers": list(gold.answers),
                **score_all(pred.text, gold.answers),
                "no_answer": answer is None,
                "words": answer_words(answer),
            }
        )
    return rows


def answer_stats(rows: list[dict[str, Any]]) -> tuple[int, float]:
    """(predictions with no extractable answer, mean answer length in normalised words over all predictions; no
    answer counts 0 words). Rows written before these fields existed are measured from their `prediction`."""
    missing = words = 0
    for row in rows:
        answer = extract_answer(str(row.get("prediction") or ""))
        missing += bool(row["no_answer"]) if "no_answer" in row else answer is None
        words += int(row["words"]) if isinstance(row.get("words"), int) else answer_words(answer)
    return missing, words / len(rows) if rows else 0.0


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each metric over the rows, as fractions 0..1, the count of predictions with no answer and the mean
    answer length: `{"n", "subem", "em", "f1", "no_answer", "answer_words"}`."""
    n = len(rows)
    summary: dict[str, Any] = {"n": n}
    for metric in METRICS:
        summary[metric] = sum(float(row[metric]) for row in rows) / n if n else 0.0
    summary["no_answer"], summary["answer_words"] = answer_stats(rows)
    return summary


def write_results(output_dir: str | os.PathLike, rows: list[dict[str, Any]], summary: dict[str, Any]) -> list[Path]:
    """Write DIR/scores.jsonl then DIR/summary.json (each atomically); return both paths."""
    output_dir = Path(output_dir)
    scores_path, summary_path = output_dir / SCORES_FILE, output_dir / SUMMARY_FILE
    # scores first: a summary.json on disk then always has its per-question rows beside it (for bootstrap CIs).
    atomic_write_jsonl(scores_path, rows)
    atomic_write_json(summary_path, summary)
    return [summary_path, scores_path]


def format_summary(summary: dict[str, Any], title: str = "") -> str:
    """A small aligned text table of one summary, scores in percent."""
    lines = [title] if title else []
    lines.append(f"{'metric':<8}{'score':>8}")
    for metric in METRICS:
        lines.append(f"{METRIC_LABELS[metric]:<8}{100 * summary[metric]:>8.1f}")
    lines.append(f"{'n':<8}{summary['n']:>8d}")
    if "no_answer" in summary:
        lines.append(f"{'no answer':<10}{summary['no_answer']:>6d}")
        lines.append(f"{'words':<8}{summary['answer_words']:>8.1f}")
    return "\n".join(lines)


def evaluate(
    predictions_path: str | os.PathLike, gold_path: str | os.PathLike, output_dir: str | os.PathLike | None = None
) -> tuple[dict[str, Any], list[Path]]:
    """Align, score, and write summary.json + scores.jsonl into output_dir (default: the predictions' folder)."""
    pairs = load_aligned(predictions_path, gold_path)
    rows = score_pairs(pairs)
    summary = summarize(rows)
    out = Path(output_dir) if output_dir is not None else Path(predictions_path).parent
    return summary, write_results(out, rows, summary)
