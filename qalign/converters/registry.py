"""`dataset_info.json` (LLaMA-Factory's dataset registry): writing converted datasets and registering them.

Each entry qalign writes carries a `qalign` block (kind, source, rows, prompt, and `sha256`/`bytes` of the data file
it wrote); LLaMA-Factory ignores keys it does not know (`DatasetAttr.join` in llamafactory/data/parser.py reads only
its own), so the block is safe. That hash is how qalign knows it wrote a file: replacing a data file that no qalign
entry describes (a hand-made `data/mine.json`, LLaMA-Factory's `data/identity.json`) needs `force`, and a study's
data step is done only when its entry describes the file on disk (`describes_file`).

The entry is registered before its data file is renamed into place, and records the hash of the file it replaces
(`replaces_sha256`): a kill between the two leaves an entry that does not describe the file (the step reruns) and a
file qalign still recognises as its own (the rerun may replace it).

The read-modify-write of the registry holds a file lock (`.dataset_info.json.lock` beside it), so concurrent
converts never lose each other's entries; the data file is written inside the lock, after the registry was read and
the replacement checked. Replacing an entry qalign did not write, or one of another kind, needs `force`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qalign.converters.overlap import EVAL_KIND, find_overlaps, warn_overlaps, write_sidecar
from qalign.converters.ownership import check_file_is_ours, entry_meta, file_sha256
from qalign.errors import QalignError
from qalign.io import atomic_target, atomic_write_text
from qalign.paths import DATA_FOLDER, DATASET_INFO, dataset_file, dataset_file_name
from qalign.records import LoadStats

__all__ = ["EVAL_KIND", "DATASET_INFO", "ConversionResult", "check_target", "describes_file", "file_sha256",
           "overlapping_questions", "read_dataset_info", "register_dataset", "registry_lock", "validate_name",
           "warn_overlaps", "write_dataset"]

LOCK_FILE = ".dataset_info.json.lock"
LOCK_TIMEOUT_S = 600.0
MAX_NAME = 200  # file names are NAME + suffixes such as ".samples.jsonl" and temp parts; most filesystems cap at 255
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ConversionResult:
    """What a converter wrote: the file, its row count, the load statistics and any train/eval overlap."""

    name: str
    path: Path
    rows: int
    stats: LoadStats
    overlaps: dict[str, list[str]] = field(default_factory=dict)


def validate_name(name: str) -> str:
    """Dataset names become file names and YAML values: letters, digits, `.`, `_`, `-` only, at most 200 long."""
    if not _NAME.match(name):
        raise QalignError(
            f"invalid dataset name '{name}': use letters, digits, '.', '_' or '-' (e.g. nq-top5-train)."
        )
    if len(name) > MAX_NAME:
        raise QalignError(f"dataset name '{name[:40]}...' is {len(name)} characters long; use at most {MAX_NAME} "
                          "(it becomes a file name).")
    return name


def read_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    """The registry as a dict ({} when the file does not exist yet)."""
    path = Path(dataset_dir) / DATASET_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise QalignError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg}, column {exc.colno}). Fix that line, or move the file "
            "away to start afresh."
        ) from None
    except UnicodeDecodeError:
        raise QalignError(f"{path}: not valid UTF-8. Re-encode it as UTF-8.") from None
    except (RecursionError, ValueError) as exc:
        raise QalignError(f"{path}: cannot parse ({type(exc).__name__}). Restore it from version control.") from None
    except OSError as exc:
        raise QalignError(f"{path}: cannot read ({exc.strerror or exc}). Check that it is a readable file.") from None
    if not isinstance(info, dict):
        raise QalignError(f"{path}:1: expected a JSON object of dataset entries, got {type(info).__name__}.")
    return info


@contextlib.contextmanager
def registry_lock(dataset_dir: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `<dataset_dir>/.dataset_info.json.lock` (an OS file lock, released if the process dies)."""
    from filelock import FileLock, Timeout

    path = Path(dataset_dir) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=timeout)
        lock.acquire()
    except Timeout:
        raise QalignError(f"{path}: another qalign process has held the registry lock for {timeout:.0f} s. Wait for "
                          "it to finish, or stop it (the lock is released when that process ends).") from None
    except OSError as exc:
        raise QalignError(f"{path}: cannot create the registry lock ({exc.strerror or exc}). Pass a writable "
                          "--dataset-dir.") from None
    try:
        yield
    finally:
        lock.release()


