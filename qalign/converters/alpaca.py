"""QA records -> alpaca-format SFT data (`instruction` = rendered prompt, `output` = one short answer)."""

from __future__ import annotations

from typing import Any, Literal

from qalign.converters.job import ConvertJob
from qalign.converters.prompts import render_prompt
from qalign.converters.registry import ConversionResult
from qalign.records import QARecord

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


def convert_alpaca(job: ConvertJob, *, answer: AnswerPolicy = "first") -> ConversionResult:
    """Convert `job.source` to `<dataset_dir>/data/<name>.json` and register it as an SFT dataset."""
    template, records, stats = job.load()
    rows = build_alpaca_rows(records, template, job.top_k, answer)
    return job.write(rows, job.entry("sft", len(rows), answer=answer), stats)
