"""DPO, ORPO and KTO recipes through `qalign train` (real LLaMA-Factory) on a tiny random Qwen3, on data mined
from a hand-made sample cache, from the base model and on top of an SFT adapter."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from qalign.cli import main as qalign_main
from tests.conftest import REPO
from tests.test_preference import CAPITALS, write_cache, write_raw

pytestmark = pytest.mark.slow  # four training runs (~2 min on 2 cores)

RECIPES = REPO / "recipes" / "smollm2-135m"
WRONG = ["Oslo", "the capital is Bern", "Madrid", "no idea"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A dataset_dir with `pref` (ranking), `kto` and `sft` datasets built from cached samples (no model)."""
    root = tmp_path_factory.mktemp("pref-train")
    raw = write_raw(root / "raw.jsonl")
    samples = {f"what is the capital of {country}": [answers[0], *WRONG] for country, answers in CAPITALS}
    cache = write_cache(root / "data/mined.samples.jsonl", raw, samples, top_k=1)
    common = ["--input", str(raw), "--dataset-dir", str(root), "--top-k", "1", "--samples", str(cache)]
    assert qalign_main(["convert", "preference", "--dataset", "pref", *common]) == 0
    assert qalign_main(["convert", "kto", "--dataset", "kto", *common]) == 0
    assert qalign_main(["convert", "alpaca", "--dataset", "sft", "--input", str(raw), "--dataset-dir", str(root),
                        "--top-k", "1"]) == 0
    return root


def train(recipe: str, tiny: Path, cwd: Path, *overrides: str, run: str | None = None,
          stderr: list[str] | None = None) -> list[float]:
    """Run `qalign train` into out/RUN (default: the recipe name) and return the logged training losses (and append
    the run's stderr to `stderr`)."""
    output = cwd / "out" / (run or recipe)
    args = [sys.executable, "-m", "qalign.cli", "train", str(RECIPES / f"{recipe}.yaml"),
            f"model_name_or_path={tiny}", "template=qwen3_nothink", "cutoff_len=256", f"output_dir={output}",
            "max_steps=3", "logging_steps=1", "per_device_train_batch_size=2", "plot_loss=false", *overrides]
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{recipe} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if stderr is not None:
        stderr.append(result.stderr)
    log = [json.loads(line) for line in (output / "trainer_log.jsonl").open()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert (output / "adapter_model.safetensors").exists()
    return losses


@pytest.mark.parametrize("recipe", ["dpo", "orpo", "kto"])
def test_preference_recipes_train_from_base(recipe: str, tiny_qwen3: Path, workdir: Path) -> None:
    dataset = "kto" if recipe == "kto" else "pref"
    # KTO: all 18 rows (6 desirable, 12 undesirable) in one batch, so the first loss shows the class weights
    extra = ["per_device_train_batch_size=18"] if recipe == "kto" else []
    stderr: list[str] = []
    losses = train(recipe, tiny_qwen3, workdir, f"dataset={dataset}", *extra, stderr=stderr)
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), losses
    # a fresh LoRA (B = 0) makes the policy equal its adapter-free reference at step 1:
    # DPO loss = -log sigmoid(0) = ln 2, KTO loss = 1 - sigmoid(0) = 0.5 per row, times its class weight
    if recipe == "dpo":
        assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    if recipe == "kto":  # the recipe's `auto` weights: 2.0 for the desirable rows, 1.0 for the rest
        assert "kto_chosen_weight=2.000, kto_rejected_weight=1.000 (auto" in stderr[0]
        assert losses[0] == pytest.approx(0.5 * (6 * 2.0 + 12 * 1.0) / 18, abs=1e-3)


def test_dpo_continues_the_sft_adapter_against_the_sft_reference(tiny_qwen3: Path, workdir: Path) -> None:
    train("sft", tiny_qwen3, workdir, "dataset=sft", "learning_rate=3e-2", "max_steps=4")
    sft = workdir / "out" / "sft"
    # the Makefile's PREF_FROM=sft: continue the SFT adapter; the reference is base + that same adapter, so the
    # policy starts equal to it (ln 2) although the SFT adapter moved far from the base model
    losses = train("dpo", tiny_qwen3, workdir, "dataset=pref", f"adapter_name_or_path={sft}",
                   f"ref_model={tiny_qwen3}", f"ref_model_adapters={sft}", run="dpo-sft")
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3) and all(math.isfinite(x) for x in losses)
    # without ref_model the reference is the bare base model, and the same first step is far from ln 2
    contrast = train("dpo", tiny_qwen3, workdir, "dataset=pref", f"adapter_name_or_path={sft}", "max_steps=1",
                     run="dpo-sft-base-ref")
    assert abs(contrast[0] - math.log(2)) > 0.05, contrast


def _history(run: Path, key: str) -> list[float]:
    rows = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [row[key] for row in rows if key in row]


def test_ipo_and_kto_with_extra_terms_log_their_preference_part(tiny_qwen3: Path, workdir: Path) -> None:
    # IPO at the reference (fresh LoRA): (0 - 1 / (2 beta))^2 = 25 at beta 0.1; the sigmoid LLaMA-Factory used
    # to compute instead would be ln 2. pref_ftx adds the SFT term to `loss` only.
    losses = train("dpo", tiny_qwen3, workdir, "dataset=pref", "pref_loss=ipo", "pref_ftx=1.0", run="ipo-ftx")
    preference = _history(workdir / "out" / "ipo-ftx", "preference_loss")
    assert len(preference) == 3 and preference[0] == pytest.approx(25.0, rel=1e-3)
    assert losses[0] > preference[0] + 0.1  # + the SFT term
    losses = train("kto", tiny_qwen3, workdir, "dataset=kto", "pref_ftx=1.0", "kto_rejected_weight=2.0",
                   run="kto-ftx")
    preference = _history(workdir / "out" / "kto-ftx", "preference_loss")
    assert len(preference) == 3 and preference[0] == pytest.approx(0.5, abs=1e-3)  # any weights: 0.5 at reference
    assert losses[0] > 0.5 + 0.05  # weighted undesirable terms and/or the SFT term


def test_kto_pair_is_refused_before_training(tiny_qwen3: Path, workdir: Path) -> None:
    output = workdir / "out" / "kto-pair"
    args = [sys.executable, "-m", "qalign.cli", "train", str(RECIPES / "dpo.yaml"), f"model_name_or_path={tiny_qwen3}",
            "template=qwen3_nothink", "dataset=pref", "pref_loss=kto_pair", f"output_dir={output}"]
    result = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "pref_loss: kto_pair is refused" in result.stderr + result.stdout
    assert "stage: kto" in result.stderr + result.stdout and not (output / "adapter_model.safetensors").exists()
