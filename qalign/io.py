"""Reading JSON/JSONL(.gz) records with file:line errors, and atomic writes (temp file + rename).

Every decode failure of the one records reader (`iter_json_records`) becomes a `QalignError` naming `file:line` and
the fix: malformed JSON, corrupt or truncated gzip data, invalid UTF-8, nesting deeper than the decoder allows,
integers over Python's digit limit, lone UTF-16 surrogate escapes. A UTF-8 byte-order mark is accepted.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from qalign.errors import QalignError

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_OTHER_HOST_STALE_S = 86400.0  # a temp file of another host's writer (shared disk) is stale after a day
_TMP = re.compile(r"^\..+\.([0-9a-f]{4})-(\d+)\.[^.]+\.tmp$")  # .NAME.<host hash>-<pid>.<random>.tmp


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _text(raw: bytes, path: Path, lineno: int) -> str:
    """Decode one line (or a whole .json file starting at `lineno`); errors name the line of the bad byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lineno + raw.count(b"\n", 0, exc.start)
        fix = ("It is gzip data: name it .gz (e.g. FILE.jsonl.gz)." if raw[:2] == b"\x1f\x8b" else
               "Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`.")
        raise QalignError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}). {fix}") from None
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text  # a UTF-8 byte-order mark is fine


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


def _has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _deep_line(text: str, depth: int = 500) -> int:
    level = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            level += 1
            if level > depth:
                return _line_of(text, match.start())
        elif token in "]}":
            level -= 1
    return 1


def _long_int_line(text: str) -> int:
    match = re.search(r"\d{" + str(sys.get_int_max_str_digits() + 1) + ",}", text)
    return _line_of(text, match.start()) if match else 1


def _decode(text: str, where: str, hint: str) -> Any:
    """json.loads with every failure turned into a QalignError at `where` (a `file:line`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise QalignError(f"{where}: malformed JSON ({exc.msg}, column {exc.colno}). {hint}") from None
    except RecursionError:
        raise QalignError(f"{where}: JSON nested too deeply for the decoder (about 1000 levels). QA records are "
                          "flat: fix or delete that record.") from None
    except ValueError:
        raise QalignError(f"{where}: an integer with more than {sys.get_int_max_str_digits()} digits. Quote it as a "
                          "string, or fix or delete that record.") from None


def _check_object(obj: Any, where: str, escapes: bool) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise QalignError(f"{where}: expected a JSON object, got {type(obj).__name__}. Each record must be "
                          "{...} with a question and its answers.")
    if escapes and _has_lone_surrogate(obj):  # only escapes (\udXXX) can make them: skip the walk otherwise
        raise QalignError(f"{where}: a lone UTF-16 surrogate escape (like \\ud800) is not valid text. Fix the "
                          "escaped character, or delete that record.")
    return obj


def _iter_jsonl(path: Path, handle: Any, state: dict[str, int]) -> Iterator[tuple[int, dict[str, Any]]]:
    hint = "Each line of a .jsonl file must be one complete JSON object; fix or delete that line."
    for lineno, raw in enumerate(handle, start=1):
        state["line"] = lineno
        where = f"{path}:{lineno}"
        line = _text(raw, path, lineno)
        if line.strip():
            obj = _decode(line, where, hint)
            yield lineno, _check_object(obj, where, _SURROGATE_ESCAPE.search(line) is not None)


def _iter_json(path: Path, handle: Any, state: dict[str, int]) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _text(handle.read(), path, 1)
    hint = "A .json file must hold one JSON list of objects (use .jsonl for one object per line)."
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QalignError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}, column {exc.colno}). {hint}") from None
    except RecursionError:
        _decode(text, f"{path}:{_deep_line(text)}", hint)
    except ValueError:
        _decode(text, f"{path}:{_long_int_line(text)}", hint)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise QalignError(f"{path}:1: expected a JSON list of objects, got {type(data).__name__}.")
    escapes = _SURROGATE_ESCAPE.search(text) is not None
    for index, obj in enumerate(data, start=1):
        where = f"{path}:{index}"
        if not isinstance(obj, dict):
            raise QalignError(f"{where}: item {index} is {type(obj).__name__}, expected an object.")
        yield index, _check_object(obj, where, escapes)


def _did_you_mean(path: Path) -> str:
    try:
        near = sorted(p for p in path.parent.glob(f"{glob.escape(path.name)}*") if p.is_file())[:3]
    except OSError:
        return ""
    return f" Did you mean {' or '.join(str(p) for p in near)}?" if near else ""


def _read_problem(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the compressed data ends early (a truncated download or an interrupted write)"
    if isinstance(exc, zlib.error | gzip.BadGzipFile):
        return f"corrupt compressed data ({exc})"
    return str(getattr(exc, "strerror", None) or exc)


def iter_json_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, object) from a .json (list of objects) or .jsonl file, optionally gzipped.

    For a .json file the "line number" is the 1-based index of the object in the list.
    Errors name the file and line and say how to fix them.
    """
    path = Path(path)
    if not path.exists():
        raise QalignError(f"{path}: file not found.{_did_you_mean(path)} Check the path (relative paths are read "
                          f"from {Path.cwd()}).")
    if path.is_dir():
        raise QalignError(f"{path}: is a folder. Pass a .json/.jsonl(.gz) file.")
    state = {"line": 0}
    try:
        with _open_binary(path) as handle:
            yield from (_iter_jsonl if _is_jsonl(path) else _iter_json)(path, handle, state)
    except (OSError, EOFError, zlib.error) as exc:
        raise QalignError(f"{path}:{state['line'] + 1}: cannot read: {_read_problem(exc)}. Re-create or re-download "
                          "the file (`gzip -t FILE` checks a .gz).") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files of `atomic_target` whose writer died (killed mid-write); return what was removed.

    A temp name carries its writer's host and pid: one of this host whose pid is gone is removed at once; one of
    another host (a shared disk) only once it is a day old.
    """
    removed = []
    host, now = _host_tag(), time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TMP.match(entry.name)
        if not match:
            continue
        pid = int(match.group(2))
        try:
            if match.group(1) == host:
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = now - entry.stat().st_mtime > _OTHER_HOST_STALE_S
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _write_error(path: Path, exc: OSError) -> QalignError:
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return QalignError(f"{path}: cannot write: {blocker} is a file, not a folder. Pick another output path.")
    if path.is_dir():
        return QalignError(f"{path}: is a folder; pass a file name (e.g. {path / 'report.md'}).")
    return QalignError(f"{path}: cannot write ({exc.strerror or exc}). Check that {path.parent} is a writable "
                       "folder with free space.")


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; once the block succeeds, make it 0644 and rename it onto `path`.

    The temp name carries this host and process id, so the next write into the folder removes what a killed writer
    left (`clean_stale_temps`).
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs should read like any other file
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from None
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
