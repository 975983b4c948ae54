"""Issue 15 Deliver 4: `qalign train` killed with SIGKILL mid-run, rerun with `resume_from_checkpoint=true`, reaches
the same final step with the same final loss as an uninterrupted run (CPU, tiny Qwen3, fixed seed), for SFT and
for the GRPO stage; a checkpoint the kill left half-written is skipped.

Issue 23 item 6: the GRPO runs earn rewards (a gold the tiny random model emits), so the comparison of rewards at
every step and of the final adapter weights can fail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qalign.errors import QalignError
from qalign.lf.recipe_checks import check_recipe_argv, checkpoint_is_complete, complete_checkpoints
from tests.conftest import REPO
from tests.test_pipeline_tiny import _write_raw

QALIGN = [sys.executable, "-m", "qalign.cli", "train"]
STEPS, SAVE, KILL_AFTER = 6, 2, 2


def _final(out: Path) -> dict:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [row for row in history if "loss" in row]
    return {"step": logged[-1]["step"], "loss": logged[-1]["loss"], "rewards": [row.get("reward") for row in logged],
            "reward_std": [row.get("reward_std") for row in logged], "grad_norm": [row["grad_norm"] for row in logged]}


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


def _assert_same_weights(full: Path, resumed: Path) -> None:
    import torch

    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and a
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), f"final adapter weights differ by up to {diff:.2e}"


def _write_earnable_grpo(folder: Path, n: int = 16) -> None:
    """Prompts whose gold is the letter "e": SubEM is a substring test, and about half of the tiny random model's
    8-token completions contain an "e" (measured: 58% of 64), so rewards are non-zero and vary within a group."""
    rows = [{"id": f"q{i}", "instruction": f"Question: which letter comes after d ({i})?\nShort answer:", "input": "",
             "output": "e", "answers": ["e"]} for i in range(n)]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data/t_grpo.json").write_text(json.dumps(rows))
    entry = {"file_name": "data/t_grpo.json", "columns": {"prompt": "instruction", "query": "input",
                                                          "response": "output"}, "qalign": {"kind": "eval"}}
    (folder / "dataset_info.json").write_text(json.dumps({"t_grpo": entry}))


def _train(args: list[str], cwd: Path) -> None:
    result = subprocess.run([*QALIGN, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"qalign train failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _kill_after_checkpoint(args: list[str], cwd: Path, out: Path, step: int) -> None:
    proc = subprocess.Popen([*QALIGN, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint_is_complete(out / f"checkpoint-{step}"):  # not mid-write of trainer_state.json
        assert proc.poll() is None, "training ended before the kill"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / f"checkpoint-{STEPS}").exists(), "killed too late to test a resume"


def _resume_matches(args: list[str], cwd: Path) -> tuple[dict, dict]:
    common = [args[0], f"max_steps={STEPS}", "save_strategy=steps", f"save_steps={SAVE}", "logging_steps=1", "seed=7",
              "use_cpu=true", "report_to=none", "overwrite_output_dir=false", *args[1:]]
    _train([*common, "output_dir=out/full"], cwd)
    out = cwd / "out/killed"
    _kill_after_checkpoint([*common, "output_dir=out/killed"], cwd, out, KILL_AFTER)
    partial = out / f"checkpoint-{KILL_AFTER + SAVE}"  # what a kill during the next save leaves behind
    partial.mkdir(exist_ok=True)
    (partial / "adapter_model.safetensors").write_bytes(b"")
    _train([*common, "output_dir=out/killed", "resume_from_checkpoint=true"], cwd)
    return _final(cwd / "out/full"), _final(out)


@pytest.mark.slow  # three real SFT runs
def test_sft_resumes_after_sigkill(tiny_qwen3: Path, tmp_path: Path) -> None:
    _write_raw(tmp_path / "train.jsonl", 24)
    subprocess.run([sys.executable, "-m", "qalign.cli", "convert", "alpaca", "--input", "train.jsonl",
                    "--dataset", "t_train"], cwd=tmp_path, check=True, capture_output=True)
    full, resumed = _resume_matches([str(REPO / "recipes/smollm2-135m/sft.yaml"), f"model_name_or_path={tiny_qwen3}",
                                     "template=qwen3_nothink", "dataset=t_train", "cutoff_len=128",
                                     "per_device_train_batch_size=2", "learning_rate=1e-2"], tmp_path)
    assert resumed["step"] == full["step"] == STEPS
    assert abs(resumed["loss"] - full["loss"]) <= 1e-3, (full, resumed)
    _assert_same_weights(tmp_path / "out/full", tmp_path / "out/killed")
    print(f"SFT resume: step {resumed['step']}, |loss diff| {abs(resumed['loss'] - full['loss']):.2e}")


@pytest.mark.slow  # three real GRPO runs
def test_grpo_resumes_after_sigkill(tiny_qwen3: Path, tmp_path: Path) -> None:
    _write_earnable_grpo(tmp_path)
    full, resumed = _resume_matches([str(REPO / "recipes/smollm2-135m/grpo.yaml"), f"model_name_or_path={tiny_qwen3}",
                                     "template=qwen3_nothink", "dataset=t_grpo", "cutoff_len=128",
                                     "num_generations=4", "per_device_train_batch_size=4",
                                     "gradient_accumulation_steps=1", "max_completion_length=8",
                                     "reward_funcs=[subem]", "learning_rate=1e-2",
                                     # the random model never ends within 8 tokens: masked, no completion would teach
                                     "mask_truncated_completions=false"], tmp_path)
    # the runs learn from something: rewards earned, different within groups (else the advantage is 0), a gradient
    # (one prompt x 4 completions a step: a step where all 4 score alike has advantage and gradient 0)
    assert any(r > 0.0 for r in full["rewards"]) and len(set(full["rewards"])) > 1, full["rewards"]
    assert sum(std > 0.0 for std in full["reward_std"]) >= STEPS // 2, full["reward_std"]
    assert sum(g > 0.0 for g in full["grad_norm"]) >= STEPS // 2, full["grad_norm"]
    assert resumed["step"] == full["step"] == STEPS
    assert resumed["rewards"] == full["rewards"], (full, resumed)  # every step, before and after the kill
    assert abs(resumed["loss"] - full["loss"]) <= 1e-6, (full, resumed)
    _assert_same_weights(tmp_path / "out/full", tmp_path / "out/killed")
    print(f"GRPO resume: step {resumed['step']}, rewards {full['rewards']}, |loss diff| "
          f"{abs(resumed['loss'] - full['loss']):.2e}")


def test_resume_picks_the_last_complete_checkpoint(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"stage: sft\noutput_dir: {tmp_path / 'out'}\n")
    # 6: killed before trainer_state.json; 8: killed while writing it (empty); 9: cut short; 10: empty folder
    for step, state in ((2, "{}"), (4, "{}"), (6, None), (8, ""), (9, '{"log_history": ['), (10, None)):
        (tmp_path / f"out/checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (tmp_path / f"out/checkpoint-{step}/trainer_state.json").write_text(state)
    assert [p.name for p in complete_checkpoints(tmp_path / "out")] == ["checkpoint-2", "checkpoint-4"]
    argv, config = check_recipe_argv([str(recipe), "resume_from_checkpoint=true"])
    assert config["resume_from_checkpoint"] == str(tmp_path / "out/checkpoint-4")
    assert argv[-1] == f"resume_from_checkpoint={tmp_path / 'out/checkpoint-4'}"
    for partial in ("checkpoint-6", "checkpoint-8"):
        with pytest.raises(QalignError, match=f"{partial}: this checkpoint is incomplete .*last complete one is"):
            check_recipe_argv([str(recipe), f"resume_from_checkpoint={tmp_path / 'out' / partial}"])
    with pytest.raises(QalignError, match="no complete checkpoint-N"):
        check_recipe_argv([str(recipe), "resume_from_checkpoint=true", f"output_dir={tmp_path / 'none'}"])
