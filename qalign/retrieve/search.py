"""Questions -> top-k passages in DPR/FiD form (`ctxs` = [{id, title, text, score, has_answer}]) and answer recall@k.

`has_answer` is SubEM's test applied to the passage: a normalised gold alias (qalign.text.normalize_answer) is a
substring of the normalised passage text (the title is not searched, as in DPR).
"""

from __future__ import annotations

from typing import Any

from qalign.errors import QalignError
from qalign.records import QARecord
from qalign.retrieve.index import Index, show_bars, tokenize
from qalign.text import normalize_answer

RECALL_AT = (1, 5, 20, 100)


def contains_answer(answers: list[str], normalised_text: str) -> bool:
    """True when a normalised alias (non-empty) occurs in the already normalised text: SubEM's rule."""
    return any((alias := normalize_answer(answer)) and alias in normalised_text for answer in answers)


def has_answer(answers: list[str], text: str) -> bool:
    """`contains_answer` on the normalised `text`."""
    return contains_answer(answers, normalize_answer(text))


def top_rows(scores: Any, k: int) -> tuple[list[int], list[float]]:
    """The k best rows by score, ties to the lower row. Only rows above a threshold are ranked (halved from the
    best score until k rows pass it; every row below it is worse than those k): numpy's argpartition over all
    100k mostly-zero scores (bm25s.retrieve's way) took 45 ms a query on this machine, this about 1 ms."""
    import numpy as np

    threshold = float(scores.max(initial=0.0)) / 2
    while True:
        rows = np.flatnonzero(scores >= threshold) if threshold > 1e-6 else np.flatnonzero(scores > 0)
        if len(rows) >= k or threshold <= 1e-6:
            break
        threshold /= 2
    if len(rows) > k:  # the k best; of rows tied with the k-th score, the earliest (rows are in order)
        values = scores[rows]
        kth = -np.partition(-values, k - 1)[k - 1]
        above = rows[values > kth]
        rows = np.concatenate([above, rows[values == kth][:k - len(above)]])
    found = rows[np.lexsort((rows, -scores[rows]))].tolist()
    if len(found) < k:  # fewer matching passages than k: fill with unscored ones, in corpus order
        chosen = set(found)
        found += [row for row in range(k + len(found)) if row not in chosen][:k - len(found)]
    return found, [float(scores[row]) for row in found]


def search(index: Index, records: list[QARecord], top_k: int) -> tuple[list[dict[str, Any]], int]:
    """Each record with its top_k passages as `ctxs` (best first); also how many questions matched no indexed term."""
    from tqdm.auto import tqdm

    if top_k < 1:
        raise QalignError(f"--top-k must be at least 1, got {top_k}.")
    if top_k > len(index):
        raise QalignError(f"--top-k {top_k} is more than the corpus's {len(index)} passages; lower --top-k.")
    ids, vocab = tokenize([record.question for record in records], bars=show_bars())
    inverse = {number: token for token, number in vocab.items()}
    known = index.retriever.vocab_dict
    out, unmatched, empty = [], 0, _zeros(len(index))
    normalised: dict[int, str] = {}
    for record, query in tqdm(list(zip(records, ids, strict=True)), desc="retrieving", unit=" q", disable=None):
        terms = [known[inverse[t]] for t in query if inverse[t] in known]
        unmatched += not terms
        scores = index.retriever.get_scores_from_ids(terms) if terms else empty
        ctxs = []
        for row, score in zip(*top_rows(scores, top_k), strict=True):
            passage = index.passages[row]
            if row not in normalised:  # a passage retrieved for many questions is normalised once
                normalised[row] = normalize_answer(passage["text"])
            ctxs.append({"id": passage["id"], "title": passage["title"], "text": passage["text"],
                         "score": round(score, 4), "has_answer": contains_answer(record.answers, normalised[row])})
        out.append({"id": record.id, "question": record.question, "answers": record.answers, "ctxs": ctxs})
    return out, unmatched


def _zeros(size: int) -> Any:
    import numpy as np

    return np.zeros(size, dtype=np.float32)


def recall_at(rows: list[dict[str, Any]], ks: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """Answer recall@k: the share of questions with a `has_answer` passage among their first k ctxs."""
    depth = max((len(row["ctxs"]) for row in rows), default=0)
    ks = tuple(k for k in ks if k <= depth) + ((depth,) if depth and depth not in ks else ())
    return {str(k): round(sum(any(c.get("has_answer") for c in row["ctxs"][:k]) for row in rows) / len(rows), 4)
            for k in ks} if rows else {}
