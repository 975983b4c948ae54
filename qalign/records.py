"""Raw QA records (DPR/FiD, NQ-open, or a Hugging Face dataset) -> clean, de-duplicated `QARecord`s."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from qalign.errors import QalignError
from qalign.hub import in_hub_cache, missing_path_error, offline_reason
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
    bad_aliases: int = 0  # NaN / Infinity answers, dropped
    empty_aliases: int = 0  # aliases that normalise to nothing ("the", "A"): kept, but SubEM/EM never match them
    empty_passages: int = 0  # ctxs without text (missing or null)
    conflicting_duplicates: int = 0  # duplicate questions whose aliases differ from the kept record's
    notice_locations: dict[str, list[str]] = field(default_factory=dict)

    def _note_skip(self, location: str) -> None:
        if len(self.skipped_locations) < _MAX_LOCATIONS:
            self.skipped_locations.append(location)

    def _note(self, what: str, location: str, count: int = 1) -> None:
        setattr(self, what, getattr(self, what) + count)
        shown = self.notice_locations.setdefault(what, [])
        if len(shown) < _MAX_LOCATIONS and location not in shown:
            shown.append(location)

    def notes(self) -> list[str]:
        """One line per kind of record content that was changed or dropped while reading, with where."""
        texts = {
            "bad_aliases": "NaN/Infinity answer alias(es) dropped (not answers; quote real values as strings)",
            "empty_aliases": "answer alias(es) normalise to nothing (e.g. 'the', 'A'): SubEM/EM can never match them",
            "empty_passages": "passage(s) without text, kept as empty passages",
            "conflicting_duplicates": "duplicate question(s) with other aliases than the first occurrence (the "
                                      "first is kept; merge the aliases into it if they are all correct)",
        }
        return [f"{getattr(self, what)} {text}, e.g. {', '.join(self.notice_locations.get(what, []))}"
                for what, text in texts.items() if getattr(self, what)]


def question_key(question: str) -> str:
    """The key under which two questions count as the same (SQuAD normalisation)."""
    return normalize_answer(question)


def stable_id(question: str) -> str:
    """`nq-` + the first 12 hex digits of sha1(normalised question): stable across files and runs."""
    return "nq-" + hashlib.sha1(question_key(question).encode("utf-8")).hexdigest()[:12]


def looks_like_hf_id(source: str) -> bool:
    """True when `source` is not an existing path but has the `owner/name` shape of a Hub dataset id.

    `data/nq-dev` where a local folder `data/` exists is a mistyped path, not a Hub id (no 30 s of offline retries).
    """
    path = Path(source)
    if path.exists() or not _HF_ID.match(source) or source.endswith((".json", ".jsonl", ".gz")):
        return False
    return not path.parent.is_dir()


def _unreachable(source: str, why: str) -> QalignError:
    return QalignError(
        f"{source}: the Hugging Face Hub is unreachable ({why}), and no local file has that name. "
        "Download the data where you have network access and pass the local .json/.jsonl(.gz) file to --input."
    )


def _iter_hf(source: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    reason = offline_reason("dataset")  # offline, a mistyped path fails here at once, not after ~25 s of Hub retries
    if reason is not None and not in_hub_cache(source, "dataset"):
        raise missing_path_error("--input", source, reason, "fix the path, or pass a local .json/.jsonl(.gz) file "
                                 "(download Hub data where you have network access)")
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


def _clean_answers(raw: Any, location: str, stats: LoadStats, strict: bool) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, (str, int, float)):
        raw = [raw]
    if not isinstance(raw, list):
        raise QalignError(f"{location}: 'answers' must be a list of strings (or one string), got {type(raw).__name__}.")
    answers: list[str] = []
    for alias in raw:
        if isinstance(alias, float) and not math.isfinite(alias):
            if strict:
                raise QalignError(f"{location}: answer alias {alias} (JSON NaN/Infinity) is not an answer. Quote it "
                                  "if it is one, or delete it; without --strict it is dropped and counted.")
            stats._note("bad_aliases", location)
            continue
        if isinstance(alias, (int, float)) and not isinstance(alias, bool):
            alias = str(alias)  # e.g. a year written as a number
        if not isinstance(alias, str):
            raise QalignError(f"{location}: answer alias {alias!r} is not a string. Fix the 'answers' list.")
        alias = alias.strip()
        if alias and alias not in answers:
            answers.append(alias)
            if not normalize_answer(alias):
                stats._note("empty_aliases", location)
    return answers


def _clean_ctxs(raw: Any, location: str, stats: LoadStats) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise QalignError(f"{location}: 'ctxs' must be a list of {{title, text}} objects, got {type(raw).__name__}.")
    ctxs: list[dict[str, Any]] = []
    for ctx in raw:
        if isinstance(ctx, str):  # some dumps store bare passage strings
            ctx = {"title": "", "text": ctx}
        if not isinstance(ctx, dict) or not isinstance(ctx.get("text") or "", str):
            raise QalignError(f"{location}: each item of 'ctxs' must be an object with a string 'text'. Fix it.")
        if not ctx.get("text"):
            stats._note("empty_passages", location)
        ctxs.append({**ctx, "title": str(ctx.get("title") or ""), "text": ctx.get("text") or ""})
    return ctxs


def _parse(obj: dict[str, Any], location: str, stats: LoadStats,
           strict: bool) -> tuple[str, list[str], list[dict[str, Any]]]:
    question = obj.get("question")
    if question is not None and not isinstance(question, str):
        raise QalignError(f"{location}: 'question' must be a string, got {type(question).__name__}.")
    question = (question or "").strip()
    if question and not question_key(question):
        question = ""  # punctuation only: nothing to ask (and every such question would share one id)
    # DPR/FiD `answers` vs NQ-open `answer`; an explicit `answers: null` falls back to `answer`
    raw_answers = obj["answers"] if obj.get("answers") is not None else obj.get("answer")
    return question, _clean_answers(raw_answers, location, stats, strict), _clean_ctxs(obj.get("ctxs"), location, stats)


def load_records(
    source: str,
    strict: bool = False,
    *,
    split: str = "train",
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[QARecord], LoadStats]:
    """Read QA records from a json/jsonl(.gz) file or a Hub dataset id (`owner/name`, split `split`).

    Records without a question or without answers are skipped and counted (a QalignError naming
    `file:line` under `strict`); duplicate questions (after normalisation) keep the first occurrence.
    `limit` stops reading once that many records were kept. `offset` drops the first `offset` records that would
    be kept (their questions still count as seen, so a later duplicate of one is dropped too): `--offset N
    --limit M` is the M questions after the first N, none of them among those N.
    """
    source = str(source)
    stats = LoadStats(source=source)
    records: list[QARecord] = []
    # disable=None: a bar on a terminal, silence in logs and tests.
    with tqdm(_iter_source(source, split), desc=f"reading {Path(source).name}", unit=" rec", disable=None) as rows:
        _collect(rows, records, stats, strict, limit, offset)
    return records, stats


def _collect(rows: Any, records: list[QARecord], stats: LoadStats, strict: bool, limit: int | None,
             offset: int = 0) -> None:
    seen: dict[str, QARecord] = {}
    skipped = 0
    explicit_ids: dict[str, str] = {}
    for location, obj in rows:
        if limit is not None and stats.kept >= limit:
            break
        stats.read += 1
        question, answers, ctxs = _parse(obj, location, stats, strict)
        if not question or not answers:
            what = "question" if not question else "answers"
            if strict:
                raise QalignError(
                    f"{location}: record has no {what} (or only punctuation / aliases that normalise to nothing). "
                    f"Add a non-empty '{what}' field, or drop --strict to skip such records."
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
            if set(answers) != set(seen[key].answers):
                stats._note("conflicting_duplicates", location)
            continue
        own_id = obj.get("id")
        if own_id not in (None, ""):
            record_id = str(own_id)
            if record_id in explicit_ids:
                raise QalignError(
                    f"{location}: id {record_id!r} was already used at {explicit_ids[record_id]} by another "
                    "question. An id names one question in the converted set (a training row; in an eval set, the row "
                    "its prediction joins to): make one of them unique, or delete both ids to get ids made from the "
                    "questions."
                )
            explicit_ids[record_id] = location
        else:
            record_id = stable_id(question)
        seen[key] = record = QARecord(id=record_id, question=question, answers=answers, ctxs=ctxs)
        if skipped < offset:  # before the offset: seen, not kept
            skipped += 1
            continue
        records.append(record)
        stats.kept += 1
