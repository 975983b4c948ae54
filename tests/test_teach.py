"""Issue 16: `qalign teach` with the local teacher on the tiny Qwen3 (through the batch engine), the teacher file
`convert cot` reads, and the study's CoT row with `cot_teacher: self` (plan, validation, report section)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qalign.cli import main
from qalign.converters.cot import COT_PROMPT, convert_cot, read_teacher
from qalign.converters.job import ConvertJob
from qalign.errors import QalignError
from qalign.generate.teach import _force_answers, first_line_answer, teacher_settings
from qalign.study.config import build_config
from qalign.study.plan import build_plan
from qalign.study.report import teacher_section
from qalign.study.runner import StepResult
from qalign.study.validate import check_study
from qalign.text import ANSWER_MARKER

RAW = [{"id": f"q{i}", "question": f"what is the capital of {c}", "answers": [a],
        "ctxs": [{"title": c.title(), "text": f"{a} is the capital of {c}."}]}
       for i, (c, a) in enumerate([("france", "paris"), ("japan", "tokyo"), ("peru", "lima")])]


def _raw(folder: Path) -> Path:
    path = folder / "raw.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RAW))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_local_teacher_writes_resumes_and_feeds_convert_cot(tiny_qwen3: Path, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    monkeypatch.chdir(tmp_path)
    raw = _raw(tmp_path)
    argv = ["teach", "--input", str(raw), "--model", str(tiny_qwen3), "--template", "qwen3_nothink", "--top-k", "1",
            "--num-samples", "2", "--max-new-tokens", "4", "--answer-tokens", "3", "--device", "cpu"]
    assert main([*argv, "--output", "a.jsonl", "--limit", "2"]) == 0
    first = (tmp_path / "a.jsonl").read_bytes()
    header, *rows = _lines(tmp_path / "a.jsonl")
    assert header["qalign_teacher"] == 1 and header["teacher"]["model"] == str(tiny_qwen3)
    assert header["prompt"] == COT_PROMPT and header["num_samples"] == 2
    assert [r["id"] for r in rows] == ["q0", "q1"] and all(len(r["samples"]) == 2 for r in rows)
    # every sample starts reasoning, and the unclosed ones were closed and answered (budget forcing)
    assert all(s["output"].startswith("<think>") and "</think>" in s["output"] for r in rows for s in r["samples"])

    # an interrupted run (a partial last line) resumes: the finished questions are kept byte for byte
    with (tmp_path / "a.jsonl").open("ab") as handle:
        handle.write(b'{"id": "q2", "samp')
    assert main([*argv, "--output", "a.jsonl"]) == 0
    after = (tmp_path / "a.jsonl").read_bytes()
    assert after.startswith(first) and [r["id"] for r in _lines(tmp_path / "a.jsonl")[1:]] == ["q0", "q1", "q2"]
    assert "2 already done, 1 asked" in capsys.readouterr().out
    summary = json.loads((tmp_path / "a.summary.json").read_text())
    assert summary["questions"] == 3 and summary["cached"] == 2 and summary["asked"] == 1

    # per-row noise keyed by (seed, question id, sample): the same questions give the same samples in one go
    assert main([*argv, "--output", "b.jsonl"]) == 0
    assert _lines(tmp_path / "b.jsonl") == _lines(tmp_path / "a.jsonl")
    with pytest.raises(SystemExit):  # other settings must not extend this file
        raise SystemExit(main([*argv, "--output", "a.jsonl", "--temperature", "0.5"]))
    assert "written with other settings (temperature: 0.7 -> 0.5)" in capsys.readouterr().err

    teacher_rows = read_teacher(tmp_path / "a.jsonl")  # the settings line is skipped; one row per sample
    assert len(teacher_rows) == 6 and {r.key_id for r in teacher_rows} == {"q0", "q1", "q2"}


def test_convert_cot_counts_teach_samples(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    teacher = tmp_path / "t.jsonl"
    rows = [{"qalign_teacher": 1},
            {"id": "q0", "samples": [{"output": "<think>Passage 1 names it.</think>\n\nParis"},
                                     {"output": "<think>Hm.</think>\n\nLyon"}, {"output": "Paris"}]},
            {"id": "q1", "samples": [{"output": "<think>It says Tokyo.</think>\n\nTokyo"},
                                     {"output": "<think>Tokyo again.</think>\n\nTokyo"}]}]
    teacher.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, counts = convert_cot(ConvertJob(str(raw), "c", dataset_dir=tmp_path, prompt=COT_PROMPT), teacher)
    assert result.rows == 2 and counts["drawn"] == 5 and counts["reached"] == 3
    assert (counts["low_f1"], counts["no_reasoning"], counts["duplicate"]) == (1, 1, 1)
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["c"]["qalign"]
    assert (entry["drawn"], entry["reached"], entry["rows"]) == (5, 3, 2)


def test_first_line_answer() -> None:
    assert first_line_answer("<think>\nr\n</think>\n\nParis\nQuestion: next") == "<think>\nr\n</think>\n\nParis"
    assert first_line_answer("no think\nat all") == "no think\nat all"
    # the marker alone on its line keeps the answer line after it (old code kept only the marker: no answer)
    assert first_line_answer("<think>r</think>\n\nThe answer is:\nParis\nQuestion: next") == \
        "<think>r</think>\n\nThe answer is:\nParis"


class _FakeSampler:
    """What `_force_answers` uses of a Sampler: encode, and continue_ids returning a fixed answer per sample."""

    def __init__(self) -> None:
        self.tokenizer = self.setup = self
        self.suffixes: list = []

    def encode(self, text: str, add_special_tokens: bool = True) -> str:
        return text

    def continue_ids(self, prompts, keys, n, tokens, suffixes):
        self.suffixes = suffixes
        return [[" Lima"] * n for _ in prompts]


def test_budget_forcing_closes_the_reasoning_with_the_prompts_answer_marker() -> None:
    from qalign.generate.sampling import Question

    sampler = _FakeSampler()
    texts = [["<think>\ncut at the cap", "<think>\nr</think>\n\nLima", "<think>\nr The answer is: Lima"]]
    out = _force_answers(sampler, [Question("q", "q?", ["Lima"], "p")], texts, 8, ANSWER_MARKER)
    # forced: closed, then the marker, then the continuation; the others needed none (one already states the
    # answer after the marker inside its unclosed block: old code forced it too)
    assert out == [["<think>\ncut at the cap\n</think>\n\nThe answer is: Lima", texts[0][1], texts[0][2]]]
    assert sampler.suffixes[0][0] == "<think>\ncut at the cap\n</think>\n\nThe answer is:"
    args = type("A", (), {"url": None, "model": "m", "adapter": None, "template": "t", "seed": 1, "prefix": "",
                          "answer_tokens": 0, "prompt": COT_PROMPT, "top_k": 1, "num_samples": 1,
                          "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 4})()
    assert teacher_settings(args)["answer_marker"] == ANSWER_MARKER  # a file from the marker-less prompt is refused
    args.prompt = "answer_only"
    assert teacher_settings(args)["answer_marker"] is None


BASE = {"name": "u", "model": "m", "template": "smollm2", "recipes": "recipes/smollm2-135m", "train": "tr.jsonl",
        "test": "te.jsonl", "methods": ["sft"]}


def test_study_plan_with_self_teacher(tmp_path: Path, monkeypatch) -> None:
    cfg = build_config({**BASE, "cot_teacher": "self", "teach_args": {"num_samples": 3}, "train_limit": 10})
    steps = {step.name: step for step in build_plan(cfg)}
    teach = steps["teach"]
    assert teach.argv[:5] == ["teach", "--input", "tr.jsonl", "--output", "data/u_teacher.jsonl"]
    assert " --model m --template smollm2" in " ".join(teach.argv) and "--adapter" not in teach.argv
    assert ["--num-samples", "3"] == teach.argv[-2:] and "--limit 10" in " ".join(teach.argv)
    assert teach.done == Path("data/u_teacher.summary.json")
    assert steps["data cot"].needs == ("teach",) and "data/u_teacher.jsonl" in steps["data cot"].argv
    assert steps["train cot-s42"].needs == ("data cot",)
    # base_model_cot: the base model with the think prompt, no training, scored like every run (<think> stripped)
    base_cot = steps["predict base_cot"].recipe.keys  # the keys its recipe file gets on top of predict.yaml
    assert base_cot["eval_dataset"] == "u_test_cot" and "eval base_cot" in steps
    assert "adapter_name_or_path" not in base_cot

    sft = build_config({**BASE, "cot_teacher": "self", "from_sft": ["cot"]})
    steps = {step.name: step for step in build_plan(sft)}
    assert "teach" not in steps and steps["teach_sft-s42"].needs == ("train sft-s42",)
    assert "--adapter" in steps["teach_sft-s42"].argv and steps["data cot_sft-s42"].needs == ("teach_sft-s42",)
    assert steps["train cot-s42"].recipe.keys["dataset"] == "u_cot_sft-s42" and sft.label("cot") == "cot (sft teacher)"
    assert not any(a.startswith("adapter_name_or_path") for a in steps["train cot-s42"].argv)  # trains from base

    endpoint = build_config({**BASE, "cot_teacher": {"url": "http://127.0.0.1:9/v1", "served_model": "big"}})
    teach = {step.name: step for step in build_plan(endpoint)}["teach"]
    assert " --url http://127.0.0.1:9/v1 --served-model big" in " ".join(teach.argv) and "--model" not in teach.argv

    for spec, message in [({"cot_teacher": "http://x/v1"}, "write an endpoint as a mapping"),
                          ({"cot_teacher": {"url": "x"}}, "an endpoint is a mapping"),
                          ({"cot_teacher": "t.jsonl", "from_sft": ["cot"]}, "needs cot_teacher: self")]:
        with pytest.raises(QalignError, match=message):
            build_config({**BASE, **spec})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QalignError, match="teach_args.num_sample: unknown key .*did you mean 'num_samples'"):
        check_study(build_config({**BASE, "cot_teacher": "self", "teach_args": {"num_sample": 2}}))


def test_report_says_what_the_teacher_drew_and_dropped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = build_config({**BASE, "cot_teacher": "self"})
    steps = build_plan(cfg)
    info = {"u_cot": {"qalign": {"kind": "cot", "rows": 7, "drawn": 40, "reached": 9,
                                 "dropped": {"low_f1": 25, "no_reasoning": 4, "duplicate": 2, "unmatched": 0}}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    text = "\n".join(teacher_section(cfg, steps, {}))
    assert "the study's model `m`" in text and "F1 >= 0.9" in text
    assert "| u_cot | 40 | 9 | 7 | 25 low f1, 4 no reasoning, 2 duplicate |" in text
    (tmp_path / "dataset_info.json").write_text("{}")
    failed = {"data cot": StepResult("failed", "data cot failed (exit 2: no teacher row was kept)")}
    assert "| u_cot | — | — | — | data cot failed (exit 2: no teacher row was kept) |" in "\n".join(
        teacher_section(cfg, steps, failed))
