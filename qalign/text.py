"""Text normalisation shared by the records reader, the converters and the metrics (SQuAD v1.1 rules), and the
one answer extractor every prediction goes through before it is scored."""

from __future__ import annotations

import re
import string
import unicodedata

# The answer marker a prompt declares with the `{answer_marker}` placeholder (qalign/prompts/think_then_answer.txt);
# the teacher's budget forcing writes it and the extractor reads it. One place, so they cannot drift apart.
ANSWER_MARKER = "The answer is:"
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_PUNCTUATION = set(string.punctuation)


def marker_pattern(marker: str) -> re.Pattern[str]:
    """A regex for `marker` in any case and spacing."""
    # case and the spacing between words are the model's: "the answer  is:" is the same marker
    return re.compile(r"\s*".join(re.escape(word) for word in marker.split()), re.IGNORECASE)


_MARKER = marker_pattern(ANSWER_MARKER)


def extract_answer(text: str, marker: str | None = ANSWER_MARKER) -> str | None:
    """The answer in a raw model output, or None when it holds none.

    Closed `<think>...</think>` blocks are dropped (and everything before a stray `</think>`: a chat template
    opened the block). When `marker` occurs in what is left, even inside an unclosed `<think>`, the answer is the
    first non-empty line after its last occurrence (the marker is never part of it). Otherwise an unclosed
    `<think>` is a truncated output: None, never "". Empty text is None too.
    """
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    pattern = (_MARKER if marker == ANSWER_MARKER else marker_pattern(marker)) if marker else None
    hits = list(pattern.finditer(text)) if pattern else []
    if hits:
        tail = text[hits[-1].end():].split("<think>", 1)[0]  # a block opened after the answer is not part of it
        lines = [line.strip() for line in tail.split("\n") if line.strip()]
        return lines[0] if lines else None
    if "<think>" in text:
        return None
    return text.strip() or None


def strip_think(text: str) -> str:
    """`extract_answer` with "" for no answer (for callers that only need a string key)."""
    return extract_answer(text) or ""


def _is_punctuation(ch: str) -> bool:
    # SQuAD drops string.punctuation; we also drop Unicode punctuation (curly quotes, dashes) so that
    # "“Paris”" matches "Paris". On ASCII text this is exactly SQuAD's rule.
    return ch in _PUNCTUATION or unicodedata.category(ch).startswith("P")


class _DropPunctuation(dict):
    """A `str.translate` table that deletes exactly the characters `_is_punctuation` accepts, filled on first sight
    of each character: ~14x faster than a per-character generator on passages (retrieval's has_answer)."""

    def __missing__(self, codepoint: int) -> int | None:
        value = None if _is_punctuation(chr(codepoint)) else codepoint
        self[codepoint] = value
        return value


_DROP_PUNCTUATION = _DropPunctuation()


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation (ASCII and Unicode), drop articles, collapse whitespace (SQuAD v1.1)."""
    text = text.lower().translate(_DROP_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_words(answer: str | None) -> int:
    """Length of an extracted answer in normalised words (no answer: 0)."""
    return len(normalize_answer(answer).split()) if answer else 0
