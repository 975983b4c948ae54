"""The study's `retrieve:` block: bare QA pairs + a corpus -> retrieve steps first, the data steps read their
output, recall@k beside the retrieved files and in the report; a rerun skips them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qalign.errors import QalignError
from qalign.study.config import build_config
from qalign.study.plan import build_plan
from qalign.study.report import retrieval_lines
from qalign.study.runner import run_steps
from qalign.study.validate import _path_problems

BASE = {"name": "r", "model": "m", "template": "smollm2", "recipes": "recipes/smollm2-135m", "train": "tr.jsonl",
        "test": "dev.jsonl", "methods": ["sft"], "top_k": 2}


def _write(tmp_path: Path) -> None:
    passages = [("p1", "Paris", "Paris is the capital of France"), ("p2", "Berlin", "Berlin is the capital of Germany"),
                ("p3", "Rome", "Rome is the capital of Italy"), ("p4", "Nile", "The Nile flows through Egypt")]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n"
                                              for i, t, x in passages))
    (tmp_path / "tr.jsonl").write_text(json.dumps({"question": "capital of germany", "answer": ["Berlin"]}) + "\n"
                                       + json.dumps({"question": "river through egypt", "answer": ["Nile"]}) + "\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps({"question": "capital of italy", "answer": ["Rome"]}) + "\n"
                                        + json.dumps({"question": "capital of spain", "answer": ["Madrid"]}) + "\n")


def test_the_retrieve_block_runs_before_the_data_steps(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path)
    cfg = build_config({**BASE, "retrieve": {"corpus": "c.jsonl", "top_k": 3}})
    assert cfg.train == "reports/r/retrieved/train.jsonl" and cfg.test == "reports/r/retrieved/test.jsonl"
    assert cfg.split == "dev"  # still guessed from the raw test file's name
    # the retrieved files do not exist yet: the raw questions and the corpus are what must exist
    assert not [p for p in _path_problems(cfg) if p.startswith(("train:", "test:", "retrieve"))]
    (tmp_path / "tr.jsonl").rename("gone.jsonl")
    assert any(p.startswith("train: tr.jsonl") for p in _path_problems(cfg))
    (tmp_path / "gone.jsonl").rename("tr.jsonl")
    steps = build_plan(cfg)
    assert [s.name for s in steps[:2]] == ["retrieve train", "retrieve test"]
    assert steps[1].needs == ("retrieve train",)  # one index build, not two racing
    assert steps[0].argv == ["retrieve", "--corpus", "c.jsonl", "--input", "tr.jsonl", "--output",
                             "reports/r/retrieved/train.jsonl", "--top-k", "3", "--index", "indexes/c.jsonl.bm25",
                             "--title-weight", "1"]
    by_name = {s.name: s for s in steps}
    assert "retrieve test" in by_name["data test"].needs and "retrieve train" in by_name["data train"].needs
    wanted = [by_name[name] for name in ("retrieve train", "retrieve test", "data test")]
    results = run_steps(wanted, cfg.output, echo=lambda *_: None)
    assert {name: r.state for name, r in results.items()} == {"retrieve train": "ran", "retrieve test": "ran",
                                                               "data test": "ran"}, results
    recall = json.loads((tmp_path / "reports/r/retrieved/test.recall.json").read_text())["recall"]
    assert recall == {"1": 0.5, "3": 0.5}  # Rome first for italy; Madrid is in no passage
    rows = json.loads((tmp_path / "data" / "r_test.json").read_text())
    assert "Rome is the capital of Italy" in rows[0]["instruction"]
    assert retrieval_lines(cfg)[0].endswith("answer recall train @1 1.000, @3 1.000; test @1 0.500, @3 0.500.")
    again = run_steps(wanted, cfg.output, echo=lambda *_: None)
    assert {r.state for r in again.values()} == {"done"}


def test_retrieve_block_errors(tmp_path: Path) -> None:
    with pytest.raises(QalignError, match="retrieve: needs `corpus`"):
        build_config({**BASE, "retrieve": {"top_k": 3}})
    with pytest.raises(QalignError, match="retrieve.top_k 1 is below top_k 2"):
        build_config({**BASE, "retrieve": {"corpus": "c.jsonl", "top_k": 1}})
    cfg = build_config({**BASE, "retrieve": {"corpus": str(tmp_path / "none.jsonl")}})
    assert cfg.retrieve["top_k"] == 20 and any(p.startswith("retrieve.corpus:") for p in _path_problems(cfg))
    assert retrieval_lines(build_config(BASE)) == []
    validating = build_config({**BASE, "train_limit": 1, "val_limit": 1, "retrieve": {"corpus": "c.jsonl"}})
    assert [s.name for s in build_plan(validating) if s.name.startswith("retrieve")] == ["retrieve train"]
