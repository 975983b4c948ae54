"""Raw QA records (DPR/FiD, NQ-open, or a Hugging Face dataset) -> clean, de-duplicated `QARecord`s."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from qalign.errors import QalignError
from qalign.io import iter_json_records
from qalign.text import normalize_answer

# "owner/name" (no file extension needed): what a Hugging Face dataset id looks like.
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_MAX_LOCATIONS = 5  # how many skipped-record locations LoadStats keeps for the user


@dataclass
class QARecord:
    """One question with its gold answer aliases and (possibly no) retrieved passages."""

    id: str
    question: str
    answers: list[str]
    ctxs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoadStats:
    """What `load_records` read, kept and dropped (locations are `file:line` strings)."""

    source: str
    read: int = 0
    kept: int = 0
    duplicates: int = 0
    skipped_no_answer: int = 0
    skipped_no_question: int = 0
    skipped_locations: list[str] = field(default_factory=list)

    def _note_skip(self, location: str) -> None:
        if len(self.skipped_locations) < _MAX_LOCATIONS:
            self.skipped_locations.append(location)


def question_key(question: str) -> str:
    """The key under which two questions count as the same (SQuAD normalisation)."""
    return normalize_answer(question)


def stable_id(question: str) -> str:
    """`nq-` + the first 12 hex digits of sha1(normalised question): stable across files and runs."""
    return "nq-" + hashlib.sha1(question_key(question).encode("utf-8")).hexdigest()[:12]


def looks_like_hf_id(source: str) -> bool:
    """True when `source` is not an existing path but has the `owner/name` shape of a Hub dataset id."""
    return not Path(source).exists() and bool(_HF_ID.match(source)) and not source.endswith((".json", ".jsonl", ".gz"))


def _hub_offline() -> bool:
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _unreachable(source: str, why: str) -> QalignError:
    return QalignError(
        f"{source}: the Hugging Face Hub is unreachable ({why}), and no local file has that name. "
        "Download the data where you have network access and pass the local .json/.jsonl(.gz) file to --input."
    )


def _iter_hf(source: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if _hub_offline():
        raise _unreachable(source, "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set")
    import datasets
    import requests
    from datasets.exceptions import DatasetNotFoundError, DatasetsError

    try:
        dataset = datasets.load_dataset(source, split=split)
    except DatasetNotFoundError:
        raise QalignError(
            f"{source}: no such dataset on the Hugging Face Hub (or it is private, or the Hub is unreachable). "
            "Check the id, or pass a local .json/.jsonl(.gz) file to --input."
        ) from None
    except (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout) as exc:
        raise _unreachable(source, type(exc).__name__) from None
    except (DatasetsError, OSError, ValueError) as exc:  # e.g. an unknown split or unreadable data files
        raise QalignError(
            f"{source}: cannot load split '{split}' from the Hugging Face Hub ({exc}). "
            "Check --split and the dataset id, or pass a local .json/.jsonl(.gz) file to --input."
        ) from None
    for index, row in enumerate(dataset, start=1):
        yield f"{source}[{split}]:{index}", dict(row)


def _iter_source(source: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if looks_like_hf_id(source):
        yield from _iter_hf(source, split)
    else:
        for lineno, obj in iter_json_records(source):
            yield f"{source}:{lineno}", obj


def _clean_answers(raw: Any, location: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, (str, int, float)):
        raw = [raw]
    if not isinstance(raw, list):
        raise QalignError(f"{location}: 'answers' must be a list of strings (or one string), got {type(raw).__name__}.")
    answers: list[str] = []
    for alias in raw:
        if isinstance(alias, (int, float)) and not isinstance(alias, bool):
            alias = str(alias)  # e.g. a year written as a number
        if not isinstance(alias, str):
            raise QalignError(f"{location}: answer alias {alias!r} is not a string. Fix the 'answers' list.")
        alias = alias.strip()
        if alias and alias not in answers:
            answers.append(alias)
    return answers


def _clean_ctxs(raw: Any, location: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise QalignError(f"{location}: 'ctxs' must be a list of {{title, text}} objects, got {type(raw).__name__}.")
    ctxs: list[dict[str, Any]] = []
    for ctx in raw:
        if isinstance(ctx, str):  # some dumps store bare passage strings
            ctx = {"title": "", "text": ctx}
        if not isinstance(ctx, dict) or not isinstance(ctx.get("text", ""), str):
            raise QalignError(f"{location}: each item of 'ctxs' must be an object with a string 'text'. Fix it.")
        ctxs.append({**ctx, "title": str(ctx.get("title") or ""), "text": ctx.get("text") or ""})
    return ctxs


def _parse(obj: dict[str, Any], location: str) -> tuple[str, list[str], list[dict[str, Any]]]:
    question = obj.get("question")
    if question is not None and not isinstance(question, str):
        raise QalignError(f"{location}: 'question' must be a string, got {type(question).__name__}.")
    raw_answers = obj["answers"] if "answers" in obj else obj.get("answer")  # DPR/FiD vs NQ-open
    return (question or "").strip(), _clean_answers(raw_answers, location), _clean_ctxs(obj.get("ctxs"), location)


def load_records(
    source: str,
    strict: bool = False,
    *,
    split: str = "train",
    limit: int | None = None,
) -> tuple[list[QARecord], LoadStats]:
    """Read QA records from a json/jsonl(.gz) file or a Hub dataset id (`owner/name`, split `split`).

    Records without a question or without answers are skipped and counted (a QalignError naming
    `file:line` under `strict`); duplicate questions (after normalisation) keep the first occurrence.
    `limit` stops reading once that many records were kept.
    """
    source = str(source)
    stats = LoadStats(source=source)
    records: list[QARecord] = []
    # disable=None: a bar on a terminal, silence in logs and tests.
    with tqdm(_iter_source(source, split), desc=f"reading {Path(source).name}", unit=" rec", disable=None) as rows:
        _collect(rows, records, stats, strict, limit)
    return records, stats


def _collect(rows: Any, records: list[QARecord], stats: LoadStats, strict: bool, limit: int | None) -> None:
    seen: set[str] = set()
    for location, obj in rows:
        if limit is not None and stats.kept >= limit:
            break
        stats.read += 1
        question, answers, ctxs = _parse(obj, location)
        if not question or not answers:
            what = "question" if not question else "answers"
            if strict:
                raise QalignError(
                    f"{location}: record has no {what}. Add a non-empty '{what}' field, "
                    "or drop --strict to skip such records."
                )
            if not question:
                stats.skipped_no_question += 1
            else:
                stats.skipped_no_answer += 1
            stats._note_skip(location)
            continue
        key = question_key(question)
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        own_id = obj.get("id")
        record_id = str(own_id) if own_id not in (None, "") else stable_id(question)
        records.append(QARecord(id=record_id, question=question, answers=answers, ctxs=ctxs))
        stats.kept += 1
