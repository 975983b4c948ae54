"""End to end through the real LLaMA-Factory on a tiny random Qwen3: convert, SFT, predict, eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # SFT, predict and eval in subprocesses (~1.5 min on 2 cores)

QALIGN = [sys.executable, "-m", "qalign.cli"]


def _qalign(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([*QALIGN, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"qalign {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _write_raw(path: Path, n: int) -> None:
    capitals = [("france", "paris"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid"), ("peru", "lima")]
    with path.open("w") as handle:
        for i in range(n):
            country, city = capitals[i % len(capitals)]
            record = {
                "question": f"what is the capital of {country} ({i})",
                "answers": [city, city.title()],
                "ctxs": [{"title": country.title(), "text": f"{city} is the capital of {country}."}],
            }
            handle.write(json.dumps(record) + "\n")


def test_sft_then_predict_then_eval(tiny_qwen3: Path, tmp_path: Path) -> None:
    _write_raw(tmp_path / "train.jsonl", 16)
    _write_raw(tmp_path / "dev.jsonl", 6)
    _qalign("convert", "alpaca", "--input", "train.jsonl", "--dataset", "t_train", cwd=tmp_path)
    _qalign("convert", "eval", "--input", "dev.jsonl", "--dataset", "t_dev", cwd=tmp_path)

    common = [f"model_name_or_path={tiny_qwen3}", "template=qwen3_nothink", "cutoff_len=256"]
    _qalign(
        "train", str(REPO / "recipes/smollm2-135m/sft.yaml"), *common,
        "dataset=t_train", "output_dir=out/sft", "max_steps=30", "logging_steps=1", "learning_rate=3e-2",
        "warmup_ratio=0", "lr_scheduler_type=constant",
        cwd=tmp_path,
    )  # fmt: skip
    losses = [row["loss"] for row in map(json.loads, (tmp_path / "out/sft/trainer_log.jsonl").open()) if "loss" in row]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, f"loss did not go down: {losses}"
    assert (tmp_path / "out/sft/adapter_model.safetensors").exists()

    _qalign(
        "train", str(REPO / "recipes/smollm2-135m/predict.yaml"), *common,
        "eval_dataset=t_dev", "adapter_name_or_path=out/sft", "output_dir=out/predict", "max_new_tokens=8",
        cwd=tmp_path,
    )  # fmt: skip
    predictions = (tmp_path / "out/predict/generated_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 6

    result = _qalign(
        "eval", "--predictions", "out/predict/generated_predictions.jsonl", "--gold", "data/t_dev.json",
        "--output", "out/eval", cwd=tmp_path,
    )  # fmt: skip
    summary = json.loads((tmp_path / "out/eval/summary.json").read_text())
    assert summary["n"] == 6 and 0.0 <= summary["subem"] <= 1.0
    scores = [json.loads(line) for line in (tmp_path / "out/eval/scores.jsonl").open()]
    assert len(scores) == 6
    # the summary is the mean of the per-question scores
    assert abs(summary["f1"] - sum(s["f1"] for s in scores) / 6) < 1e-9
    assert "subem" in result.stdout.lower()
