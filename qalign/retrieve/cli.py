"""`qalign retrieve`: questions + a passage file -> the questions with their BM25 top-k `ctxs`, and recall@k."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.io import atomic_write_json, atomic_write_jsonl, iter_json_records
from qalign.paths import recall_file
from qalign.records import QARecord, load_records, question_key


def default_index(corpus: str | Path) -> Path:
    """`indexes/<corpus file name>.bm25` under the current folder (the corpus's own folder may be read-only)."""
    return Path("indexes") / f"{Path(corpus).name}.bm25"


def _first_empty_question(source: str) -> str:
    for line, obj in iter_json_records(source):
        question = obj.get("question")
        if not isinstance(question, str) or not question_key(question):
            return f"{source}:{line}"
    return source


def _load_questions(source: str) -> tuple[list[QARecord], list[str]]:
    records, stats = load_records(source)
    if stats.skipped_no_question:
        raise QalignError(f"{_first_empty_question(source)}: a record without a question (or only punctuation). "
                          "Every record needs a `question` to retrieve for: fix or delete it.")
    if not records:
        raise QalignError(f"{source}: no usable questions (each needs a `question` and its `answers`/`answer`).")
    notes = [f"{stats.skipped_no_answer} record(s) without answers skipped (e.g. "
             f"{', '.join(stats.skipped_locations)})"] if stats.skipped_no_answer else []
    if stats.duplicates:
        notes.append(f"{stats.duplicates} duplicate question(s) skipped")
    return records, notes + stats.notes()


def run_retrieve(corpus: str, source: str, output: str, top_k: int, index_dir: str | None = None,
                 title_weight: int = 1, echo=print) -> dict[str, Any]:
    """Retrieve the top_k passages of every question of `source` into `output`; return the recall summary."""
    from qalign.retrieve.index import open_index
    from qalign.retrieve.search import attach_passages, recall_at

    if not output.endswith(".jsonl"):
        raise QalignError(f"{output}: --output must end with .jsonl (the converters read it as DPR/FiD jsonl).")
    if top_k < 1:
        raise QalignError(f"--top-k must be at least 1, got {top_k}.")
    records, notes = _load_questions(source)
    index = open_index(corpus, index_dir or default_index(corpus), title_weight, echo=echo)
    started = time.time()
    rows, unmatched = attach_passages(index, records, top_k)
    seconds = time.time() - started
    summary = {"input": source, "output": output, "corpus": corpus, "index": str(index_dir or default_index(corpus)),
               "passages": len(index), "questions": len(rows), "top_k": top_k, "title_weight": title_weight,
               "recall": recall_at(rows), "unmatched_questions": unmatched,
               "questions_per_second": round(len(rows) / max(seconds, 1e-9), 1)}
    atomic_write_json(recall_file(output), summary)  # first: the output is the study step's done-marker
    atomic_write_jsonl(output, rows)
    for note in notes:
        echo(f"note: {note}")
    if unmatched:
        echo(f"note: {unmatched} question(s) share no indexed term with the corpus (their passages score 0)")
    shown = ", ".join(f"@{k} {v:.3f}" for k, v in summary["recall"].items())
    echo(f"retrieved top-{top_k} for {len(rows)} questions from {len(index)} passages in {seconds:.1f} s "
         f"({summary['questions_per_second']:.0f} q/s) -> {output}; answer recall {shown}")
    return summary


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text}")
    return value


def _weight(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text}")
    return value


def add_retrieve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "retrieve", help="BM25 top-k passages from your own corpus for each question (DPR/FiD ctxs)",
        description="Index a passage file once with BM25 (bm25s, English stemming and stopwords) and write each "
                    "question with its top-k passages as DPR/FiD `ctxs`, read unchanged by `qalign convert`. "
                    "See docs/retrieval.md.")
    parser.add_argument("--corpus", required=True, metavar="FILE",
                        help="passages: .jsonl(.gz) {id, title, text} or .tsv(.gz) with a header (DPR's "
                             "psgs_w100.tsv: id, text, title)")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="questions: NQ-open {question, answer} or DPR/FiD records, .json/.jsonl(.gz)")
    parser.add_argument("--output", required=True, metavar="FILE.jsonl",
                        help="the records with `ctxs`; recall@k goes to FILE.recall.json beside it")
    parser.add_argument("--top-k", type=_positive, default=20, metavar="K", help="passages per question (default 20)")
    parser.add_argument("--index", default=None, metavar="DIR",
                        help="index folder, built once and reused while the corpus is unchanged "
                             "(default: indexes/<corpus name>.bm25)")
    parser.add_argument("--title-weight", type=_weight, default=1, metavar="W",
                        help="index each title W times before its text (default 1; 0 = text only)")
    parser.set_defaults(func=lambda args: 0 if run_retrieve(
        args.corpus, args.input, args.output, args.top_k, args.index, args.title_weight) else 1)
    return parser
