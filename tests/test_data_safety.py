"""Issue 23 items 3-5: convert never replaces a data file qalign did not write; a study's data step is done only when
its registry entry describes the file on disk; `--methods` is the whole list of rows, CoT included."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qalign.converters import registry
from qalign.converters.alpaca import convert_alpaca
from qalign.converters.eval_set import convert_eval
from qalign.converters.job import ConvertJob
from qalign.converters.registry import describes_file, read_dataset_info
from qalign.errors import QalignError
from qalign.study.config import build_config, load_study
from qalign.study.plan import build_plan
from qalign.study.runner import run_steps

BASE = {"name": "u", "model": "m", "template": "smollm2", "recipes": "recipes/smollm2-135m", "train": "tr.jsonl",
        "test": "te.jsonl"}


def _records(path: Path, n: int = 3, prefix: str = "q") -> Path:
    path.write_text("".join(json.dumps({"question": f"{prefix} {i}", "answers": [f"a{i}"]}) + "\n" for i in range(n)))
    return path


def test_a_hand_made_data_file_needs_force(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    mine = tmp_path / "data/mine.json"
    mine.write_text('[{"instruction": "mine"}]')
    source = str(_records(tmp_path / "raw.jsonl"))
    with pytest.raises(QalignError, match=r"data/mine.json: exists and was not written by qalign .*--force"):
        convert_alpaca(ConvertJob(source, "mine", dataset_dir=tmp_path))
    assert mine.read_text() == '[{"instruction": "mine"}]' and not (tmp_path / "dataset_info.json").exists()
    convert_alpaca(ConvertJob(source, "mine", dataset_dir=tmp_path, force=True))
    assert len(json.loads(mine.read_text())) == 3 and describes_file(tmp_path, "mine", "sft")


def test_llama_factory_checkout_keeps_its_files_and_its_one_registry(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """LLaMA-Factory keeps `data/dataset_info.json` and `data/identity.json`: `--dataset identity` (dataset dir `.`)
    neither overwrites identity.json nor starts a second registry beside LLaMA-Factory's."""
    from qalign.cli import main

    (tmp_path / "data").mkdir()
    identity = tmp_path / "data/identity.json"
    identity.write_text('[{"instruction": "hi", "output": "I am {{name}}"}]')
    theirs = {"identity": {"file_name": "identity.json"}}
    (tmp_path / "data/dataset_info.json").write_text(json.dumps(theirs))
    source = str(_records(tmp_path / "raw.jsonl"))
    args = ["convert", "alpaca", "--input", source, "--dataset-dir", str(tmp_path)]
    assert main([*args, "--dataset", "identity"]) == 2
    err = capsys.readouterr().err
    assert f"{identity}: exists and was not written by qalign" in err and "--force" in err
    assert main([*args, "--dataset", "other"]) == 2
    err = capsys.readouterr().err
    assert "LLaMA-Factory's dataset registry is here" in err and f"--dataset-dir {tmp_path / 'data'}" in err
    assert identity.read_text() == '[{"instruction": "hi", "output": "I am {{name}}"}]'
    assert not (tmp_path / "dataset_info.json").exists() and not (tmp_path / "data/other.json").exists()
    # the fix the message names: register in LLaMA-Factory's registry, its entries kept
    assert main(["convert", "alpaca", "--input", source, "--dataset-dir", str(tmp_path / "data"),
                 "--dataset", "other"]) == 0
    info = read_dataset_info(tmp_path / "data")
    assert info["identity"] == theirs["identity"] and info["other"]["file_name"] == "data/other.json"


def test_a_data_file_changed_since_qalign_wrote_it_needs_force(tmp_path: Path) -> None:
    source = str(_records(tmp_path / "raw.jsonl"))
    convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path))
    convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path, top_k=1))  # qalign's own file: replaced freely
    path = tmp_path / "data/dev.json"
    path.write_text(path.read_text().replace("q 0", "edited by hand"))
    assert not describes_file(tmp_path, "dev", "eval")
    with pytest.raises(QalignError, match=r"data/dev.json: exists and has changed since qalign wrote it"):
        convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path))
    assert "edited by hand" in path.read_text()
    convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path, force=True))
    assert describes_file(tmp_path, "dev", "eval")


