"""`qalign convert cot`: teacher reasoning filtered by answer F1, written as `<think>` SFT rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qalign.cli import main
from qalign.converters.cot import COT_PROMPT, convert_cot, format_cot, read_teacher, split_output
from qalign.converters.job import ConvertJob
from qalign.errors import QalignError
from qalign.evaluators.metrics import score_all
from qalign.records import stable_id

RAW = [
    {"id": "q-paris", "question": "What is the capital of France?", "answers": ["Paris"],
     "ctxs": [{"title": "France", "text": "Paris is the capital of France."}]},
    {"question": "Who wrote Pride and Prejudice?", "answers": ["Jane Austen", "Austen"],
     "ctxs": [{"title": "Novel", "text": "Pride and Prejudice is a novel by Jane Austen."}]},
    {"question": "What is the capital of Peru?", "answers": ["Lima"], "ctxs": []},
    {"question": "Which river flows through Rome?", "answers": ["Tiber"], "ctxs": []},
]
TEACHER = [
    {"id": "q-paris", "reasoning": "Passage 1 says Paris is the capital.", "answer": "Paris"},  # kept (F1 1)
    {"question": "who wrote pride and prejudice", "output": "<think>The passage names the author.</think> Jane Austen"},
    {"question": "Who wrote Pride and Prejudice?", "reasoning": "weaker", "answer": "Austen"},  # F1 1 too: dup
    {"question": "What is the capital of Peru?", "reasoning": "I think Cusco.", "answer": "Cusco"},  # low F1
    {"question": "What is the capital of Chile?", "reasoning": "Santiago.", "answer": "Santiago"},  # unmatched
    {"question": "Which river flows through Rome?", "answer": "Tiber"},  # no reasoning
    {"question": "Which river flows through Rome?", "reasoning": "The Tiber river.", "answer": "the Tiber River"},
]


def _write(folder: Path) -> tuple[Path, Path]:
    raw, teacher = folder / "raw.jsonl", folder / "teacher.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in RAW))
    teacher.write_text("".join(json.dumps(r) + "\n" for r in TEACHER))
    return raw, teacher


def test_split_and_format() -> None:
    assert split_output("<think>\nstep one\n</think>\n\nParis") == ("step one", "Paris")
    assert split_output("just Paris") == ("", "just Paris")
    assert format_cot(" because ", " Paris ") == "<think>\nbecause\n</think>\n\nParis"
    assert format_cot("r", "Paris", "The answer is:") == "<think>\nr\n</think>\n\nThe answer is: Paris"


def test_convert_cot_keeps_rows_above_the_f1_threshold(tmp_path: Path) -> None:
    raw, teacher = _write(tmp_path)
    job = ConvertJob(str(raw), "t_cot", dataset_dir=tmp_path, top_k=1, prompt=COT_PROMPT)
    result, counts = convert_cot(job, teacher)
    rows = json.loads((tmp_path / "data/t_cot.json").read_text())
    # Tiber: "the tiber river" vs "tiber": p = 1/2 ("the" dropped), r = 1 -> F1 0.667 < 0.9 -> dropped
    assert [row["id"] for row in rows] == ["q-paris", stable_id("Who wrote Pride and Prejudice?")]
    # the CoT prompt declares the answer marker, so the target writes it (and the scorer reads past it)
    assert rows[0]["output"] == "<think>\nPassage 1 says Paris is the capital.\n</think>\n\nThe answer is: Paris"
    assert rows[1]["output"] == "<think>\nThe passage names the author.\n</think>\n\nThe answer is: Jane Austen"
    assert "First think inside <think>" in rows[0]["instruction"]  # the CoT prompt (the CLI's default)
    assert 'After </think>, write "The answer is:" and then only the short answer' in rows[0]["instruction"]
    assert "Passage 1 (France): Paris is the capital of France." in rows[0]["instruction"]
    assert rows[1]["teacher_f1"] == 1.0
    assert dict(counts) == {"kept": 2, "duplicate": 1, "low_f1": 2, "unmatched": 1, "no_reasoning": 1, "drawn": 7,
                            "reached": 3}  # reached: kept + the duplicate
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["t_cot"]
    assert entry["qalign"]["kind"] == "cot" and entry["qalign"]["min_f1"] == 0.9
    assert entry["qalign"]["prompt"] == "think_then_answer" and result.rows == 2

    # a lower threshold lets the partial Tiber answer in
    _, looser = convert_cot(ConvertJob(str(raw), "t_cot", dataset_dir=tmp_path, prompt=COT_PROMPT), teacher, min_f1=0.6)
    assert looser["kept"] == 3 and looser["low_f1"] == 1


def test_teacher_answers_go_through_the_answer_extractor(tmp_path: Path) -> None:
    # old code: the marker stayed in the answer (F1 2/3 -> low f1) and an unclosed block had no reasoning
    assert split_output("<think>\nPassage 1 says so.\n</think>\nThe answer is: Paris") == ("Passage 1 says so.",
                                                                                            "Paris")
    assert split_output("<think>\nPassage 1 says so. The answer is: Paris") == ("Passage 1 says so.", "Paris")
    assert split_output("<think>\nstill thinking") == ("", "")
    raw, teacher = tmp_path / "raw.jsonl", tmp_path / "teacher.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in RAW[:2]))
    teacher.write_text(json.dumps({"id": "q-paris", "samples": [
        {"output": "<think>\nPassage 1 says it. The answer is: Paris"}]}) + "\n" + json.dumps(
        {"question": RAW[1]["question"], "output": "<think>The passage names her.</think>The answer is: Jane Austen"})
        + "\n")
    _, counts = convert_cot(ConvertJob(str(raw), "m", dataset_dir=tmp_path, prompt="answer_only"), teacher)
    rows = json.loads((tmp_path / "data/m.json").read_text())
    assert counts["kept"] == 2 and [r["teacher_f1"] for r in rows] == [1.0, 1.0]
    # a prompt that declares no marker: the target is the bare answer
    assert rows[0]["output"] == "<think>\nPassage 1 says it.\n</think>\n\nParis"


def test_convert_cot_command(tmp_path: Path, monkeypatch, capsys) -> None:
    raw, teacher = _write(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "cot", "--input", str(raw), "--teacher", str(teacher), "--dataset", "c",
                 "--min-f1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "kept 3 teacher rows (one per question); dropped: 1 unmatched, 1 no reasoning, 1 low f1, 1 duplicate" in out
    assert "wrote 3 rows to data/c.json" in out


def test_bad_teacher_rows_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "reasoning": "r"}) + "\n")
    with pytest.raises(QalignError, match=r"t.jsonl:1: teacher row needs `answer`"):
        read_teacher(path)
    path.write_text(json.dumps({"answer": "x"}) + "\n")
    with pytest.raises(QalignError, match=r"t.jsonl:1: teacher row has neither `id` nor `question`"):
        read_teacher(path)
    raw, teacher = _write(tmp_path)
    with pytest.raises(QalignError, match="no teacher row was kept"):
        convert_cot(ConvertJob(str(raw), "none", dataset_dir=tmp_path), teacher, min_f1=1.01)


def test_evaluator_scores_only_the_final_answer() -> None:
    prediction = format_cot("London is large, but the passage says Paris.", "Paris")
    assert score_all(prediction, ["Paris"]) == {"subem": 1.0, "em": 1.0, "f1": 1.0}
    assert score_all(format_cot("Paris is wrong here.", "London"), ["Paris"])["subem"] == 0.0
