"""Load predictions and gold answers, and align them (by id, or by order with every prompt checked)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.evaluators.metrics import normalize_answer
from qalign.io import iter_json_records
from qalign.records import load_records

_PREDICTION_KEYS = ("prediction", "predict")
_MAX_LISTED = 5


@dataclass(frozen=True)
class GoldRecord:
    """One gold question: its id, text and answer aliases; `line` is its line in an eval set (None for raw files)."""

    id: str
    question: str
    answers: list[str]
    line: int | None = None


@dataclass(frozen=True)
class Prediction:
    """One model output; `id` and `prompt` are None when the file does not carry them."""

    text: str
    line: int
    id: str | None = None
    prompt: str | None = None


def _answers(record: dict[str, Any], where: str) -> list[str]:
    value = record.get("answers", record.get("answer"))
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise QalignError(f"{where}: `answers` must be a list of strings, got {value!r}. Fix that record.")
    return value


def _question(record: dict[str, Any], where: str) -> str:
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise QalignError(
            f"{where}: no `question` string (keys: {', '.join(sorted(record)) or 'none'}). Gold files must be a "
            "converted eval set (data/NAME.json) or raw QA records with `question` and `answers`/`answer`."
        )
    return question


def _is_eval_set_row(record: dict[str, Any]) -> bool:
    # Rows written by the converters carry the alpaca columns; raw DPR / NQ-open records do not.
    return "instruction" in record and "output" in record


def _load_eval_set(path: Path) -> list[GoldRecord]:
    gold: list[GoldRecord] = []
    seen_ids: dict[str, int] = {}
    unmatchable: list[str] = []
    for line, record in iter_json_records(path):
        where = f"{path}:{line}"
        question = _question(record, where)
        answers = _answers(record, where)
        if not answers:
            raise QalignError(
                f"{where}: row has no `answers`: this is a training set (alpaca rows keep one target), not gold. "
                "Build the gold file with `qalign convert eval --input RAW --dataset NAME` and pass data/NAME.json."
            )
        if record.get("id") in (None, ""):
            raise QalignError(f"{where}: eval-set row has no `id`. Rebuild it with `qalign convert eval`.")
        if not any(normalize_answer(a) for a in answers):
            unmatchable.append(where)
        rid = str(record["id"])
        if rid in seen_ids:
            raise QalignError(
                f"{where}: id {rid!r} already used at line {seen_ids[rid]}. Ids must be unique; fix the gold file."
            )
        seen_ids[rid] = line
        gold.append(GoldRecord(id=rid, question=question, answers=answers, line=line))
    if unmatchable:
        _note(f"{len(unmatchable)} gold question(s) have only aliases that normalise to nothing (e.g. 'the') and "
              f"can never be matched, e.g. {', '.join(unmatchable[:_MAX_LISTED])}")
    return gold


def _note(text: str) -> None:
    print(f"qalign: note: {text}", file=sys.stderr)


def _load_raw(source: str) -> list[GoldRecord]:
    records, stats = load_records(source)
    dropped = stats.read - stats.kept
    if dropped:
        where = f" (skipped e.g. {', '.join(stats.skipped_locations)})" if stats.skipped_locations else ""
        _note(f"gold {source}: read {stats.read} records, scoring {stats.kept}: {stats.duplicates} duplicate "
              f"questions dropped, {stats.skipped_no_answer} without answers and {stats.skipped_no_question} without "
              f"a question skipped{where}")
    for text in stats.notes():
        _note(f"gold {source}: {text}")
    ids: set[str] = set()
    for record in records:
        if record.id in ids:
            raise QalignError(f"{source}: id {record.id!r} is used twice. Ids must be unique; fix the gold file.")
        ids.add(record.id)
    return [GoldRecord(id=r.id, question=r.question, answers=list(r.answers)) for r in records]


def load_gold(path: str | os.PathLike) -> list[GoldRecord]:
    """Read gold questions from a converted eval set (rows kept as they are) or a raw QA file.

    Raw files are read exactly as the converters read them (`qalign.records.load_records`): records
    without answers are skipped, duplicate normalized questions keep the first, a missing id becomes
    `nq-` + sha1(normalized question)[:12].
    """
    path = Path(path)
    first = next(iter_json_records(path), None) if path.exists() else None
    gold = _load_eval_set(path) if first and _is_eval_set_row(first[1]) else _load_raw(str(path))
    if not gold:
        raise QalignError(f"{path}: no gold questions with answers found. Is this the right file?")
    return gold


def load_predictions(path: str | os.PathLike) -> list[Prediction]:
    """Read `generated_predictions.jsonl` (prompt/predict/label) or a jsonl of `{id, prediction}` rows."""
    path = Path(path)
    predictions: list[Prediction] = []
    with_id: int | None = None
    without_id: int | None = None
    seen_ids: dict[str, int] = {}
    nulls: list[str] = []
    for line, record in iter_json_records(path):
        where = f"{path}:{line}"
        key = next((k for k in _PREDICTION_KEYS if k in record), None)
        if key is None:
            raise QalignError(
                f"{where}: no `prediction` or `predict` field (keys: {', '.join(sorted(record)) or 'none'}). "
                'Pass LLaMA-Factory\'s generated_predictions.jsonl or a jsonl of {"id", "prediction"} rows.'
            )
        text = record[key]
        if text is None:
            nulls.append(where)
            text = ""
        if not isinstance(text, str):
            raise QalignError(f"{where}: `{key}` must be a string, got {type(text).__name__}.")
        rid = record.get("id")
        if rid in (None, ""):
            without_id = without_id or line
            rid = None
        else:
            rid = str(rid)
            with_id = with_id or line
            if rid in seen_ids:
                raise QalignError(f"{where}: id {rid!r} already predicted at line {seen_ids[rid]}; keep one of them.")
            seen_ids[rid] = line
        if with_id and without_id:
            raise QalignError(
                f"{path}:{max(with_id, without_id)}: some predictions have an `id` (line {with_id}) and some do not "
                f"(line {without_id}). Give every row an id, or none (then rows are matched by order)."
            )
        prompt = record.get("prompt")
        predictions.append(Prediction(text=text, line=line, id=rid, prompt=prompt if isinstance(prompt, str) else None))
    if not predictions:
        raise QalignError(f"{path}: no predictions found. Did `predict` finish?")
    if nulls:
        _note(f"{len(nulls)} prediction(s) are null and score as empty answers, e.g. {', '.join(nulls[:_MAX_LISTED])}")
    return predictions


def _listing(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    return shown + (f", … ({len(ids) - _MAX_LISTED} more)" if len(ids) > _MAX_LISTED else "")


def _align_by_id(
    predictions: list[Prediction], gold: list[GoldRecord], pred_path: Path, gold_path: Path
) -> list[tuple[GoldRecord, Prediction]]:
    by_id = {p.id: p for p in predictions}
    gold_ids = {g.id for g in gold}
    missing = [g.id for g in gold if g.id not in by_id]
    unknown = [p.id for p in predictions if p.id not in gold_ids]
    if missing or unknown:
        problems = []
        if unknown:
            first = by_id[unknown[0]].line
            problems.append(
                f"{len(unknown)} of {len(predictions)} prediction ids are not in the gold file "
                f"(first at {pred_path}:{first}): {_listing(unknown)}"
            )
        if missing:
            problems.append(f"{len(missing)} of {len(gold)} gold ids have no prediction: {_listing(missing)}")
        raise QalignError(
            f"{pred_path}: predictions do not match gold {gold_path}: " + "; ".join(problems) + ". "
            "Pass the gold file the predictions were made from, and predict every question of it."
        )
    return [(g, by_id[g.id]) for g in gold]


def _collapse(text: str) -> str:
    return " ".join(text.split())


def prompt_contains(prompt: str, question: str) -> bool:
    """Whether `prompt` holds `question`, comparing with whitespace collapsed."""
    if _collapse(question) in _collapse(prompt):
        return True
    # Tokenizers that clean up spaces on decode turn "x ?" into "x?"; ignore whitespace entirely as a fallback.
    return "".join(question.split()) in "".join(prompt.split())


def _align_by_order(
    predictions: list[Prediction], gold: list[GoldRecord], pred_path: Path, gold_path: Path
) -> list[tuple[GoldRecord, Prediction]]:
    if len(predictions) != len(gold):
        raise QalignError(
            f"{pred_path}: {len(predictions)} predictions but {gold_path} has {len(gold)} gold questions, and the "
            "predictions have no ids to join on. Likely cause: predict ran with max_samples (or on another "
            "dataset); re-run predict on the whole eval set, or pass the eval set it ran on."
        )
    for index, (g, p) in enumerate(zip(gold, predictions, strict=True), start=1):
        if p.prompt is None:
            raise QalignError(
                f"{pred_path}:{p.line}: prediction has neither `id` nor `prompt`, so its question cannot be checked. "
                "Add an `id` field to every prediction (or use LLaMA-Factory's generated_predictions.jsonl)."
            )
        if not prompt_contains(p.prompt, g.question):
            where = f"{gold_path}:{g.line}" if g.line else f"{gold_path}, id {g.id}"
            raise QalignError(
                f"{pred_path}:{p.line}: prompt does not contain the question of gold record {index} "
                f"({where}): {g.question!r}. The predictions are not in this gold file's order: pass "
                "the eval set that predict ran on (same file, unshuffled), or give the predictions ids. "
                "If the prompt was truncated, raise cutoff_len and predict again."
            )
    return list(zip(gold, predictions, strict=True))


def align(
    predictions: list[Prediction],
    gold: list[GoldRecord],
    pred_path: str | os.PathLike = "predictions",
    gold_path: str | os.PathLike = "gold",
) -> list[tuple[GoldRecord, Prediction]]:
    """Pair each gold record with its prediction, in gold order; raise QalignError when they do not match."""
    pred_path, gold_path = Path(pred_path), Path(gold_path)
    if predictions and predictions[0].id is not None:
        return _align_by_id(predictions, gold, pred_path, gold_path)
    return _align_by_order(predictions, gold, pred_path, gold_path)


def load_aligned(
    predictions_path: str | os.PathLike, gold_path: str | os.PathLike
) -> list[tuple[GoldRecord, Prediction]]:
    """Load both files and align them."""
    return align(load_predictions(predictions_path), load_gold(gold_path), predictions_path, gold_path)
