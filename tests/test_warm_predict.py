"""Warm predict workers (qalign.generate.predict_worker, qalign.study.warm): what a worker writes is what cold
`qalign predict` processes write, a failed job leaves the worker serving, a dead worker fails only its step, and a
study gives the same numbers warm and `--cold`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_study import write_raw, write_tiny_study

pytestmark = pytest.mark.slow  # cold processes and workers that import LLaMA-Factory (~1.5 min on 2 cores)

QALIGN = [sys.executable, "-m", "qalign.cli"]
PREDICT = REPO / "recipes/smollm2-135m/predict.yaml"


@pytest.fixture(scope="module")
def work(tiny_qwen3: Path, tmp_path_factory) -> dict[str, Path]:
    """Two eval sets, a LoRA adapter of the tiny Qwen3 (peft, random B so it changes the output), three recipes:
    base on set a, adapter on set b, base on set a again (each its own output_dir)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from qalign.cli import main
    from qalign.overrides import read_recipe

    root = tmp_path_factory.mktemp("warm")
    write_raw(root / "a.jsonl", 5)
    write_raw(root / "b.jsonl", 4, offset=50)
    for name in ("a", "b"):
        assert main(["convert", "eval", "--input", str(root / f"{name}.jsonl"), "--dataset", f"w_{name}",
                     "--top-k", "1", "--dataset-dir", str(root)]) == 0
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_qwen3),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0.0, 0.5)
    model.save_pretrained(root / "adapter")
    common = {"model_name_or_path": str(tiny_qwen3), "template": "qwen3_nothink", "cutoff_len": 256,
              "dataset_dir": str(root), "max_new_tokens": 8}
    specs = {"base": {"eval_dataset": "w_a"}, "lora": {"eval_dataset": "w_b", "adapter_name_or_path": str(
        root / "adapter")}, "again": {"eval_dataset": "w_a"}}
    paths = {"root": root}
    for name, keys in specs.items():
        for mode in ("cold", "warm"):
            recipe = read_recipe(PREDICT, layers=[{**common, **keys, "output_dir": str(root / mode / name)}])
            paths[f"{mode}-{name}"] = root / f"{mode}-{name}.yaml"
            paths[f"{mode}-{name}"].write_text(yaml.safe_dump(recipe))
    return paths


@pytest.fixture(scope="module")
def pool(work: dict[str, Path]):
    from qalign.study.warm import WarmPool

    warm = WarmPool(work["root"] / "workers")
    yield warm
    warm.close()


