"""Prompt templates (`qalign/prompts/*.txt`, package data) and rendering a QA record into an instruction.

A template is plain text with the placeholders `{question}`, `{passages}` and, optionally, `{answer_marker}` (the
line the answer follows, `qalign.text.ANSWER_MARKER`, which the scorer reads). They are filled in one pass
(no `str.format`), so braces inside questions or passages are kept literally. Templates put the question
before the passages and restate it after them: LLaMA-Factory cuts the tail of over-long prompts, and the
restated question keeps the task next to where the answer starts.

Closed-book fallback: a record without passages (or `top_k=0`) rendered with a template that has
`{passages}` uses the `closed_book` template instead, so no prompt says "using the passages below" above nothing.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from qalign.errors import QalignError
from qalign.records import QARecord
from qalign.text import ANSWER_MARKER

# Installed with the package (pyproject package-data), read through importlib.resources: a wheel install has them.
PROMPTS_DIR = Path(str(files("qalign") / "prompts")).resolve()
CLOSED_BOOK = "closed_book"
_PLACEHOLDER = re.compile(r"\{(question|passages|answer_marker)\}")
MARKER_PLACEHOLDER = "{answer_marker}"


def available_prompts() -> list[str]:
    """Names of the prompt templates shipped with the package (`qalign/prompts/`)."""
    return sorted(path.stem for path in PROMPTS_DIR.glob("*.txt"))


def resolve_prompt(name_or_path: str | Path) -> Path:
    """A template file path, or a bare name looked up as the bundled `qalign/prompts/<name>.txt`."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    text = str(name_or_path)
    if "/" in text or "\\" in text or candidate.suffix:
        raise QalignError(
            f"{text}: prompt file not found. Pass an existing .txt file or one of: {', '.join(available_prompts())}."
        )
    shipped = PROMPTS_DIR / f"{text}.txt"
    if shipped.is_file():
        return shipped
    raise QalignError(
        f"unknown prompt '{text}'. Available: {', '.join(available_prompts()) or '(none)'} "
        f"(in {PROMPTS_DIR}), or pass the path of a .txt template with {{question}} and {{passages}}."
    )


def load_prompt(name_or_path: str | Path) -> str:
    """Read a template (see `resolve_prompt`); it must contain `{question}`."""
    path = resolve_prompt(name_or_path)
    try:
        template = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise QalignError(f"{path}: not valid UTF-8. Re-encode the template as UTF-8.") from None
    if "{question}" not in template:
        raise QalignError(f"{path}:1: the template has no {{question}} placeholder. Add one where the question goes.")
    return template


def declared_marker(template: str) -> str | None:
    """The answer marker a template asks the model to write before its answer, or None."""
    return ANSWER_MARKER if MARKER_PLACEHOLDER in template else None


def prompt_name(name_or_path: str | Path) -> str:
    """What to record as the prompt in dataset_info.json: the bare name, or the file path as given."""
    path = resolve_prompt(name_or_path)
    return path.stem if path.parent.resolve() == PROMPTS_DIR else str(name_or_path)


@lru_cache(maxsize=1)
def _closed_book_template() -> str:
    return load_prompt(CLOSED_BOOK)


def format_passages(ctxs: list[dict], top_k: int) -> str:
    """`Passage 1 (Title): text` lines for the first `top_k` passages (whitespace collapsed to one line each)."""
    lines = []
    for rank, ctx in enumerate(ctxs[: max(top_k, 0)], start=1):
        title = " ".join(str(ctx.get("title") or "").split())
        text = " ".join(str(ctx.get("text") or "").split())
        lines.append(f"Passage {rank} ({title}): {text}" if title else f"Passage {rank}: {text}")
    return "\n".join(lines)


def render_prompt(template: str, record: QARecord, top_k: int) -> str:
    """Fill `{question}` and `{passages}` for one record (closed-book fallback: see the module docstring)."""
    passages = format_passages(record.ctxs, top_k)
    if not passages and "{passages}" in template:
        template = _closed_book_template()
    values = {"question": record.question, "passages": passages, "answer_marker": ANSWER_MARKER}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