def test_an_entry_from_before_hashes_still_vouches_for_its_file(tmp_path: Path) -> None:
    source = str(_records(tmp_path / "raw.jsonl"))
    convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path))
    info = read_dataset_info(tmp_path)
    for key in ("sha256", "bytes"):
        del info["dev"]["qalign"][key]
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    assert not describes_file(tmp_path, "dev")  # nothing to check the file against: a study reruns the step once
    convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path))  # ... and that rerun is allowed
    assert describes_file(tmp_path, "dev", "eval")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no cleanup that catches Exception."""


def test_a_kill_between_registering_and_renaming_reruns_and_is_allowed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    source = _records(tmp_path / "raw.jsonl")
    convert_eval(ConvertJob(str(source), "dev", dataset_dir=tmp_path))
    old = (tmp_path / "data/dev.json").read_bytes()
    _records(source, n=5)
    real_replace = os.replace

    def killed_at_rename(src, dst):
        if str(dst).endswith("dev.json"):
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_rename)
    with pytest.raises(Killed):
        convert_eval(ConvertJob(str(source), "dev", dataset_dir=tmp_path))
    monkeypatch.undo()
    assert (tmp_path / "data/dev.json").read_bytes() == old
    assert read_dataset_info(tmp_path)["dev"]["qalign"]["rows"] == 5  # registered, file not in place
    assert not describes_file(tmp_path, "dev", "eval")
    convert_eval(ConvertJob(str(source), "dev", dataset_dir=tmp_path))  # still qalign's file: no --force
    assert describes_file(tmp_path, "dev", "eval") and len(json.loads((tmp_path / "data/dev.json").read_text())) == 5


def test_a_kill_after_the_rename_leaves_a_consistent_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(registry, "write_sidecar", killed)
    with pytest.raises(Killed):
        convert_eval(ConvertJob(str(_records(tmp_path / "raw.jsonl")), "dev", dataset_dir=tmp_path))
    assert describes_file(tmp_path, "dev", "eval")  # the sidecar is a cache the overlap check rebuilds


def test_a_study_data_step_is_done_only_when_the_registry_describes_its_file(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's failure: the file is in place, its entry is missing or describes other data, and the step was skipped
    as done forever."""
    monkeypatch.chdir(tmp_path)
    _records(tmp_path / "te.jsonl")
    step = next(s for s in build_plan(build_config(BASE)) if s.name == "data test")
    assert run_steps([step], tmp_path / "out", echo=lambda _: None)["data test"].state == "ran"
    assert step.is_done()
    info = read_dataset_info(".")
    meta = info["u_test"]["qalign"]
    # what a kill between registering and renaming leaves: an entry for other data, and the file it replaces
    (tmp_path / "dataset_info.json").write_text(json.dumps({"u_test": {**info["u_test"], "qalign": {
        **meta, "rows": 1, "sha256": "0" * 64, "replaces_sha256": meta["sha256"]}}}))
    assert not step.is_done()
    lines: list[str] = []
    assert run_steps([step], tmp_path / "out", echo=lines.append)["data test"].state == "ran", lines
    assert step.is_done() and read_dataset_info(".")["u_test"] == info["u_test"]
    lines = []
    assert run_steps([step], tmp_path / "out", echo=lines.append)["data test"].state == "done"
    assert lines == ["[1/1] data test: skip (done)"]
    # what an older qalign left after such a kill (file in place, never registered): not done, and not replaced
    # silently either
    (tmp_path / "dataset_info.json").write_text("{}")
    assert not step.is_done()
    result = run_steps([step], tmp_path / "out", echo=lambda _: None)["data test"]
    assert result.state == "failed" and "data/u_test.json: exists and was not written by qalign" in \
        result.log.read_text()


def _names(cfg) -> list[str]:
    return [step.name for step in build_plan(cfg)]


def test_methods_on_the_command_line_leave_the_cot_row_out(tmp_path: Path) -> None:
    study = tmp_path / "s.yaml"
    study.write_text("name: u\nmodel: m\ntemplate: smollm2\nrecipes: recipes/smollm2-135m\ntrain: tr.jsonl\n"
                     "test: te.jsonl\nmethods: [sft, dpo]\ncot_teacher: self\n")
    subset = load_study(study, methods=["sft", "dpo"])
    names = _names(subset)
    assert not [n for n in names if "cot" in n or "teach" in n], names
    assert subset.row_methods == ["sft", "dpo"] and not subset.runs_cot
    assert _names(load_study(study, ["methods=[sft]"])) == _names(load_study(study, methods=["sft"]))
    # the file alone, or --methods naming cot, still plans the whole CoT row
    for cfg in (load_study(study), load_study(study, methods=["sft", "cot"])):
        assert {"teach", "data cot", "predict base_cot", "train cot-s42", "eval cot-s42"} <= set(_names(cfg))
    from qalign.study.repro import used_files

    assert not any(p.name == "think_then_answer.txt" for p in used_files(subset))
