"""QA records -> alpaca-format SFT data (`instruction` = rendered prompt, `output` = one short answer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from qalign.converters.prompts import load_prompt, prompt_name, render_prompt
from qalign.converters.records import QARecord, load_records
from qalign.converters.registry import ConversionResult, alpaca_entry, validate_name, write_dataset

AnswerPolicy = Literal["first", "shortest"]
ANSWER_POLICIES = ("first", "shortest")


def pick_answer(answers: list[str], policy: AnswerPolicy = "first") -> str:
    """The training target: the first alias, or the shortest one (ties keep the earlier alias)."""
    if policy == "shortest":
        return min(answers, key=len)
    if policy == "first":
        return answers[0]
    raise ValueError(f"unknown answer policy {policy!r}; use one of {ANSWER_POLICIES}")


def build_alpaca_rows(
    records: list[QARecord], template: str, top_k: int, answer: AnswerPolicy = "first"
) -> list[dict[str, Any]]:
    """One alpaca row per record; `id` and `question` ride along for joins and overlap checks."""
    return [
        {
            "id": record.id,
            "question": record.question,
            "instruction": render_prompt(template, record, top_k),
            "input": "",
            "output": pick_answer(record.answers, answer),
        }
        for record in records
    ]


def convert_alpaca(
    source: str,
    name: str,
    *,
    dataset_dir: str | Path = ".",
    top_k: int = 5,
    prompt: str = "answer_only",
    answer: AnswerPolicy = "first",
    limit: int | None = None,
    split: str = "train",
    strict: bool = False,
) -> ConversionResult:
    """Convert `source` to `<dataset_dir>/data/<name>.json` and register it as an SFT dataset."""
    validate_name(name)
    template = load_prompt(prompt)  # fail on a bad prompt before reading a large input
    records, stats = load_records(source, strict, split=split, limit=limit)
    rows = build_alpaca_rows(records, template, top_k, answer)
    entry = alpaca_entry("sft", source, len(rows), prompt_name(prompt), top_k=top_k, answer=answer)
    return write_dataset(dataset_dir, name, rows, entry, stats)