def _entry_file(dataset_dir: Path, entry: Any) -> Path | None:
    file_name = entry.get("file_name") if isinstance(entry, dict) else None
    return (dataset_dir / file_name).resolve() if isinstance(file_name, str) else None


def _grpo_set_of_old(meta: dict[str, Any], kind: str | None, source: str | None) -> bool:
    """An entry that is GRPO's prompt set as qalign wrote it before `convert grpo` (kind eval), converted again from
    the same input: re-registering it as kind grpo replaces nothing but the kind (a study's `data grpo` step)."""
    return meta.get("kind") == EVAL_KIND and kind == "grpo" and source is not None and meta.get("source") == source


def check_replace(dataset_dir: str | Path, info: dict[str, Any], name: str, kind: str | None, force: bool,
                  source: str | None = None) -> None:
    """Refuse (unless `force`) to replace an entry qalign did not write, one of another kind, or another's file."""
    if force:
        return
    dataset_dir = Path(dataset_dir)
    where = dataset_dir / DATASET_INFO
    existing = info.get(name)
    if existing is not None:
        meta = existing.get("qalign") if isinstance(existing, dict) else None
        if not isinstance(meta, dict):
            shown = existing.get("file_name", "?") if isinstance(existing, dict) else "?"
            raise QalignError(
                f"{where}: dataset '{name}' is already registered and was not written by qalign (file {shown}); "
                "converting would replace it. Pick another --dataset name, or pass --force to replace it."
            )
        if kind is not None and meta.get("kind") != kind and not _grpo_set_of_old(meta, kind, source):
            raise QalignError(
                f"{where}: dataset '{name}' has kind {meta.get('kind')}; writing kind {kind} under that name would "
                "replace it. Pick another --dataset name, or pass --force to replace it."
            )
    target = dataset_file(name, dataset_dir).resolve()
    for other, entry in info.items():
        if other != name and _entry_file(dataset_dir, entry) == target:
            raise QalignError(
                f"{where}: data/{name}.json is the file of dataset '{other}'; converting '{name}' would overwrite "
                "it. Pick another --dataset name, or pass --force."
            )
    check_file_is_ours(dataset_dir, existing, name, _entry_file(dataset_dir, existing))
    theirs = dataset_dir / DATA_FOLDER / DATASET_INFO
    if not where.exists() and theirs.is_file():
        raise QalignError(
            f"{theirs}: LLaMA-Factory's dataset registry is here (its default dataset_dir is {DATA_FOLDER}/); "
            f"converting would start a second registry, {where}, that it does not read. Pass --dataset-dir "
            f"{dataset_dir / DATA_FOLDER} to register there, or --force to start {where} anyway."
        )


def describes_file(dataset_dir: str | Path, name: str, kind: str | None = None) -> bool:
    """True when `name`'s registry entry is qalign's and describes exactly data/<name>.json on disk: its file
    name, kind, columns, byte count and sha256 (the columns and row count were registered with that hash)."""
    dataset_dir = Path(dataset_dir)
    path = dataset_file(name, dataset_dir)
    try:
        entry = read_dataset_info(dataset_dir).get(name)
        size = path.stat().st_size
    except (QalignError, OSError):
        return False
    meta = entry_meta(entry)
    if meta is None or entry.get("file_name") != dataset_file_name(name) or not isinstance(meta.get("sha256"), str):
        return False
    if (kind is not None and meta.get("kind") != kind) or not entry.get("columns") or meta.get("bytes") != size:
        return False
    try:
        return file_sha256(path) == meta["sha256"]
    except OSError:
        return False


