"""Issue 15 items 4, 5, 11-14: no inflated scores from NaN answers, nothing dropped without saying so, duplicate
ids caught at convert time, mistyped paths not taken for Hub ids, and clear messages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qalign.cli import main
from qalign.converters.eval_set import convert_eval
from qalign.converters.job import ConvertJob
from qalign.errors import QalignError
from qalign.evaluators.scoring import evaluate
from qalign.records import load_records, looks_like_hf_id


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_nan_and_infinity_answers_are_dropped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _jsonl(tmp_path / "raw.jsonl", [
        '{"question": "who sang these boots", "answers": [NaN, "Nancy Sinatra"]}',
        '{"question": "what is unknown", "answers": [Infinity, -Infinity]}',
    ])
    records, stats = load_records(str(path))
    assert [(r.question, r.answers) for r in records] == [("who sang these boots", ["Nancy Sinatra"])]
    assert stats.bad_aliases == 3 and stats.skipped_no_answer == 1
    with pytest.raises(QalignError, match=r"raw.jsonl:1: answer alias nan \(JSON NaN/Infinity\)"):
        load_records(str(path), strict=True)
    # the score that issue 15 saw inflated: "no information" no longer matches a gold alias "nan"/"inf"
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": records[0].id, "prediction": "no information"}])
    summary, _ = evaluate(preds, path, tmp_path / "out")
    assert summary["subem"] == 0.0 and summary["n"] == 1
    assert main(["convert", "eval", "--input", str(path), "--dataset", "d", "--dataset-dir", str(tmp_path)]) == 0
    assert "note: 3 NaN/Infinity answer alias(es) dropped" in capsys.readouterr().err


def test_raw_gold_reports_dropped_duplicates_and_unmatchable_aliases(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    path = _jsonl(tmp_path / "raw.jsonl", [
        {"question": "who wrote hamlet", "answers": ["Shakespeare"]},
        {"question": "Who wrote Hamlet?", "answers": ["William Shakespeare"]},  # duplicate, other alias
        {"question": "what is it", "answers": ["the"]},  # can never match
        {"question": "no answer here", "answers": []},
    ])
    records, _ = load_records(str(path))
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": r.id, "prediction": "Shakespeare"} for r in records])
    summary, _ = evaluate(preds, path, tmp_path / "out")
    err = capsys.readouterr().err
    assert summary["n"] == 2
    assert f"gold {path}: read 4 records, scoring 2: 1 duplicate questions dropped, 1 without answers" in err
    assert f"{path}:4" in err
    assert "1 duplicate question(s) with other aliases than the first occurrence" in err and f"{path}:2" in err
    assert "1 answer alias(es) normalise to nothing" in err and f"{path}:3" in err


def test_eval_set_with_unmatchable_gold_and_null_predictions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = _jsonl(tmp_path / "raw.jsonl", [{"question": "q one", "answers": ["The"]}, {"question": "q two",
                                                                                    "answers": ["x"]}])
    convert_eval(ConvertJob(str(raw), "dev", dataset_dir=tmp_path))
    rows = json.loads((tmp_path / "data/dev.json").read_text())
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": rows[0]["id"], "prediction": None},
                                          {"id": rows[1]["id"], "prediction": "x"}])
    capsys.readouterr()
    summary, _ = evaluate(preds, tmp_path / "data/dev.json", tmp_path / "out")
    err = capsys.readouterr().err
    assert summary["subem"] == 0.5
    assert "1 gold question(s) have only aliases that normalise to nothing" in err
    assert f"1 prediction(s) are null and score as empty answers, e.g. {preds}:1" in err


def test_sft_set_as_gold_points_to_convert_eval(tmp_path: Path) -> None:
    from qalign.converters.alpaca import convert_alpaca
    from qalign.evaluators.predictions import load_gold

    raw = _jsonl(tmp_path / "raw.jsonl", [{"question": "q", "answers": ["x"]}])
    convert_alpaca(ConvertJob(str(raw), "train", dataset_dir=tmp_path))
    with pytest.raises(QalignError, match=r"train.json:1: row has no `answers`: this is a training set.*"
                                          r"`qalign convert eval --input RAW"):
        load_gold(tmp_path / "data/train.json")


def test_duplicate_explicit_ids_fail_at_convert(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "raw.jsonl", [{"id": 7, "question": "q one", "answers": ["x"]},
                                           {"id": "7", "question": "q two", "answers": ["y"]}])
    with pytest.raises(QalignError, match=rf"raw.jsonl:2: id '7' was already used at {path}:1"):
        convert_eval(ConvertJob(str(path), "dev", dataset_dir=tmp_path))
    assert not (tmp_path / "data/dev.json").exists()


def test_mistyped_local_path_is_not_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/nq-dev.jsonl").write_text('{"question": "q", "answers": ["x"]}\n')
    assert looks_like_hf_id("owner/name") and not looks_like_hf_id("data/nq-dev")
    start = time.perf_counter()
    with pytest.raises(QalignError, match=r"data/nq-dev: file not found. Did you mean data/nq-dev.jsonl\?"):
        load_records("data/nq-dev")
    assert time.perf_counter() - start < 1.0  # no Hub retries


def test_messages_for_limit_zero_and_unterminated_string(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = _jsonl(tmp_path / "raw.jsonl", [{"question": "q", "answers": ["x"]}])
    assert main(["convert", "eval", "--input", str(raw), "--dataset", "d", "--limit", "0",
                 "--dataset-dir", str(tmp_path)]) == 2
    assert "--limit 0: nothing would be converted; pass --limit 1 or more" in capsys.readouterr().err


def test_content_changes_are_noticed(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "raw.jsonl", [
        {"question": "q one", "answers": ["x"], "ctxs": [{"title": "t"}, {"title": "u", "text": None},
                                                          {"title": "v", "text": "ok"}]},
        {"question": "q two", "answers": None, "answer": ["y"]},  # NQ-open answer after a null DPR answers
        {"question": "???", "answers": ["z"]},  # punctuation only: no question
        {"question": "!!", "answers": ["w"]},
    ])
    records, stats = load_records(str(path))
    assert [(r.question, r.answers) for r in records] == [("q one", ["x"]), ("q two", ["y"])]
    assert [c["text"] for c in records[0].ctxs] == ["", "", "ok"]
    assert stats.empty_passages == 2 and stats.skipped_no_question == 2 and stats.duplicates == 0
    assert any(note.startswith("2 passage(s) without text") for note in stats.notes())


def test_top_k_zero_records_closed_book_prompt(tmp_path: Path) -> None:
    from qalign.converters.registry import read_dataset_info

    raw = _jsonl(tmp_path / "raw.jsonl", [{"question": "q", "answers": ["x"], "ctxs": [{"text": "p"}]}])
    convert_eval(ConvertJob(str(raw), "cb", dataset_dir=tmp_path, top_k=0))
    assert read_dataset_info(tmp_path)["cb"]["qalign"]["prompt"] == "closed_book"
    convert_eval(ConvertJob(str(raw), "ob", dataset_dir=tmp_path, top_k=1))
    assert read_dataset_info(tmp_path)["ob"]["qalign"]["prompt"] == "answer_only"
