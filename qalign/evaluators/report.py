"""Compare evaluated runs: read each DIR/summary.json and build a markdown table with deltas vs the first run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.evaluators.scoring import METRICS, SCORES_FILE, SUMMARY_FILE
from qalign.io import iter_json_records

_HOW_TO_EVAL = "Run `qalign eval --predictions DIR/generated_predictions.jsonl --gold data/NAME.json` first."


def parse_run(spec: str) -> tuple[str, Path]:
    """`NAME=DIR` → (NAME, DIR); a bare `DIR` is named after its folder."""
    name, sep, directory = spec.partition("=")
    if not sep:
        path = Path(spec)
        return path.resolve().name or spec, path
    if not name or not directory:
        raise QalignError(f"--run {spec!r}: expected NAME=DIR, e.g. --run sft=saves/smollm2/sft/predict.")
    return name, Path(directory)


def load_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check DIR/summary.json."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise QalignError(f"{path}: not found, so this run has not been evaluated. {_HOW_TO_EVAL}")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QalignError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg}). Re-run `qalign eval` to rewrite it."
        ) from None
    except (ValueError, RecursionError, OSError) as exc:  # bad UTF-8, absurd nesting or numbers, unreadable
        raise QalignError(f"{path}: cannot read ({type(exc).__name__}). Re-run `qalign eval` to rewrite it.") from None
    if not isinstance(summary, dict):
        raise QalignError(f"{path}:1: expected a JSON object. Re-run `qalign eval` to rewrite it.")
    for key in ("n", *METRICS):
        value = summary.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise QalignError(f"{path}: `{key}` missing or not a number ({value!r}). Re-run `qalign eval`.")
    return summary


def load_scores(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Per-question rows of DIR/scores.jsonl (id, question, prediction, answers, subem, em, f1)."""
    path = Path(run_dir) / SCORES_FILE
    if not path.is_file():
        raise QalignError(f"{path}: not found. {_HOW_TO_EVAL}")
    return [row for _, row in iter_json_records(path)]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _delta(value: float, base: float) -> str:
    return f"{100 * (value - base):+.1f}"


def length_cells(summary: dict[str, Any]) -> list[str]:
    """The `no answer` and `words` cells of a summary ("—" for a summary written before they were counted)."""
    missing, words = summary.get("no_answer"), summary.get("answer_words")
    return [str(missing) if isinstance(missing, int) else "—",
            f"{words:.1f}" if isinstance(words, (int, float)) else "—"]


def format_report(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown table: method, n, SubEM, EM, F1 (percent), predictions with no answer, mean answer words, ΔSubEM
    and ΔF1 in points vs the first run."""
    if not runs:
        raise QalignError("no runs to compare. Pass at least one --run NAME=DIR.")
    base = runs[0][1]
    lines = [
        "| method | n | SubEM | EM | F1 | no answer | words | ΔSubEM | ΔF1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for index, (name, s) in enumerate(runs):
        deltas = ["—", "—"] if index == 0 else [_delta(s["subem"], base["subem"]), _delta(s["f1"], base["f1"])]
        cells = [name.replace("|", "\\|"), str(s["n"]), _pct(s["subem"]), _pct(s["em"]), _pct(s["f1"]),
                 *length_cells(s), *deltas]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Scores in %; no answer = predictions with no extractable answer (an unclosed <think>, nothing "
                 f"after the answer marker, empty); words = mean normalised words per answer (no answer: 0), so a "
                 f"gain bought with length shows; Δ = percentage points vs `{runs[0][0]}`.")
    sizes = sorted({s["n"] for _, s in runs})
    if len(sizes) > 1:
        lines.append(f"Warning: runs were scored on different numbers of questions ({sizes}); deltas are not paired.")
    return "\n".join(lines) + "\n"


def build_report(specs: list[str]) -> str:
    """Parse `NAME=DIR` specs, read their summaries, return the markdown table."""
    runs: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for spec in specs:
        name, directory = parse_run(spec)
        if name in seen:
            raise QalignError(f"--run {spec!r}: the name {name!r} is used twice; give each run its own NAME.")
        seen.add(name)
        runs.append((name, load_summary(directory)))
    return format_report(runs)
