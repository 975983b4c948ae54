"""Per-question scores, their summary, the files `qalign eval` writes and the table it prints."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qalign.evaluators.metrics import score_all, strip_think
from qalign.evaluators.predictions import GoldRecord, Prediction, load_aligned
from qalign.io import atomic_write_json, atomic_write_jsonl

METRICS = ("subem", "em", "f1")
METRIC_LABELS = {"subem": "SubEM", "em": "EM", "f1": "F1"}
SUMMARY_FILE = "summary.json"
SCORES_FILE = "scores.jsonl"


def score_pairs(pairs: Iterable[tuple[GoldRecord, Prediction]]) -> list[dict[str, Any]]:
    """One row per question: id, question, prediction (think-stripped), answers, subem, em, f1."""
    rows = []
    for gold, pred in pairs:
        scores = score_all(pred.text, gold.answers)
        rows.append(
            {
                "id": gold.id,
                "question": gold.question,
                "prediction": strip_think(pred.text),
                "answers": list(gold.answers),
                **scores,
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each metric over the rows, as fractions 0..1: `{"n", "subem", "em", "f1"}`."""
    n = len(rows)
    summary: dict[str, Any] = {"n": n}
    for metric in METRICS:
        summary[metric] = sum(float(row[metric]) for row in rows) / n if n else 0.0
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
