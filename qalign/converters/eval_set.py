"""QA records -> evaluation data: alpaca columns for LLaMA-Factory's predict, plus every gold alias; the same rows
are GRPO's training prompts (its rewards score completions against every alias), registered as training data."""

from __future__ import annotations

from typing import Any

from qalign.converters.job import ConvertJob
from qalign.converters.prompts import render_prompt
from qalign.converters.registry import EVAL_KIND, ConversionResult
from qalign.records import QARecord

GRPO_KIND = "grpo"  # GRPO's prompt set: the eval rows, registered as training data


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


def convert_eval(job: ConvertJob) -> ConversionResult:
    """Convert `job.source` to `<dataset_dir>/data/<name>.json` and register it as an eval dataset."""
    template, records, stats = job.load()
    rows = build_eval_rows(records, template, job.top_k)
    return job.write(rows, job.entry(EVAL_KIND, len(rows)), stats)


def convert_grpo(job: ConvertJob) -> ConversionResult:
    """The eval rows as GRPO's prompt set, registered as kind grpo: training data, so the train/eval overlap warning
    compares it with the evaluation sets and not with the other training sets."""
    template, records, stats = job.load()
    rows = build_eval_rows(records, template, job.top_k)
    return job.write(rows, job.entry(GRPO_KIND, len(rows)), stats)
