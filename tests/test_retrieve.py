"""`qalign retrieve` on small corpora the tests write: BM25 scores against a hand computation, recall@k,
has_answer = SubEM's rule, index reuse and rebuild, tsv / jsonl.gz corpora, the errors, and `convert eval` on it."""

from __future__ import annotations

import gzip
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest

from qalign.cli import main
from qalign.errors import QalignError
from qalign.evaluators.metrics import substring_exact_match
from qalign.paths import recall_file
from qalign.retrieve.cli import run_retrieve
from qalign.retrieve.index import top_rows
from qalign.retrieve.search import has_answer
from qalign.text import _is_punctuation, normalize_answer

ANIMALS = [("d1", "zebra lion"), ("d2", "zebra zebra tiger"), ("d3", "tiger eagle"), ("d4", "eagle shark")]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _corpus(tmp_path: Path, passages=ANIMALS, name: str = "corpus.jsonl") -> Path:
    return _jsonl(tmp_path / name, [{"id": pid, "title": "", "text": text} for pid, text in passages])


def _questions(tmp_path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    return _jsonl(tmp_path / "q.jsonl", [{"question": q, "answer": a} for q, a in rows])


def _retrieve(tmp_path: Path, corpus: Path, questions: Path, k: int, **kwargs) -> tuple[list[dict], list[str]]:
    said: list[str] = []
    run_retrieve(str(corpus), str(questions), str(tmp_path / "out.jsonl"), k, str(tmp_path / "index"),
                 echo=said.append, **kwargs)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    return rows, said


def _lucene(tf: int, df: int, dl: int, n: int, avgdl: float, k1: float = 1.5, b: float = 0.75) -> float:
    """Lucene's BM25 (bm25s method "lucene"): no (k1 + 1) factor in the numerator, a non-negative idf."""
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_scores_and_ranks_match_a_hand_computed_bm25(tmp_path: Path) -> None:
    questions = _questions(tmp_path, [("zebra", ["tiger"]), ("eagle", ["lion"])])
    rows, _ = _retrieve(tmp_path, _corpus(tmp_path), questions, 3, title_weight=0)
    zebra, eagle = rows
    avgdl = 9 / 4  # passage lengths 2, 3, 2, 2
    assert [c["id"] for c in zebra["ctxs"]] == ["d2", "d1", "d3"]  # tf 2 beats tf 1; d3 fills in with score 0
    assert [c["score"] for c in zebra["ctxs"]] == pytest.approx(
        [_lucene(2, 2, 3, 4, avgdl), _lucene(1, 2, 2, 4, avgdl), 0.0], abs=1e-4)
    assert [c["has_answer"] for c in zebra["ctxs"]] == [True, False, True]  # d2, d3 say "tiger"
    assert [c["id"] for c in eagle["ctxs"]] == ["d3", "d4", "d1"]  # a tie goes to the earlier passage
    assert [c["has_answer"] for c in eagle["ctxs"]] == [False, False, True]
    summary = json.loads(recall_file(tmp_path / "out.jsonl").read_text())
    assert summary["recall"] == {"1": 0.5, "3": 1.0}  # zebra's answer at rank 1, eagle's at rank 3
    assert set(zebra) == {"id", "question", "answers", "ctxs"}
    assert set(zebra["ctxs"][0]) == {"id", "title", "text", "score", "has_answer"}


def test_title_weight_repeats_the_title(tmp_path: Path) -> None:
    corpus = _jsonl(tmp_path / "c.jsonl", [{"id": "a", "title": "Otter", "text": "river animal swims"},
                                           {"id": "b", "title": "Beaver", "text": "otter otter river"}])
    questions = _questions(tmp_path, [("otter", ["swims"])])
    text_only, _ = _retrieve(tmp_path, corpus, questions, 1, title_weight=0)
    weighted, said = _retrieve(tmp_path, corpus, questions, 1, title_weight=3)
    assert text_only[0]["ctxs"][0]["id"] == "b" and weighted[0]["ctxs"][0]["id"] == "a"
    assert any("settings changed (title_weight)" in line for line in said)


def test_has_answer_is_subem_on_the_passage() -> None:
    cases = [(["U.S."], "served in the US army", True), (["Röntgen"], "Wilhelm Conrad Röntgen, 1901", True),
             (["the Beatles"], "a Beatles song", True), (["1"], "in 1901", True), (["Paris"], "Parisian", True),
             (["Lyon"], "Paris, France", False), (["the"], "the the", False), (["“Dune”"], "dune (novel)", True)]
    for answers, text, expected in cases:
        assert has_answer(answers, text) is expected, (answers, text)
        assert has_answer(answers, text) == bool(substring_exact_match(text, answers))


def test_normalize_answer_drops_exactly_the_punctuation_it_did() -> None:
    """The translate table is the old per-character rule, character for character."""
    import re

    text = "".join(chr(c) for c in range(0x3100)) + " The “Dune” – a novel… ¿Qué? 「書」 "
    old = " ".join(re.sub(r"\b(a|an|the)\b", " ", "".join(ch for ch in text.lower()
                                                           if not _is_punctuation(ch))).split())
    assert normalize_answer(text) == old
    assert normalize_answer("The “Dune” – a novel…") == "dune novel"


def test_top_rows_equals_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = np.zeros(300, dtype=np.float32)
        hits = rng.integers(0, 300, rng.integers(0, 40))
        scores[hits] = rng.integers(1, 6, len(hits)).astype(np.float32) / 2  # many ties
        k = int(rng.integers(1, 30))
        expected = sorted(range(300), key=lambda row: (-scores[row], row))[:k]
        assert top_rows(scores, k)[0] == expected


def test_the_index_is_reused_and_rebuilt_when_the_corpus_changes(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    questions = _questions(tmp_path, [("shark", ["shark"])])
    _, said = _retrieve(tmp_path, corpus, questions, 1)
    assert said[0].startswith("index: built")
    _, said = _retrieve(tmp_path, corpus, questions, 1)
    assert said[0].startswith("index: reusing")
    # same size, same mtime, other bytes: still rebuilt (the sha256 decides)
    stat = corpus.stat()
    corpus.write_text(corpus.read_text().replace("eagle shark", "eagle whale"), encoding="utf-8")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corpus.stat().st_size == stat.st_size
    rows, said = _retrieve(tmp_path, corpus, _questions(tmp_path, [("whale", ["whale"])]), 1)
    assert "corpus file changed" in said[0] and rows[0]["ctxs"][0]["id"] == "d4"
    assert rows[0]["ctxs"][0]["has_answer"] is True
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folder left


def test_tsv_in_dpr_layout_and_gzipped_jsonl(tmp_path: Path) -> None:
    tsv = tmp_path / "psgs.tsv"
    tsv.write_text('id\ttext\ttitle\n1\t"Aaron (""Ahärôn"") was a prophet"\tAaron\n2\tA river in Peru\tRimac\n',
                   encoding="utf-8")
    questions = _questions(tmp_path, [("who was the prophet aaron", ["Ahärôn"]), ("river peru", ["Peru"])])
    rows, _ = _retrieve(tmp_path, tsv, questions, 1)
    assert rows[0]["ctxs"][0] | {"score": 0} == {"id": "1", "title": "Aaron", "text": 'Aaron ("Ahärôn") was a prophet',
                                                 "score": 0, "has_answer": True}
    assert rows[1]["ctxs"][0]["id"] == "2"
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": 7, "title": "Peru", "text": "Lima is on the Rimac river"}) + "\n")
    rows, _ = _retrieve(tmp_path, gz, _questions(tmp_path, [("rimac river", ["Lima"])]), 1)
    assert rows[0]["ctxs"][0]["id"] == "7" and rows[0]["ctxs"][0]["has_answer"] is True


@pytest.mark.parametrize(("name", "content", "message"), [
    ("c.jsonl", '{"id": "a", "text": "x y"}\n{"id": "b", "text": \n', "c.jsonl:2: malformed JSON"),
    ("c.jsonl", '{"id": "a", "text": "x y"}\n\n{"text": "no id"}\n', "c.jsonl:3: passage without an id"),
    ("c.jsonl", '{"id": "a", "title": "t"}\n', "c.jsonl:1: passage 'a' has no text"),
    ("c.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}\n',
     "c.jsonl:3: passage id 'a' is already used at"),
    ("c.jsonl", "\n", "holds no passages"),
    ("c.tsv", "id\ttext\ttitle\n1\tsome text\tT\n2\tonly two\n", "c.tsv:3: 2 tab-separated columns, the header has 3"),
    ("c.tsv", "1\tsome text\tT\n", "c.tsv:1: a .tsv corpus starts with a header"),
    ("c.txt", "x\n", "a corpus is .jsonl"),
])
def test_malformed_corpora_name_the_line_and_write_nothing(tmp_path: Path, name: str, content: str,
                                                           message: str) -> None:
    corpus = tmp_path / name
    corpus.write_text(content, encoding="utf-8")
    with pytest.raises(QalignError, match=message.replace("(", r"\(")) as info:
        _retrieve(tmp_path, corpus, _questions(tmp_path, [("x", ["y"])]), 1)
    if "already used" in message:
        assert "c.jsonl:1" in str(info.value)
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "index").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_empty_question_too_large_k_and_foreign_folder_are_refused(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    bad = _jsonl(tmp_path / "q.jsonl", [{"question": "zebra", "answer": ["x"]}, {"question": " ?", "answer": ["y"]}])
    with pytest.raises(QalignError, match=r"q.jsonl:2: a record without a question"):
        _retrieve(tmp_path, corpus, bad, 1)
    with pytest.raises(QalignError, match="more than the corpus's 4 passages"):
        _retrieve(tmp_path, corpus, _questions(tmp_path, [("zebra", ["x"])]), 5)
    assert not (tmp_path / "out.jsonl").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(QalignError, match="not a qalign index"):
        run_retrieve(str(corpus), str(tmp_path / "q.jsonl"), str(tmp_path / "out.jsonl"), 1, str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_failed_index_write_leaves_no_index(tmp_path: Path, monkeypatch) -> None:
    import bm25s

    def broken_save(self, *args, **kwargs):
        Path(args[0]).mkdir(parents=True)
        (Path(args[0]) / "data.csc.index.npy").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bm25s.BM25, "save", broken_save)
    with pytest.raises(QalignError, match="cannot write the index .No space left"):
        _retrieve(tmp_path, _corpus(tmp_path), _questions(tmp_path, [("zebra", ["x"])]), 1)
    assert not (tmp_path / "index").exists() and not (tmp_path / "out.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_cli_output_is_read_by_convert_eval(tmp_path: Path, monkeypatch) -> None:
    rng = random.Random(0)
    words = ["river", "mountain", "castle", "forest", "harbor", "desert", "island", "valley"]
    passages = [(f"p{i}", " ".join(rng.choice(words) for _ in range(8))) for i in range(30)]
    passages.append(("gold", "the Eiffel Tower stands in Paris"))
    corpus = _corpus(tmp_path, passages)
    questions = _questions(tmp_path, [("where is the eiffel tower", ["Paris"]), ("castle by the river", ["moat"])])
    monkeypatch.chdir(tmp_path)
    assert main(["retrieve", "--corpus", str(corpus), "--input", str(questions), "--output", "r.jsonl",
                 "--top-k", "3"]) == 0
    assert (tmp_path / "indexes" / "corpus.jsonl.bm25" / "qalign-index.json").is_file()  # the default --index
    assert main(["convert", "eval", "--input", "r.jsonl", "--dataset", "r_dev", "--top-k", "2"]) == 0
    rows = json.loads((tmp_path / "data" / "r_dev.json").read_text())
    assert len(rows) == 2 and rows[0]["answers"] == ["Paris"]
    assert "the Eiffel Tower stands in Paris" in rows[0]["instruction"]
    assert main(["retrieve", "--corpus", str(corpus), "--input", str(questions), "--output", "r.json"]) == 2
