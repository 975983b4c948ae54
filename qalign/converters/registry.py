"""`dataset_info.json` (LLaMA-Factory's dataset registry): writing converted datasets, registering them, and
warning when training and evaluation datasets share questions.

Each entry qalign writes carries a `qalign` block (kind, source, rows, prompt); LLaMA-Factory ignores keys it
does not know (`DatasetAttr.join` in llamafactory/data/parser.py reads only its own), so the block is safe.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from qalign.errors import QalignError
from qalign.io import atomic_write_json, atomic_write_text, iter_json_records
from qalign.records import LoadStats, question_key

DATASET_INFO = "dataset_info.json"
EVAL_KIND = "eval"  # every other kind (sft, preference, kto, grpo, cot) is a training kind
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_SHOWN = 10  # overlapping questions listed in the warning


@dataclass
class ConversionResult:
    """What a converter wrote: the file, its row count, the load statistics and any train/eval overlap."""

    name: str
    path: Path
    rows: int
    stats: LoadStats
    overlaps: dict[str, list[str]] = field(default_factory=dict)


def validate_name(name: str) -> str:
    """Dataset names become file names and YAML values: letters, digits, `.`, `_`, `-` only."""
    if not _NAME.match(name):
        raise QalignError(
            f"invalid dataset name '{name}': use letters, digits, '.', '_' or '-' (e.g. nq-top5-train)."
        )
    return name


def read_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    """The registry as a dict ({} when the file does not exist yet)."""
    path = Path(dataset_dir) / DATASET_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QalignError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg}). Fix that line, or move the file away to start afresh."
        ) from None
    except UnicodeDecodeError:
        raise QalignError(f"{path}: not valid UTF-8. Re-encode it as UTF-8.") from None
    if not isinstance(info, dict):
        raise QalignError(f"{path}:1: expected a JSON object of dataset entries, got {type(info).__name__}.")
    return info


def register_dataset(dataset_dir: str | Path, name: str, file_name: str, entry: dict[str, Any]) -> Path:
    """Add or replace `name` in `<dataset_dir>/dataset_info.json` (created if missing; other entries kept)."""
    validate_name(name)
    info = read_dataset_info(dataset_dir)
    info[name] = {**entry, "file_name": file_name}
    path = Path(dataset_dir) / DATASET_INFO
    # Sorted keys keep the file diff-friendly when several converters add entries.
    atomic_write_text(path, json.dumps(info, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    return path


def alpaca_entry(kind: str, source: str, rows: int, prompt: str, **extra: Any) -> dict[str, Any]:
    """An alpaca-format registry entry (without file_name) with qalign's provenance block."""
    return {"columns": dict(ALPACA_COLUMNS), "qalign": {"kind": kind, "source": source, "rows": rows,
                                                       "prompt": prompt, **extra}}


def _is_eval(kind: str | None) -> bool:
    return kind == EVAL_KIND


def overlapping_questions(
    dataset_dir: str | Path, questions: list[str], kind: str, exclude: str | None = None
) -> dict[str, list[str]]:
    """Normalised questions shared with registered qalign datasets of the other side (training vs eval).

    Returns {dataset name: sorted overlapping normalised questions}; datasets whose file cannot be read are
    skipped (this only feeds a warning).
    """
    wanted = {question_key(q) for q in questions}
    overlaps: dict[str, list[str]] = {}
    for other, entry in sorted(read_dataset_info(dataset_dir).items()):
        meta = entry.get("qalign") if isinstance(entry, dict) else None
        if other == exclude or not isinstance(meta, dict) or _is_eval(meta.get("kind")) == _is_eval(kind):
            continue
        try:
            theirs = {question_key(row["question"]) for _, row in
                      iter_json_records(Path(dataset_dir) / entry["file_name"]) if isinstance(row.get("question"), str)}
        except (QalignError, KeyError, TypeError):
            continue
        shared = sorted(wanted & theirs)
        if shared:
            overlaps[other] = shared
    return overlaps


def warn_overlaps(name: str, kind: str, overlaps: dict[str, list[str]], stream: TextIO | None = None) -> None:
    """Print a warning per overlapping dataset: the count and up to 10 of the shared questions."""
    stream = stream or sys.stderr
    for other, shared in overlaps.items():
        other_side = "training" if _is_eval(kind) else "evaluation"
        print(f"qalign: warning: {len(shared)} question(s) of '{name}' ({kind}) also appear in {other_side} "
              f"dataset '{other}'; scores on them measure memorisation, not retrieval QA:", file=stream)
        for question in shared[:_MAX_SHOWN]:
            print(f"  - {question}", file=stream)
        if len(shared) > _MAX_SHOWN:
            print(f"  ... and {len(shared) - _MAX_SHOWN} more", file=stream)


def write_dataset(
    dataset_dir: str | Path, name: str, rows: list[dict[str, Any]], entry: dict[str, Any], stats: LoadStats
) -> ConversionResult:
    """Write rows to `<dataset_dir>/data/<name>.json` (atomic), register it, and warn about train/eval overlap."""
    validate_name(name)
    if not rows:
        raise QalignError(
            f"{stats.source}: no usable records (read {stats.read}, {stats.skipped_no_answer} without answers, "
            f"{stats.skipped_no_question} without a question, {stats.duplicates} duplicates). Check the input format."
        )
    file_name = f"data/{name}.json"
    path = Path(dataset_dir) / file_name
    atomic_write_json(path, rows)
    register_dataset(dataset_dir, name, file_name, entry)
    kind = entry.get("qalign", {}).get("kind", "")
    overlaps = overlapping_questions(dataset_dir, [row["question"] for row in rows], kind, exclude=name)
    warn_overlaps(name, kind, overlaps)
    return ConversionResult(name=name, path=path, rows=len(rows), stats=stats, overlaps=overlaps)
