"""qalign.converters: records -> prompts -> alpaca / eval datasets registered in dataset_info.json."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

import pytest

from qalign.converters.alpaca import convert_alpaca, pick_answer
from qalign.converters.cli import add_convert_parser
from qalign.converters.eval_set import convert_eval, convert_grpo
from qalign.converters.job import ConvertJob
from qalign.converters.prompts import available_prompts, load_prompt, render_prompt, resolve_prompt
from qalign.converters.registry import overlapping_questions, read_dataset_info, register_dataset
from qalign.errors import QalignError
from qalign.records import QARecord, load_records, stable_id


def dpr(question: str, answers: list[str] | str, n_ctx: int = 3, **extra) -> dict:
    ctxs = [{"title": f"T{i}", "text": f"passage {i} about {question}", "hasanswer": i == 0} for i in range(n_ctx)]
    return {"question": question, "answers": answers, "ctxs": ctxs, **extra}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="qalign")
    add_convert_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "small.jsonl", [
        dpr("who wrote hamlet", ["William Shakespeare", "Shakespeare"]),
        dpr("what is the capital of france", " Paris "),
        dpr("Who wrote Hamlet?", ["Shakespeare"]),  # duplicate of line 1 after normalisation
        dpr("what is the capital of peru", []),  # no answers
    ])


def test_alpaca_rows_and_registry_entry(tmp_path: Path, small: Path, capsys: pytest.CaptureFixture) -> None:
    rc = run_cli(["convert", "alpaca", "--input", str(small), "--dataset", "tiny", "--dataset-dir", str(tmp_path),
                  "--top-k", "2", "--answer", "shortest"])
    assert rc == 0
    rows = json.loads((tmp_path / "data/tiny.json").read_text())
    assert [row["question"] for row in rows] == ["who wrote hamlet", "what is the capital of france"]
    assert [row["output"] for row in rows] == ["Shakespeare", "Paris"]
    assert rows[0]["id"] == stable_id("who wrote hamlet") and rows[0]["id"].startswith("nq-")
    assert rows[0]["input"] == ""
    prompt = rows[0]["instruction"]
    assert "Passage 1 (T0): passage 0 about who wrote hamlet" in prompt and "Passage 2 (T1)" in prompt
    assert "Passage 3" not in prompt  # --top-k 2
    # The question comes before the passages and is restated after them.
    assert prompt.index("Question: who wrote hamlet") < prompt.index("Passage 1") < prompt.rindex("who wrote hamlet")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    data = (tmp_path / "data/tiny.json").read_bytes()  # the entry records the hash and size of the bytes written
    assert info["tiny"] == {
        "file_name": "data/tiny.json",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        "qalign": {"kind": "sft", "source": str(small), "rows": 2, "prompt": "answer_only", "top_k": 2,
                   "answer": "shortest", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
    }
    out = capsys.readouterr()
    assert f"wrote 2 rows to {tmp_path / 'data/tiny.json'}" in out.out
    assert "1 duplicates dropped, 1 skipped without answers" in out.out
    assert f"{small}:4" in out.err  # where the skipped record is


def test_duplicates_and_skips_are_counted(small: Path) -> None:
    records, stats = load_records(str(small))
    assert [r.answers for r in records] == [["William Shakespeare", "Shakespeare"], ["Paris"]]
    assert (stats.read, stats.kept, stats.duplicates, stats.skipped_no_answer) == (4, 2, 1, 1)
    assert stats.skipped_locations == [f"{small}:4"]


def test_strict_fails_on_record_without_answers(small: Path) -> None:
    with pytest.raises(QalignError, match=rf"{small}:4: record has no answers.*--strict"):
        load_records(str(small), strict=True)


def test_record_without_question(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"answers": ["x"]}, dpr("a real question", ["y"])])
    records, stats = load_records(str(path))
    assert len(records) == 1 and stats.skipped_no_question == 1 and stats.skipped_locations == [f"{path}:1"]
    with pytest.raises(QalignError, match=rf"{path}:1: record has no question"):
        load_records(str(path), strict=True)


def test_answer_cleanup_and_own_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [dpr("q one", ["  a ", "", "   ", "a", "b"], id="my-7"),
                                              dpr("q two", [1969], id=42)])
    records, _ = load_records(str(path))
    assert records[0].answers == ["a", "b"] and records[0].id == "my-7"
    assert records[1].answers == ["1969"] and records[1].id == "42"


def test_closed_book_nq_open_input(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "nq-open.jsonl", [{"question": "when was the last moon landing",
                                                     "answer": ["December 1972", "1972"]}])
    result = convert_eval(ConvertJob(str(path), "nq-open-dev", dataset_dir=tmp_path))
    (row,) = json.loads(result.path.read_text())
    assert row["answers"] == ["December 1972", "1972"] and row["output"] == "December 1972"
    assert "Passage" not in row["instruction"] and "{passages}" not in row["instruction"]
    assert row["instruction"] == render_prompt(load_prompt("closed_book"), QARecord("x", row["question"], ["a"]), 5)
    assert read_dataset_info(tmp_path)["nq-open-dev"]["qalign"]["kind"] == "eval"


def test_empty_ctxs_and_top_k_zero_fall_back_to_closed_book() -> None:
    template = load_prompt("answer_only")
    closed = render_prompt(template, QARecord("x", "who is it", ["a"], ctxs=[]), 5)
    assert closed.startswith("Answer the question from your own knowledge") and "passages" not in closed
    with_ctx = QARecord("x", "who is it", ["a"], ctxs=[{"title": "T", "text": "t"}])
    assert render_prompt(template, with_ctx, 0) == closed
    assert "Passage 1 (T): t" in render_prompt(template, with_ctx, 5)


def test_braces_in_passages_and_question_are_kept() -> None:
    record = QARecord("x", "what does {passages} mean", ["a"], ctxs=[{"title": "{x}", "text": "f(x) = {y} {question}"}])
    prompt = render_prompt(load_prompt("answer_only"), record, 1)
    assert "Passage 1 ({x}): f(x) = {y} {question}" in prompt
    assert prompt.count("what does {passages} mean") == 2


def test_prompt_resolution(tmp_path: Path) -> None:
    assert {"answer_only", "think_then_answer", "closed_book"} <= set(available_prompts())
    assert resolve_prompt("think_then_answer").name == "think_then_answer.txt"
    assert "<think>" in load_prompt("think_then_answer")
    own = tmp_path / "mine.txt"
    own.write_text("Q: {question}\n{passages}\n")
    assert resolve_prompt(str(own)) == own
    with pytest.raises(QalignError, match=r"unknown prompt 'nope'.*answer_only"):
        resolve_prompt("nope")
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder")
    with pytest.raises(QalignError, match=r"bad.txt:1: .*\{question\}"):
        load_prompt(str(bad))


def test_gz_input_and_limit(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl.gz", [dpr(f"question number {i}", [f"a{i}"]) for i in range(10)])
    result = convert_alpaca(ConvertJob(str(path), "gz", dataset_dir=tmp_path, limit=4))
    rows = json.loads(result.path.read_text())
    assert [row["output"] for row in rows] == ["a0", "a1", "a2", "a3"] and result.rows == 4


def test_json_list_input(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps([dpr("q one", "x"), dpr("q two", "y")]))
    assert [r.answers for r in load_records(str(path))[0]] == [["x"], ["y"]]


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(dpr("q", "a")) + "\n" + '{"question": "q2", "answers": [\n')
    with pytest.raises(QalignError, match=rf"{path}:2: malformed JSON"):
        convert_alpaca(ConvertJob(str(path), "bad", dataset_dir=tmp_path))
    assert not (tmp_path / "dataset_info.json").exists()


def test_missing_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(QalignError, match="file not found"):
        load_records(str(tmp_path / "missing.jsonl"))
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"question": "caf\u00e9", "answers": ["x"]}\n'.encode("latin-1"))
    with pytest.raises(QalignError, match=r"latin1.jsonl:1: not valid UTF-8.*iconv"):
        load_records(str(latin))


def test_wrong_field_types_are_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answers": ["a"], "ctxs": "oops"}])
    with pytest.raises(QalignError, match=rf"{path}:1: 'ctxs' must be a list"):
        load_records(str(path))


def test_atomic_write_keeps_other_entries_and_leaves_no_temp(tmp_path: Path, small: Path) -> None:
    register_dataset(tmp_path, "theirs", "theirs.json", {"formatting": "sharegpt"})
    convert_alpaca(ConvertJob(str(small), "mine", dataset_dir=tmp_path))
    convert_alpaca(ConvertJob(str(small), "mine", dataset_dir=tmp_path, top_k=1))  # re-run: replaces the entry
    info = read_dataset_info(tmp_path)
    assert list(info) == ["mine", "theirs"]
    assert info["theirs"] == {"file_name": "theirs.json", "formatting": "sharegpt"}
    assert info["mine"]["qalign"]["top_k"] == 1
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mine.json", "mine.json.qkeys"]


def test_malformed_dataset_info_is_reported(tmp_path: Path, small: Path) -> None:
    (tmp_path / "dataset_info.json").write_text('{\n  "a": {\n}}}\n')
    with pytest.raises(QalignError, match=r"dataset_info.json:3: malformed JSON"):
        convert_alpaca(ConvertJob(str(small), "x", dataset_dir=tmp_path))


def test_train_eval_overlap_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [dpr(f"shared question {i}", ["a"]) for i in range(12)]
                        + [dpr("only in train", ["b"])])
    dev = write_jsonl(tmp_path / "dev.jsonl", [dpr(f"Shared question {i}?", ["a"]) for i in range(12)]
                      + [dpr("only in dev", ["c"])])
    convert_alpaca(ConvertJob(str(train), "tr", dataset_dir=tmp_path))
    assert "warning" not in capsys.readouterr().err
    result = convert_eval(ConvertJob(str(dev), "dv", dataset_dir=tmp_path))
    err = capsys.readouterr().err
    assert "warning: 12 question(s) of 'dv' (eval) also appear in training dataset 'tr'" in err
    assert "  - shared question 0" in err and "... and 2 more" in err
    assert len(result.overlaps["tr"]) == 12
    assert overlapping_questions(tmp_path, ["only in train", "nothing"], "eval") == {"tr": ["only in train"]}
    assert overlapping_questions(tmp_path, ["only in train"], "sft") == {}  # same side: no warning
    # GRPO's prompts are training data: warned against the eval set, not against the SFT set of the same questions
    grpo = convert_grpo(ConvertJob(str(train), "gr", dataset_dir=tmp_path))
    err = capsys.readouterr().err
    assert "'gr' (grpo) also appear in evaluation dataset 'dv'" in err and "dataset 'tr'" not in err
    assert set(grpo.overlaps) == {"dv"} and len(grpo.overlaps["dv"]) == 12
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["gr"]["qalign"]["kind"] == "grpo" and info["gr"]["columns"] == info["dv"]["columns"]
    assert json.loads((tmp_path / "data/gr.json").read_text())[0]["answers"] == ["a"]
    # a GRPO set that an older qalign registered as kind eval is re-registered from the same file; another is not
    convert_eval(ConvertJob(str(train), "old_grpo", dataset_dir=tmp_path))
    convert_grpo(ConvertJob(str(train), "old_grpo", dataset_dir=tmp_path))
    assert json.loads((tmp_path / "dataset_info.json").read_text())["old_grpo"]["qalign"]["kind"] == "grpo"
    with pytest.raises(QalignError, match="dataset 'dv' has kind eval; writing kind grpo"):
        convert_grpo(ConvertJob(str(train), "dv", dataset_dir=tmp_path))


def test_hf_id_offline_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QalignError, match="google-research-datasets/nq_open does not exist: it is neither a local "
                                          r"file .*HF_HUB_OFFLINE is set.*local \.json/\.jsonl\(\.gz\) file"):
        load_records("google-research-datasets/nq_open", split="validation")


def test_hf_id_connection_error_and_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("qalign.hub._hub_answers", lambda endpoint: True)  # as if online (this machine may not be)
    monkeypatch.chdir(tmp_path)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'owner/name' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(QalignError, match="owner/name: the Hugging Face Hub is unreachable"):
        load_records("owner/name")

    def fake_hub(path: str, split: str):
        assert (path, split) == ("owner/name", "validation")
        return datasets.Dataset.from_list([{"question": "q one", "answer": ["a"]}, {"question": "q two", "answer": []}])

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    records, stats = load_records("owner/name", split="validation")
    assert [(r.question, r.answers, r.ctxs) for r in records] == [("q one", ["a"], [])]
    assert stats.skipped_locations == ["owner/name[validation]:2"]


def test_cli_reports_error_text_and_help(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(QalignError, match="unknown prompt 'nope'"):
        run_cli(["convert", "eval", "--input", "x.jsonl", "--dataset", "d", "--prompt", "nope"])
    with pytest.raises(QalignError, match="invalid dataset name"):
        convert_alpaca(ConvertJob(str(tmp_path / "x.jsonl"), "../escape", dataset_dir=tmp_path))
    for fmt in ("alpaca", "eval"):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["convert", fmt, "--help"])
        assert exit_info.value.code == 0
        assert "--dataset-dir" in capsys.readouterr().out
    assert run_cli(["convert"]) == 2  # no format: prints help


def test_pick_answer_policies() -> None:
    assert pick_answer(["Leonardo da Vinci", "Leonardo"], "first") == "Leonardo da Vinci"
    assert pick_answer(["Leonardo da Vinci", "Leonardo"], "shortest") == "Leonardo"
    assert pick_answer(["ab", "cd"], "shortest") == "ab"


def test_every_format_the_library_lists_is_a_convert_subcommand() -> None:
    """The study plan asks converters/job.py's FORMAT_KINDS which converters exist; the CLI must offer the same."""
    from qalign.converters.cli import SUBCOMMANDS
    from qalign.converters.job import FORMAT_KINDS

    assert [spec.name for spec in SUBCOMMANDS] == list(FORMAT_KINDS)
