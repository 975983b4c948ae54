"""Reading JSON/JSONL(.gz) with file:line errors, and atomic writes (temp file + rename)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from qalign.errors import QalignError


def _open_text(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8")


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


def iter_json_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, object) from a .json (list of objects) or .jsonl file, optionally gzipped.

    For a .json file the "line number" is the 1-based index of the object in the list.
    Errors name the file and line and say how to fix them.
    """
    path = Path(path)
    if not path.exists():
        raise QalignError(f"{path}: file not found. Check the path (relative paths are read from {Path.cwd()}).")
    try:
        with _open_text(path) as handle:
            if _is_jsonl(path):
                for lineno, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise QalignError(
                            f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno}). "
                            "Each line of a .jsonl file must be one complete JSON object; fix or delete that line."
                        ) from None
                    if not isinstance(obj, dict):
                        raise QalignError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}.")
                    yield lineno, obj
            else:
                try:
                    data = json.load(handle)
                except json.JSONDecodeError as exc:
                    raise QalignError(
                        f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}). "
                        "A .json file must hold one JSON list of objects (use .jsonl for one object per line)."
                    ) from None
                if isinstance(data, dict):
                    data = [data]
                if not isinstance(data, list):
                    raise QalignError(f"{path}:1: expected a JSON list of objects, got {type(data).__name__}.")
                for index, obj in enumerate(data, start=1):
                    if not isinstance(obj, dict):
                        raise QalignError(f"{path}:{index}: item {index} is {type(obj).__name__}, expected an object.")
                    yield index, obj
    except UnicodeDecodeError as exc:
        raise QalignError(
            f"{path}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} of a chunk). "
            "Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`."
        ) from None
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise QalignError(f"{path}: cannot read ({exc}). Is it a complete, uncorrupted file?") from None


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; once the block succeeds, make it 0644 and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs should read like any other file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to path via a temp file in the same folder and an atomic rename."""
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_yaml_mapping(path: str | os.PathLike, what: str, example: str, keys: Iterable[str] = ()) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; errors name the file, the line and an example file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise QalignError(f"{path}: {what} not found (e.g. {example}).")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise QalignError(f"{path}:{mark.line + 1 if mark else 1}: malformed YAML ({exc}).") from None
    if not isinstance(spec, dict):
        raise QalignError(f"{path}:1: expected a mapping with keys {', '.join(keys)}.")
    return spec
