"""Teacher reasoning -> chain-of-thought SFT data, filtered by the teacher's answer against the gold aliases.

Teacher file (json/jsonl/.gz): one row per teacher output, `{id or question, reasoning, answer}`, or `{id or
question, output}` with `output` = `<think>REASONING</think>ANSWER`, or one row per question with its N outputs,
`{id or question, samples: [{output} or {reasoning, answer}, ...]}` (what `qalign teach` writes, after a settings
line `{"qalign_teacher": ...}` that is skipped here). Rows are joined to the raw QA input by id,
else by normalised question. A row is kept when F1(answer, gold aliases) >= `min_f1`; per question the
highest-F1 row is kept (ties: the first). Output rows are alpaca rows whose `output` is
`<think>\\nREASONING\\n</think>\\n\\nANSWER` (`... The answer is: ANSWER` when the prompt declares the answer marker),
so the evaluator's answer extractor (`qalign.text.extract_answer`) scores the answer. Teacher answers go through the
same extractor: the marker is dropped, and an unclosed `<think>` counts only when the marker follows in it.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.converters.job import ConvertJob
from qalign.converters.prompts import declared_marker, render_prompt
from qalign.converters.registry import ConversionResult
from qalign.errors import QalignError
from qalign.evaluators.metrics import extract_answer, f1_score
from qalign.io import iter_json_records
from qalign.records import question_key
from qalign.text import ANSWER_MARKER, marker_pattern

DEFAULT_MIN_F1 = 0.9
COT_PROMPT = "think_then_answer"
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_MARKER = marker_pattern(ANSWER_MARKER)
_DROP_REASONS = ("unmatched", "no_answer", "no_reasoning", "low_f1", "duplicate")
TEACHER_HEADER = "qalign_teacher"  # the key of the settings line `qalign teach` writes first


@dataclass(frozen=True)
class TeacherRow:
    """One teacher output, split into reasoning and final answer; `where` is `file:line`."""

    key_id: str | None
    question: str | None
    reasoning: str
    answer: str
    where: str


def split_output(output: str) -> tuple[str, str]:
    """`<think>R</think>A` -> (R, extracted A); `<think>R The answer is: A` (unclosed, marker) -> (R, A); an output
    without think block is all answer; no extractable answer -> ""."""
    answer = extract_answer(output) or ""
    match = _THINK.search(output)
    if match:
        return match.group(1).strip(), answer
    if "<think>" in output and answer:  # unclosed, the answer after the marker: the reasoning is what precedes it
        opened = output.rsplit("<think>", 1)[1]
        hits = list(_MARKER.finditer(opened))
        return (opened[:hits[-1].start()].strip() if hits else ""), answer
    return "", answer


def format_cot(reasoning: str, answer: str, marker: str | None = None) -> str:
    """The training target: reasoning inside `<think>`, then the answer (after `marker` when the prompt asks)."""
    head = f"{marker} " if marker else ""
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{head}{answer.strip()}"


def _split_row(obj: dict[str, Any], where: str) -> tuple[str, str]:
    """(reasoning, answer) of one teacher output."""
    if isinstance(obj.get("answer"), str):
        return str(obj.get("reasoning") or ""), obj["answer"]
    if isinstance(obj.get("output"), str):
        return split_output(obj["output"])
    raise QalignError(f"{where}: teacher row needs `answer` (with `reasoning`) or `output` "
                      "(`<think>reasoning</think>answer`). Fix that row.")


def read_teacher(path: str | Path) -> list[TeacherRow]:
    """Parse the teacher file; a row needs `id` or `question`, and `answer` (+ `reasoning`), `output`, or
    `samples` (a list of those)."""
    rows: list[TeacherRow] = []
    for line, obj in iter_json_records(path):
        where = f"{path}:{line}"
        if TEACHER_HEADER in obj:
            continue
        rid, question = obj.get("id"), obj.get("question")
        if rid in (None, "") and not (isinstance(question, str) and question.strip()):
            raise QalignError(f"{where}: teacher row has neither `id` nor `question`; add one so it can be joined.")
        samples = obj["samples"] if isinstance(obj.get("samples"), list) else [obj]
        for sample in samples:
            if not isinstance(sample, dict):
                raise QalignError(f"{where}: `samples` must hold objects {{output}} or {{reasoning, answer}}.")
            reasoning, answer = _split_row(sample, where)
            rows.append(TeacherRow(None if rid in (None, "") else str(rid),
                                   question if isinstance(question, str) else None,
                                   reasoning.strip(), extract_answer(answer) or "", where))
    return rows


def convert_cot(job: ConvertJob, teacher: str | Path, *,
                min_f1: float = DEFAULT_MIN_F1) -> tuple[ConversionResult, Counter]:
    """Join teacher rows to `job.source`, keep those with F1 >= min_f1, write `data/<name>.json` (kind cot).
    The job's prompt is usually `COT_PROMPT` (the CLI's default for this format)."""
    template, records, stats = job.load()
    marker = declared_marker(template)
    by_id = {record.id: record for record in records}
    by_question = {question_key(record.question): record for record in records}
    counts: Counter = Counter()
    best: dict[str, tuple[float, TeacherRow]] = {}
    teacher_rows = read_teacher(teacher)
    counts["drawn"] = len(teacher_rows)
    for row in teacher_rows:
        record = by_id.get(row.key_id) if row.key_id else None
        if record is None and row.question:
            record = by_question.get(question_key(row.question))
        if record is None:
            reason = "unmatched"
        elif not row.answer:
            reason = "no_answer"
        elif not row.reasoning:
            reason = "no_reasoning"
        elif (f1 := f1_score(row.answer, record.answers)) < min_f1:
            reason = "low_f1"
        elif record.id in best and best[record.id][0] >= f1:
            counts["reached"] += 1
            reason = "duplicate"
        else:
            counts["reached"] += 1  # answer F1 >= min_f1 with reasoning: kept, or a duplicate of a kept row
            if record.id in best:
                counts["duplicate"] += 1  # the earlier, lower-F1 row of this question gives way
            best[record.id] = (f1, row)
            continue
        counts[reason] += 1
    rows: list[dict[str, Any]] = [
        {"id": record.id, "question": record.question, "instruction": render_prompt(template, record, job.top_k),
         "input": "", "output": format_cot(best[record.id][1].reasoning, best[record.id][1].answer, marker),
         "teacher_f1": best[record.id][0]}
        for record in records if record.id in best
    ]
    counts["kept"] = len(rows)
    if not rows:
        raise QalignError(f"{teacher}: no teacher row was kept ({cot_summary(counts)}). Check that its ids or "
                          f"questions match {job.source}, or lower --min-f1 (now {min_f1}).")
    entry = job.entry("cot", len(rows), teacher=str(teacher), min_f1=min_f1, drawn=counts["drawn"],
                      reached=counts["reached"], dropped={k: counts[k] for k in _DROP_REASONS})
    return job.write(rows, entry, stats), counts


def cot_summary(counts: Counter) -> str:
    """`of D teacher samples, R reached F1 >= tau; kept K rows (one per question); dropped: N low f1, ...`."""
    dropped = ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in _DROP_REASONS if counts[k])
    return (f"of {counts['drawn']} teacher samples, {counts['reached']} reached the F1 threshold; kept "
            f"{counts['kept']} teacher rows (one per question); dropped: {dropped or 'none'}")


def add_cot_arguments(parser: argparse.ArgumentParser) -> None:
    """`--teacher FILE` and `--min-f1 TAU`; the prompt defaults to think_then_answer here."""
    parser.add_argument("--teacher", required=True, metavar="FILE",
                        help="teacher outputs (json/jsonl/.gz): {id or question, reasoning, answer} or "
                             "{id or question, output: '<think>...</think>answer'}")
    parser.add_argument("--min-f1", type=float, default=DEFAULT_MIN_F1, metavar="TAU",
                        help=f"keep rows whose answer reaches this F1 against the gold aliases (default: "
                             f"{DEFAULT_MIN_F1})")
    parser.set_defaults(prompt=COT_PROMPT)
