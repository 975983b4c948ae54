"""The BM25 index (bm25s: sparse score matrix, PyStemmer English stemming, English stopwords), built once into a
folder and reused while the corpus file and the settings are unchanged.

The folder holds bm25s's own files, the passages (`corpus.jsonl`, read back by line offset, so retrieval never
re-reads the corpus) and `qalign-index.json`: the corpus fingerprint (size, mtime, sha256) and the settings. A
different fingerprint or setting rebuilds the index; it is written to a temp folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.retrieve.corpus import Passage, fingerprint, read_passages

META = "qalign-index.json"
FORMAT = 1  # bump when the folder's layout or the indexed text changes
STEMMER = "english"
STOPWORDS = "en"


def show_bars() -> bool:
    """Progress bars on a terminal, none in logs and tests (the project's tqdm `disable=None` rule)."""
    return sys.stderr.isatty()


def settings(title_weight: int) -> dict[str, Any]:
    """What the indexed tokens depend on besides the corpus bytes."""
    import bm25s

    return {"format": FORMAT, "bm25s": bm25s.__version__, "stemmer": STEMMER, "stopwords": STOPWORDS,
            "method": "lucene", "k1": 1.5, "b": 0.75, "title_weight": title_weight}


def indexed_text(passage: Passage, title_weight: int) -> str:
    """The title `title_weight` times, then the text: repeating the title scales its term frequencies."""
    return " ".join([passage.title] * title_weight + [passage.text]) if passage.title else passage.text


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer(STEMMER)


def tokenize(texts: list[str], *, bars: bool) -> Any:
    """bm25s tokens of `texts`: lowercase words of 2+ characters, English stopwords dropped, Snowball-stemmed."""
    import bm25s

    return bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=_stemmer(), return_ids=True, show_progress=bars)


@dataclass
class Index:
    """A loaded index: the bm25s retriever, the passages store (random access by row) and its description."""

    retriever: Any
    passages: Any  # a list of dicts after a build, bm25s's mmap'ed JsonlCorpus after a load
    meta: dict[str, Any]
    built: bool  # True when this call built it, False when it was reused

    def __len__(self) -> int:
        return int(self.meta["passages"])

    def search(self, questions: list[str], k: int) -> Iterator[list[tuple[dict[str, str], float]]]:
        """Per question, its k best passages and BM25 scores (the `Searcher` protocol of qalign.retrieve.search)."""
        import numpy as np

        ids, vocab = tokenize(questions, bars=show_bars())
        inverse = {number: token for token, number in vocab.items()}
        known = self.retriever.vocab_dict
        empty = np.zeros(len(self), dtype=np.float32)
        for query in ids:
            terms = [known[inverse[t]] for t in query if inverse[t] in known]
            scores = self.retriever.get_scores_from_ids(terms) if terms else empty
            yield [(self.passages[row], score) for row, score in zip(*top_rows(scores, k), strict=True)]


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


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stale_reason(meta: dict[str, Any] | None, corpus: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    if meta is None:
        return "no index there yet"
    if meta.get("corpus", {}).get("sha256") != corpus["sha256"]:
        return "the corpus file changed since the index was built"
    changed = [key for key, value in wanted.items() if meta.get("settings", {}).get(key) != value]
    return f"settings changed ({', '.join(changed)})" if changed else None


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename `tmp` onto `folder`; an older index there is moved aside first and removed after."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def build_index(corpus: Path, folder: Path, title_weight: int, corpus_print: dict[str, Any]) -> Index:
    """Read, tokenize and index every passage; write the folder atomically."""
    import bm25s

    started = time.time()
    bars = show_bars()
    passages = read_passages(corpus)
    tokens = tokenize([indexed_text(p, title_weight) for p in passages], bars=bars)
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(tokens, show_progress=bars)
    rows = [{"id": p.id, "title": p.title, "text": p.text} for p in passages]
    meta = {"corpus": {"path": str(corpus), **corpus_print}, "settings": settings(title_weight),
            "passages": len(rows), "vocabulary": len(retriever.vocab_dict), "build_seconds": 0.0}
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        retriever.save(str(tmp), corpus=rows, show_progress=bars)
        meta["build_seconds"] = round(time.time() - started, 2)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace_folder(tmp, folder)
    except OSError as exc:
        raise QalignError(f"{folder}: cannot write the index ({exc.strerror or exc}). Pass a writable --index "
                          "folder with free space.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Index(retriever, rows, meta, built=True)


def open_index(corpus: str | os.PathLike, folder: str | os.PathLike, title_weight: int = 1,
               echo=print) -> Index:
    """The index of `corpus` in `folder`: reused when its fingerprint and settings match, else (re)built."""
    import bm25s

    corpus, folder = Path(corpus), Path(folder)
    if not corpus.is_file():
        raise QalignError(f"{corpus}: corpus file not found. Pass a .jsonl(.gz) or .tsv(.gz) file to --corpus.")
    if folder.exists() and not folder.is_dir():
        raise QalignError(f"{folder}: is a file; --index is a folder the index is written to.")
    if title_weight < 0:
        raise QalignError(f"--title-weight must be >= 0 (0 = titles not indexed), got {title_weight}.")
    meta = _read_meta(folder) if folder.is_dir() else None
    if meta is None and folder.is_dir() and any(folder.iterdir()):  # never replace a folder that is not ours
        raise QalignError(f"{folder}: not a qalign index (no {META}) and not empty. Pass a new or empty --index "
                          "folder.")
    corpus_print = fingerprint(corpus)
    reason = _stale_reason(meta, corpus_print, settings(title_weight))
    if reason is None:
        retriever = bm25s.BM25.load(str(folder), load_corpus=True, mmap=True, show_progress=False)
        store, retriever.corpus = retriever.corpus, None  # retrieve() returns row numbers; rows are read here
        echo(f"index: reusing {folder} ({meta['passages']} passages)")
        return Index(retriever, store, meta, built=False)
    if folder.exists():
        echo(f"index: rebuilding {folder}: {reason}")
    index = build_index(corpus, folder, title_weight, corpus_print)
    echo(f"index: built {folder} ({len(index)} passages, {index.meta['build_seconds']:.1f} s)")
    return index
