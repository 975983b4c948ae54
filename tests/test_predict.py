"""`qalign predict` (the batch engine, qalign.generate.engine) against LLaMA-Factory's do_predict; its batching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qalign.generate.engine import BatchGenerator, BatchLimits, GenerationOutOfMemory, plan_batches
from tests.conftest import REPO

QALIGN = [sys.executable, "-m", "qalign.cli"]
PREDICT = str(REPO / "recipes/smollm2-135m/predict.yaml")


def _qalign(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([*QALIGN, *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"qalign {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- batching ----------------------------------------------------------------------------------------------------


def test_batches_are_length_sorted_and_within_budget() -> None:
    lengths = [5, 50, 7, 30, 30, 2, 45, 9]
    batches = plan_batches(lengths, new_tokens=10, tokens=130, rows=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every prompt exactly once
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)  # longest first
    for batch in batches:
        assert len(batch) <= 3 and len(batch) * (lengths[batch[0]] + 10) <= 130
    # 50 45 (2 x 60 <= 130) | 30 30 9 (3 x 40; a 4th row breaks the cap) | 7 5 2 (3 x 17)
    assert [[lengths[i] for i in b] for b in batches] == [[50, 45], [30, 30, 9], [7, 5, 2]]
    # copies count as rows: 2 prompts x 2 samples fill a 4-row batch
    assert plan_batches([3, 3, 3], new_tokens=1, tokens=100, rows=4, copies=2) == [[0, 1], [2]]


class _FlakyModel(torch.nn.Module):
    """Generates `token + step` after each prompt's last token; runs out of memory above `fits` rows."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.fits, self.calls = fits, []

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, **_: object):
        self.calls.append(input_ids.shape[0])
        if input_ids.shape[0] > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        last = input_ids[:, -1:]
        new = torch.cat([last + step for step in range(1, max_new_tokens + 1)], dim=1)
        return torch.cat([input_ids, new], dim=1)


def test_a_batch_that_does_not_fit_is_split_not_lost(capsys) -> None:
    model = _FlakyModel(fits=2)
    prompts = [[10 * i + 1] * (i + 1) for i in range(7)]  # prompt i ends with token 10i+1, has i+1 tokens
    generator = BatchGenerator(model, pad_id=0, limits=BatchLimits(tokens=10_000, rows=8), setting="batch_tokens")
    out = generator.generate(prompts, {"max_new_tokens": 3}, progress=False)
    assert out == [[[10 * i + 2, 10 * i + 3, 10 * i + 4]] for i in range(7)]  # every prompt, in input order
    assert model.calls[0] == 7 and max(model.calls[1:]) <= 4  # 7 -> halves -> quarters that fit
    assert generator.tokens < 10_000  # lowered for the rest of the run
    assert "lowering `batch_tokens`" in capsys.readouterr().err
    with pytest.raises(GenerationOutOfMemory, match="even one row does not fit"):
        BatchGenerator(_FlakyModel(fits=0), pad_id=0, limits=BatchLimits(tokens=100)).generate(
            [[1, 2]], {"max_new_tokens": 2}, progress=False)


