"""QA records -> evaluation data: alpaca columns for LLaMA-Factory's predict, plus every gold alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qalign.converters.prompts import load_prompt, prompt_name, render_prompt
from qalign.converters.records import QARecord, load_records
from qalign.converters.registry import EVAL_KIND, ConversionResult, alpaca_entry, validate_name, write_dataset


def build_eval_rows(records: list[QARecord], template: str, top_k: int) -> list[dict[str, Any]]:
    """One row per record; `output` is the first alias (LLaMA-Factory needs one), `answers` holds all for scoring."""
    return [
        {
            "id": record.id,
            "question": record.question,
            "instruction": render_prompt(template, record, top_k),
            "input": "",
            "output": record.answers[0],
            "answers": list(record.answers),
        }
        for record in records
    ]


def convert_eval(
    source: str,
    name: str,
    *,
    dataset_dir: str | Path = ".",
    top_k: int = 5,
    prompt: str = "answer_only",
    limit: int | None = None,
    split: str = "train",
    strict: bool = False,
) -> ConversionResult:
    """Convert `source` to `<dataset_dir>/data/<name>.json` and register it as an eval dataset."""
    validate_name(name)
    template = load_prompt(prompt)
    records, stats = load_records(source, strict, split=split, limit=limit)
    rows = build_eval_rows(records, template, top_k)
    entry = alpaca_entry(EVAL_KIND, source, len(rows), prompt_name(prompt), top_k=top_k)
    return write_dataset(dataset_dir, name, rows, entry, stats)
