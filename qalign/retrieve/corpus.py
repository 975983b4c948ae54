"""Passage files: jsonl / jsonl.gz `{id, title, text}` or tsv(.gz) with a header (DPR's `psgs_w100.tsv`:
`id<TAB>text<TAB>title`), read with `file:line` errors; duplicate ids are refused."""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.io import iter_json_records

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Passage:
    """One retrievable passage."""

    id: str
    title: str
    text: str


def corpus_format(path: Path) -> str:
    """`jsonl` or `tsv` from the file name (a `.gz` suffix is allowed on both)."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for fmt in ("jsonl", "tsv"):
        if name.endswith(f".{fmt}"):
            return fmt
    raise QalignError(f"{path}: a corpus is .jsonl, .jsonl.gz, .tsv or .tsv.gz (one passage a line: id, title, text); "
                      "rename or convert the file.")


def _passage(pid: Any, title: Any, text: Any, where: str) -> Passage:
    if pid is None or str(pid).strip() == "":
        raise QalignError(f"{where}: passage without an id. Give every passage a unique `id`.")
    if not isinstance(text, str) or not text.strip():
        raise QalignError(f"{where}: passage {pid!r} has no text. Give it a non-empty string `text`, or delete it.")
    if title is not None and not isinstance(title, str):
        raise QalignError(f"{where}: passage {pid!r}: `title` must be a string, got {type(title).__name__}.")
    return Passage(str(pid).strip(), (title or "").strip(), text.strip())


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Passage]]:
    for lineno, obj in iter_json_records(path):
        yield lineno, _passage(obj.get("id"), obj.get("title"), obj.get("text"), f"{path}:{lineno}")


def _iter_tsv(path: Path) -> Iterator[tuple[int, Passage]]:
    csv.field_size_limit(1 << 30)  # one Wikipedia passage can exceed csv's 128 kB default
    opener = gzip.open if path.suffix == ".gz" else open
    line = 1
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = [name.strip().lower() for name in next(reader, [])]
            if "id" not in header or "text" not in header:
                raise QalignError(f"{path}:1: a .tsv corpus starts with a header naming its columns, e.g. "
                                  f"`id<TAB>text<TAB>title` (DPR's psgs_w100.tsv); got {header!r}.")
            col = {name: header.index(name) for name in ("id", "text", "title") if name in header}
            for row in reader:
                line = reader.line_num
                if not row or row == [""]:
                    continue
                if len(row) != len(header):
                    raise QalignError(f"{path}:{line}: {len(row)} tab-separated columns, the header has "
                                      f"{len(header)} ({', '.join(header)}). Fix that line (a tab inside a text "
                                      "must be in a double-quoted field).")
                title = row[col["title"]] if "title" in col else ""
                yield line, _passage(row[col["id"]], title, row[col["text"]], f"{path}:{line}")
    except UnicodeDecodeError:
        raise QalignError(f"{path}:{line + 1}: not valid UTF-8. Re-encode the corpus as UTF-8.") from None
    except csv.Error as exc:
        raise QalignError(f"{path}:{line + 1}: malformed tsv ({exc}). Fix the quoting of that line.") from None
    except (OSError, EOFError) as exc:
        raise QalignError(f"{path}:{line + 1}: cannot read ({exc}). Re-create or re-download the corpus.") from None


def iter_passages(path: str | os.PathLike) -> Iterator[tuple[int, Passage]]:
    """Yield (line, passage) in file order; malformed lines raise a QalignError naming `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise QalignError(f"{path}: corpus file not found. Pass a .jsonl(.gz) or .tsv(.gz) passage file to --corpus.")
    fmt = corpus_format(path)
    yield from (_iter_jsonl(path) if fmt == "jsonl" else _iter_tsv(path))


def read_passages(path: str | os.PathLike) -> list[Passage]:
    """Every passage of the corpus; duplicate ids and an empty corpus are refused."""
    seen: dict[str, int] = {}
    passages = []
    for line, passage in iter_passages(path):
        first = seen.setdefault(passage.id, line)
        if first != line:
            raise QalignError(f"{path}:{line}: passage id {passage.id!r} is already used at {path}:{first}. Ids name "
                              "the passages in the output: make them unique.")
        passages.append(passage)
    if not passages:
        raise QalignError(f"{path}: the corpus holds no passages. Add lines with an id and a text.")
    return passages


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size, mtime and sha256 of the corpus file: an index built from other bytes is never reused."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
