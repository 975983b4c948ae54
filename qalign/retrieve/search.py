"""Questions -> top-k passages in DPR/FiD form (`ctxs` = [{id, title, text, score, has_answer}]) and answer recall@k.

`has_answer` is SubEM's test applied to the passage: a normalised gold alias (qalign.text.normalize_answer) is a
substring of the normalised passage text (the title is not searched, as in DPR).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from qalign.errors import QalignError
from qalign.records import QARecord
from qalign.text import normalize_answer

RECALL_AT = (1, 5, 20, 100)


def contains_answer(answers: list[str], normalised_text: str) -> bool:
    """True when a normalised alias (non-empty) occurs in the already normalised text: SubEM's rule."""
    return any((alias := normalize_answer(answer)) and alias in normalised_text for answer in answers)


def has_answer(answers: list[str], text: str) -> bool:
    """`contains_answer` on the normalised `text`."""
    return contains_answer(answers, normalize_answer(text))


class Searcher(Protocol):
    """What `qalign retrieve` needs from an engine: the bm25s `Index` here; a Pyserini `LuceneSearcher` or an
    OpenSearch/Elasticsearch index is one small class with these two methods (docs/retrieval.md)."""

    def __len__(self) -> int:
        """The number of passages searched."""

    def search(self, questions: list[str], k: int) -> Iterator[list[tuple[dict[str, str], float]]]:
        """Per question, in order: its k best passages ({id, title, text}) with their scores, best first."""


def attach_passages(searcher: Searcher, records: list[QARecord], top_k: int) -> tuple[list[dict[str, Any]], int]:
    """Each record with its top_k passages as `ctxs` (best first); also how many questions matched nothing
    (every passage scored 0)."""
    from tqdm.auto import tqdm

    if top_k < 1:
        raise QalignError(f"--top-k must be at least 1, got {top_k}.")
    if top_k > len(searcher):
        raise QalignError(f"--top-k {top_k} is more than the corpus's {len(searcher)} passages; lower --top-k.")
    hits = searcher.search([record.question for record in records], top_k)
    out, unmatched = [], 0
    normalised: dict[str, str] = {}  # a passage retrieved for many questions is normalised once
    for record, found in tqdm(zip(records, hits, strict=True), total=len(records), desc="retrieving", unit=" q",
                              disable=None):
        unmatched += not any(score > 0 for _, score in found)
        ctxs = []
        for passage, score in found:
            if passage["id"] not in normalised:
                normalised[passage["id"]] = normalize_answer(passage["text"])
            ctxs.append({"id": passage["id"], "title": passage["title"], "text": passage["text"],
                         "score": round(score, 4),
                         "has_answer": contains_answer(record.answers, normalised[passage["id"]])})
        out.append({"id": record.id, "question": record.question, "answers": record.answers, "ctxs": ctxs})
    return out, unmatched


def recall_at(rows: list[dict[str, Any]], ks: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """Answer recall@k: the share of questions with a `has_answer` passage among their first k ctxs."""
    depth = max((len(row["ctxs"]) for row in rows), default=0)
    ks = tuple(k for k in ks if k <= depth) + ((depth,) if depth and depth not in ks else ())
    return {str(k): round(sum(any(c.get("has_answer") for c in row["ctxs"][:k]) for row in rows) / len(rows), 4)
            for k in ks} if rows else {}