def _probe_writable(folder: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise QalignError(f"{existing}: is a file, not a folder. Pass a folder to --dataset-dir (e.g. .).")
    try:
        fd, probe = tempfile.mkstemp(prefix=".qalign-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise QalignError(f"{existing}: cannot write there ({exc.strerror or exc}). Pass a writable --dataset-dir, "
                          "or fix the folder's permissions.") from None


def check_target(dataset_dir: str | Path, name: str, kind: str | None = None, force: bool = False,
                 source: str | None = None) -> None:
    """Before any input is read: the name is valid, the folder writable, the registry readable, the name free."""
    validate_name(name)
    dataset_dir = Path(dataset_dir)
    if dataset_dir.exists() and not dataset_dir.is_dir():
        raise QalignError(f"{dataset_dir}: --dataset-dir is a file, not a folder. Pass the folder that holds (or "
                          f"will hold) {DATASET_INFO}.")
    _probe_writable(dataset_dir / "data")
    check_replace(dataset_dir, read_dataset_info(dataset_dir), name, kind, force, source)


def _write_info(dataset_dir: str | Path, info: dict[str, Any]) -> Path:
    path = Path(dataset_dir) / DATASET_INFO
    # Sorted keys keep the file diff-friendly when several converters add entries.
    atomic_write_text(path, json.dumps(info, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    return path


def register_dataset(dataset_dir: str | Path, name: str, file_name: str, entry: dict[str, Any]) -> Path:
    """Add or replace `name` in `<dataset_dir>/dataset_info.json` (created if missing; other entries kept; locked)."""
    validate_name(name)
    with registry_lock(dataset_dir):
        info = read_dataset_info(dataset_dir)
        info[name] = {**entry, "file_name": file_name}
        return _write_info(dataset_dir, info)


def alpaca_entry(kind: str, source: str, rows: int, prompt: str, **extra: Any) -> dict[str, Any]:
    """An alpaca-format registry entry (without file_name) with qalign's provenance block."""
    return {"columns": dict(ALPACA_COLUMNS), "qalign": {"kind": kind, "source": source, "rows": rows,
                                                       "prompt": prompt, **extra}}


def overlapping_questions(
    dataset_dir: str | Path, questions: list[str], kind: str, exclude: str | None = None
) -> dict[str, list[str]]:
    """Normalised questions shared with registered qalign datasets of the other side (training vs eval).

    Returns {dataset name: sorted overlapping normalised questions}; datasets whose file cannot be read are
    skipped (this only feeds a warning).
    """
    return find_overlaps(dataset_dir, read_dataset_info(dataset_dir), questions, kind, exclude)


def write_dataset(
    dataset_dir: str | Path, name: str, rows: list[dict[str, Any]], entry: dict[str, Any], stats: LoadStats,
    *, force: bool = False,
) -> ConversionResult:
    """Under the registry lock: check the entry may be replaced, write `<dataset_dir>/data/<name>.json` to a temp
    file, register it with the hash of those bytes, rename it into place; then warn about train/eval overlap."""
    validate_name(name)
    if not rows:
        raise QalignError(
            f"{stats.source}: no usable records (read {stats.read}, {stats.skipped_no_answer} without answers, "
            f"{stats.skipped_no_question} without a question, {stats.duplicates} duplicates). Check the input format."
        )
    file_name = dataset_file_name(name)
    path = dataset_file(name, dataset_dir)
    kind = entry.get("qalign", {}).get("kind", "")
    data = (json.dumps(rows, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    stamp = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    with registry_lock(dataset_dir):
        info = read_dataset_info(dataset_dir)
        check_replace(dataset_dir, info, name, kind, force, entry.get("qalign", {}).get("source"))
        replaced = file_sha256(path) if path.is_file() else stamp["sha256"]
        if replaced != stamp["sha256"]:  # the same bytes again: the same entry
            stamp["replaces_sha256"] = replaced
        with atomic_target(path) as tmp:
            tmp.write_bytes(data)
            # registered first: a kill before the rename leaves an entry that does not describe the old file
            info[name] = {**entry, "file_name": file_name, "qalign": {**entry.get("qalign", {}), **stamp}}
            _write_info(dataset_dir, info)
        write_sidecar(path, [row["question"] for row in rows if isinstance(row.get("question"), str)])
    overlaps = find_overlaps(dataset_dir, info, [row["question"] for row in rows], kind, exclude=name)
    warn_overlaps(name, kind, overlaps)
    return ConversionResult(name=name, path=path, rows=len(rows), stats=stats, overlaps=overlaps)