@pytest.mark.slow  # loads the tiny model
def test_rows_continue_a_shared_prefill_with_their_own_suffix(tiny_qwen3: Path) -> None:
    """copies of a prompt with suffixes (empty ones too) give what whole rows prompt + suffix give greedily."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    torch.manual_seed(0)
    prompts = [torch.randint(5, 200, (n,)).tolist() for n in (9, 4, 13, 1)]
    suffixes = [[torch.randint(5, 200, (k,)).tolist() for k in ks] for ks in ((3, 0, 6), (1, 1, 0), (0, 0, 0),
                                                                                   (5, 2, 7))]
    greedy = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0, "eos_token_id": [1]}
    engine = BatchGenerator(model, pad_id=0, limits=BatchLimits(tokens=10_000))
    shared = engine.generate(prompts, greedy, copies=3, suffixes=suffixes, progress=False)
    rows = [p + s for p, ends in zip(prompts, suffixes, strict=True) for s in ends]
    whole = engine.generate(rows, greedy, progress=False)
    assert [row for rows in shared for row in rows] == [rows[0] for rows in whole]
    assert all(len(row) == 5 for rows in shared for row in rows)
    with pytest.raises(ValueError, match="need 3 token lists for each of the 4 prompts"):
        engine.generate(prompts, greedy, copies=3, suffixes=suffixes[:3], progress=False)


# --- agreement with do_predict ----------------------------------------------------------------------------------


def _write_raw(path: Path, n: int) -> None:
    """Questions of varied length (so length-sorted batches differ from file-order batches)."""
    with path.open("w") as handle:
        for i in range(n):
            filler = " ".join(["the capital city"] * (i % 5))
            record = {"question": f"what is the capital of france {filler} ({i})", "answers": ["paris"],
                      "ctxs": [{"title": "France", "text": "paris is the capital of france. " * (1 + i % 3)}]}
            handle.write(json.dumps(record) + "\n")


def _agree(cwd: Path, common: list[str], engine_extra: list[str]) -> list[dict]:
    _qalign("predict", PREDICT, *common, "output_dir=out/lf", "engine=llamafactory", cwd=cwd)
    result = _qalign("predict", PREDICT, *common, "output_dir=out/qa", *engine_extra, cwd=cwd)
    assert "prompts/s" in result.stdout
    lf, qa = _rows(cwd / "out/lf/generated_predictions.jsonl"), _rows(cwd / "out/qa/generated_predictions.jsonl")
    assert len(lf) == len(qa) > 0
    for a, b in zip(lf, qa, strict=True):
        assert (a["prompt"], a["label"], a["predict"]) == (b["prompt"], b["label"], b["predict"])
        assert set(a) == {"prompt", "predict", "label"} and set(b) == {"prompt", "predict", "label", "id"}
    return qa


@pytest.mark.slow
def test_predict_matches_do_predict_on_tiny_qwen3(tiny_qwen3: Path, tmp_path: Path) -> None:
    _write_raw(tmp_path / "dev.jsonl", 11)
    _qalign("convert", "eval", "--input", "dev.jsonl", "--dataset", "t_dev", cwd=tmp_path)
    common = [f"model_name_or_path={tiny_qwen3}", "template=qwen3_nothink", "cutoff_len=256", "eval_dataset=t_dev",
              "max_new_tokens=8", "per_device_eval_batch_size=4"]
    qa = _agree(tmp_path, common, ["engine_batch_tokens=400"])  # several length-sorted batches
    gold = json.loads((tmp_path / "data/t_dev.json").read_text())
    assert [row["id"] for row in qa] == [row["id"] for row in gold]
    stats = json.loads((tmp_path / "out/qa/predict_results.json").read_text())
    assert stats["predict_samples"] == 11 and stats["batch_tokens"] == 400 and stats["new_tokens"] > 0
    _qalign("eval", "--predictions", "out/qa/generated_predictions.jsonl", "--gold", "data/t_dev.json",
            "--output", "out/eval", cwd=tmp_path)
    assert json.loads((tmp_path / "out/eval/summary.json").read_text())["n"] == 11


@pytest.mark.slow
def test_predict_matches_do_predict_on_the_sample_with_smollm2(smollm2: Path, tmp_path: Path) -> None:
    _qalign("convert", "eval", "--input", str(REPO / "data/sample/nq-sample.dev.jsonl"), "--dataset", "s_dev",
            "--top-k", "1", "--limit", "8", cwd=tmp_path)
    common = [f"model_name_or_path={smollm2}", "eval_dataset=s_dev", "max_new_tokens=16"]
    qa = _agree(tmp_path, common, [])
    assert any(row["predict"].strip() for row in qa)  # a real model answers something


def test_predict_refuses_a_training_recipe_and_bad_engine_keys(tmp_path: Path) -> None:
    from qalign.errors import QalignError
    from qalign.generate.predict import read_recipe, split_engine_args

    with pytest.raises(QalignError, match="recipe not found"):
        read_recipe(tmp_path / "nope.yaml", [])
    args = read_recipe(PREDICT, ["engine_batch_rows=3", "max_new_tokens=4"])
    rest, engine, limits = split_engine_args(args)
    assert engine == "qalign" and limits == BatchLimits(tokens=None, rows=3)
    assert rest["max_new_tokens"] == 4 and "engine_batch_rows" not in rest
    with pytest.raises(QalignError, match="engine='vllm'"):
        split_engine_args({**args, "engine": "vllm"})
    with pytest.raises(QalignError, match="engine_batch_tokens=0"):
        split_engine_args({**args, "engine_batch_tokens": 0})
    result = subprocess.run([*QALIGN, "predict", str(REPO / "recipes/smollm2-135m/sft.yaml")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "needs a predict recipe" in result.stderr
