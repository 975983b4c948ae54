"""Train/eval question overlap: which normalised questions a new dataset shares with registered datasets of the
other side (training vs evaluation).

Each dataset qalign writes gets a sidecar `<file>.qkeys`: a header line with the data file's size and mtime, then
one short hash per normalised question. The overlap check reads those (milliseconds) instead of parsing every
registered dataset; a missing or stale sidecar (the data file changed) falls back to reading the data file once,
and the sidecar is rewritten for the next run.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from qalign.errors import QalignError
from qalign.io import atomic_write_text, iter_json_records
from qalign.records import question_key

EVAL_KIND = "eval"  # every other kind (sft, preference, kto, grpo, cot) is a training kind
SIDECAR_SUFFIX = ".qkeys"
_VERSION = 1
_MAX_SHOWN = 10  # overlapping questions listed in the warning


def is_eval(kind: str | None) -> bool:
    return kind == EVAL_KIND


def key_hash(normalised: str) -> str:
    """16 hex digits of sha1(normalised question): what a sidecar stores per question."""
    return hashlib.sha1(normalised.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def sidecar_path(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + SIDECAR_SUFFIX)


def _stamp(data_file: Path) -> dict[str, int]:
    stat = data_file.stat()
    return {"version": _VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_sidecar(data_file: Path, questions: Iterable[str]) -> Path:
    """Write `<data_file>.qkeys` for the questions now in `data_file` (call right after writing it)."""
    hashes = sorted({key_hash(question_key(q)) for q in questions})
    path = sidecar_path(data_file)
    atomic_write_text(path, json.dumps(_stamp(data_file)) + "\n" + "".join(h + "\n" for h in hashes))
    return path


def _read_sidecar(data_file: Path) -> set[str] | None:
    path = sidecar_path(data_file)
    try:
        header, _, body = path.read_text(encoding="utf-8").partition("\n")
        if json.loads(header) != _stamp(data_file):
            return None
    except (OSError, ValueError):
        return None
    return set(body.split())


def dataset_key_hashes(data_file: Path) -> set[str] | None:
    """Hashes of the normalised questions of a registered dataset; None when its file cannot be read."""
    cached = _read_sidecar(data_file)
    if cached is not None:
        return cached
    try:
        questions = [row["question"] for _, row in iter_json_records(data_file)
                     if isinstance(row.get("question"), str)]
    except (QalignError, OSError):
        return None
    try:
        write_sidecar(data_file, questions)
    except (QalignError, OSError):
        pass  # the cache is an optimisation; a read-only folder just pays the read next time
    return {key_hash(question_key(q)) for q in questions}


def find_overlaps(
    dataset_dir: str | Path, info: dict[str, Any], questions: list[str], kind: str, exclude: str | None = None
) -> dict[str, list[str]]:
    """{dataset name: sorted shared normalised questions} over registered qalign datasets of the other side."""
    wanted: dict[str, str] = {}
    for question in questions:
        normalised = question_key(question)
        wanted.setdefault(key_hash(normalised), normalised)
    overlaps: dict[str, list[str]] = {}
    for other, entry in sorted(info.items()):
        meta = entry.get("qalign") if isinstance(entry, dict) else None
        if other == exclude or not isinstance(meta, dict) or is_eval(meta.get("kind")) == is_eval(kind):
            continue
        file_name = entry.get("file_name")
        if not isinstance(file_name, str):
            continue
        theirs = dataset_key_hashes(Path(dataset_dir) / file_name)
        shared = sorted(wanted[h] for h in wanted.keys() & (theirs or set()))
        if shared:
            overlaps[other] = shared
    return overlaps


def warn_overlaps(name: str, kind: str, overlaps: dict[str, list[str]], stream: TextIO | None = None) -> None:
    """Print a warning per overlapping dataset: the count and up to 10 of the shared questions."""
    stream = stream or sys.stderr
    for other, shared in overlaps.items():
        other_side = "training" if is_eval(kind) else "evaluation"
        print(f"qalign: warning: {len(shared)} question(s) of '{name}' ({kind}) also appear in {other_side} "
              f"dataset '{other}'; scores on them measure memorisation, not retrieval QA:", file=stream)
        for question in shared[:_MAX_SHOWN]:
            print(f"  - {question}", file=stream)
        if len(shared) > _MAX_SHOWN:
            print(f"  ... and {len(shared) - _MAX_SHOWN} more", file=stream)
