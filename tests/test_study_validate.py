"""Issue 15 items 9-10: study values are checked when the file is read, and `qalign study --dry-run` (like a real
run, before its first step) checks paths, prompts and every LLaMA-Factory key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qalign.cli import main
from qalign.errors import QalignError
from qalign.study.config import build_config, load_study
from qalign.study.validate import check_study

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "recipes/smollm2-135m/study.yaml"


@pytest.mark.parametrize("assignment, message", [
    ("top_k=abc", "`top_k` must be an integer >= 0, got 'abc'"),
    ("top_k=-3", "`top_k` must be an integer >= 0, got -3"),
    ("cot_min_f1=abc", "`cot_min_f1` must be a number >= 0 and <= 1"),
    ("bootstrap.level=2", "`bootstrap.level` must be a number > 0 and < 1, got 2"),
    ("bootstrap.samples=-1", "`bootstrap.samples` must be an integer >= 1"),
    ("bootstrap.sample=5", "bootstrap: unknown key\\(s\\) sample"),
    ("train_limit=-5", "`train_limit` must be an integer >= 1 \\(or null\\)"),
    ("top_k=[1", "override 'top_k=\\[1': the value is not valid YAML"),
])
def test_bad_values_fail_when_read(assignment: str, message: str) -> None:
    with pytest.raises(QalignError, match=message):
        load_study(STUDY, [assignment])


def _study(tmp_path: Path, *assignments: str):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    for path in (train, test):
        path.write_text('{"question": "q", "answers": ["a"]}\n')
    model = tmp_path / "model"
    model.mkdir()
    return load_study(STUDY, [f"train={train}", f"test={test}", f"model={model}", *assignments])


def test_shipped_study_passes(tmp_path: Path) -> None:
    check_study(_study(tmp_path))
    auto = tmp_path / "auto"  # `auto` is resolved by `qalign train` from the mined data's counts
    auto.mkdir()
    check_study(_study(auto, "overrides.kto.kto_chosen_weight=auto", "mining_args.margin=0.2"))
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    with pytest.raises(QalignError, match="overrides.kto.kto_chosen_weight='heavy' is not of type float"):
        check_study(_study(heavy, "overrides.kto.kto_chosen_weight=heavy"))


@pytest.mark.parametrize("assignment, message", [
    ("test=data/nq-missing.jsonl", "test: data/nq-missing.jsonl is not a file"),
    ("model=./models/nope", "model: ./models/nope does not exist"),
    ("prompt=nope", "prompt: unknown prompt 'nope'"),
    ("overrides.sft.max_stpes=5", "overrides.sft.max_stpes: unknown key \\(did you mean 'max_steps'\\?\\)"),
    ("overrides.grpo.num_generations=abc", "overrides.grpo.num_generations='abc' is not of type int"),
    ("overrides.sft.num_generations=4", "overrides.sft.num_generations: unknown key"),
    ("train_args.bf16=maybe", "train_args.bf16='maybe' is not of type bool"),
    ("overrides.cot.predict.max_new_tokns=9", "overrides.cot.predict.max_new_tokns: unknown key"),
    ("mining_args.num_sample=3", "mining_args.num_sample: unknown key .*did you mean 'num_samples'"),
    ("cot_teacher=missing.jsonl", "cot_teacher: .*missing.jsonl is not a file"),
])
def test_problems_a_run_would_meet(assignment: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(QalignError, match=message):
        check_study(_study(tmp_path, assignment))


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    cfg = _study(tmp_path, "test=nope.jsonl", "overrides.sft.max_stpes=5", "prompt=nope")
    with pytest.raises(QalignError, match=r"3 problem\(s\) before any step runs"):
        check_study(cfg)


def test_dry_run_refuses_a_broken_study(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(["study", str(STUDY), "test=missing.jsonl", "--dry-run"])
    assert rc == 2 and "test: missing.jsonl is not a file" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_build_config_still_accepts_defaults() -> None:
    cfg = build_config({"name": "u", "model": "m", "template": "t", "recipes": "r", "train": "a", "test": "b",
                        "train_limit": None, "bootstrap": {"level": 0.9}})
    assert cfg.level == 0.9 and cfg.train_limit is None and cfg.top_k == 5