@pytest.fixture(scope="module")
def cold(work: dict[str, Path]) -> dict[str, Path]:
    """The base and adapter recipes run by cold `qalign predict` processes (root/cold/NAME)."""
    for name in ("base", "lora"):
        result = subprocess.run([*QALIGN, "predict", str(work[f"cold-{name}"])], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    return work


def _predictions(root: Path, mode: str, name: str) -> bytes:
    return (root / mode / name / "generated_predictions.jsonl").read_bytes()


def test_a_worker_writes_what_cold_processes_write(cold: dict[str, Path], pool) -> None:
    work = cold
    root = work["root"]
    for name in ("base", "lora", "again"):  # one worker: the adapter of the second must not stay for the third
        log, peak = root / "logs" / f"{name}.log", root / "logs" / f"{name}.peak.json"
        assert pool.run(["predict", str(work[f"warm-{name}"])], log, header=f"$ qalign predict {name}",
                        peak_file=peak) == 0, log.read_text()
        text = log.read_text()
        assert text.startswith(f"$ qalign predict {name}\n") and "qalign predict: " in text and "prompts/s" in text
        assert set(json.loads(peak.read_text())) == {"peak_gpu_bytes", "peak_allocated_bytes"}
    assert len(pool.pids()) == 1
    assert _predictions(root, "warm", "base") == _predictions(root, "cold", "base")
    assert _predictions(root, "warm", "lora") == _predictions(root, "cold", "lora")
    assert _predictions(root, "warm", "again") == _predictions(root, "cold", "base")
    assert _predictions(root, "cold", "lora") != _predictions(root, "cold", "base")  # the adapter mattered


def test_a_failed_job_is_logged_and_the_worker_serves_the_next(cold: dict[str, Path], pool) -> None:
    work = cold
    root = work["root"]
    log = root / "logs" / "bad.log"
    # a training recipe: what tests/test_predict.py sees a cold `qalign predict` refuse with exit 2
    assert pool.run(["predict", str(REPO / "recipes/smollm2-135m/sft.yaml")], log, header="$ bad") == 2
    assert log.read_text().startswith("$ bad\n") and "qalign: error: qalign predict needs a predict recipe" in \
        log.read_text()
    broken = root / "broken.yaml"  # LLaMA-Factory cannot load the model: its traceback, exit 1
    broken.write_text(work["warm-base"].read_text().replace("model_name_or_path:", "model_name_or_path: /nope/m #"))
    log = root / "logs" / "broken.log"
    assert pool.run(["predict", str(broken)], log, header="$ broken") != 0
    assert re.search(r"(Error|error:)", log.read_text().splitlines()[-1]), log.read_text()[-2000:]
    pids = pool.pids()
    shutil.rmtree(root / "warm" / "base", ignore_errors=True)
    assert pool.run(["predict", str(work["warm-base"])], root / "logs" / "after.log") == 0
    assert pool.pids() == pids  # the same worker
    assert _predictions(root, "warm", "base") == _predictions(root, "cold", "base")


def test_a_worker_killed_mid_step_fails_that_step_and_the_next_gets_a_new_one(cold: dict[str, Path]) -> None:
    work = cold
    from qalign.study import runner
    from qalign.study.plan import Step

    root, out = work["root"], work["root"] / "study-kill"
    steps = [Step(f"predict {name}", ["predict", str(work[f"warm-{name}"])],
                  root / "warm" / name / "generated_predictions.jsonl") for name in ("base", "lora")]
    for name in ("base", "lora"):
        shutil.rmtree(root / "warm" / name, ignore_errors=True)
    killed: list[int] = []

    def kill_the_first_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pool = runner._warm  # noqa: SLF001 - the pool of the run_steps call in progress
            pids = pool.pids() if pool else frozenset()
            if pids:  # the worker has the job, or is still importing: either way its step is in flight
                killed.extend(pids)
                os.kill(next(iter(pids)), signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_first_worker)
    killer.start()
    results = runner.run_steps(steps, out, echo=lambda _: None)
    killer.join()
    assert killed and results["predict base"].state == "failed"
    assert "died during this step (killed by signal 9" in results["predict base"].reason
    log = next((out / "logs").glob("*predict-base.log")).read_text()
    assert log.startswith("$ qalign predict ") and "the next predict step starts a new one" in log
    assert results["predict lora"].state == "ran", results["predict lora"].reason
    assert (out / "logs/workers/predict-2.log").is_file()  # a second worker ran it
    assert _predictions(root, "warm", "lora") == _predictions(root, "cold", "lora")
    assert runner._warm is None  # noqa: SLF001 - closed with the run


def _study(folder: Path, model: Path) -> None:
    write_tiny_study(folder, model, "wm", max_steps=2)


def test_a_study_reports_the_same_numbers_warm_and_cold(tiny_qwen3: Path, tmp_path: Path) -> None:
    outcomes = {}
    for mode in ("warm", "cold"):
        folder = tmp_path / mode
        _study(folder, tiny_qwen3)
        result = subprocess.run([*QALIGN, "study", "study.yaml", *(["--cold"] if mode == "cold" else [])],
                                cwd=folder, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0 and "FAILED" not in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
        report = (folder / "reports/wm/report.md").read_text()
        table = re.search(r"## Results.*?\n\n(\|.*?)\n\n", report, re.DOTALL)
        assert table, report[:2000]
        runs = folder / "reports/wm/runs"
        outcomes[mode] = {"table": table.group(1), **{
            run.name: (json.loads((run / "eval/summary.json").read_text()),
                       (run / "predict/generated_predictions.jsonl").read_bytes()) for run in sorted(runs.iterdir())}}
        workers = sorted((folder / "reports/wm/logs/workers").glob("*.log"))
        assert len(workers) == (1 if mode == "warm" else 0)  # both predict steps in one worker, or none warm
        predict_log = next((folder / "reports/wm/logs").glob("*predict-base.log")).read_text()
        assert predict_log.startswith("$ qalign predict ") and "qalign predict: 6 prompts" in predict_log
    assert set(outcomes["warm"]) == {"table", "base", "sft-s1"}
    assert outcomes["warm"] == outcomes["cold"]
