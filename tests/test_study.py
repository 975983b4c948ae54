"""`qalign study` end to end on the tiny Qwen3: two methods, a few steps, a report with intervals, a resumable rerun."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # the whole study with its CoT row, twice (~4 min on 2 busy cores)

QALIGN = [sys.executable, "-m", "qalign.cli"]
RECIPES = REPO / "recipes" / "smollm2-135m"
CAPITALS = [("france", "paris"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid"), ("peru", "lima")]
INTERVAL = r"\d+\.\d \[\d+\.\d, \d+\.\d\]"
VERDICT = r"\**(learned|did not learn|not measured)\**"


def write_raw(path: Path, n: int, offset: int = 0) -> None:
    with path.open("w") as handle:
        for i in range(offset, offset + n):
            country, city = CAPITALS[i % len(CAPITALS)]
            handle.write(json.dumps({"question": f"what is the capital of {country} ({i})", "answers": [city],
                                     "ctxs": [{"title": country.title(), "text": f"{city} is the capital."}]}) + "\n")


def write_tiny_study(folder: Path, model: Path, name: str, max_steps: int) -> None:
    """FOLDER/{train,test}.jsonl and study.yaml: SFT of the tiny model on 12 questions, scored on 6 (CPU, seconds)."""
    folder.mkdir(parents=True)
    write_raw(folder / "train.jsonl", 12)
    write_raw(folder / "test.jsonl", 6, offset=100)
    (folder / "study.yaml").write_text(yaml.safe_dump({
        "name": name, "model": str(model), "template": "qwen3_nothink", "recipes": str(REPO / "recipes/smollm2-135m"),
        "train": "train.jsonl", "test": "test.jsonl", "top_k": 1, "methods": ["sft"], "seeds": [1],
        "bootstrap": {"samples": 100, "seed": 0},
        "train_args": {"cutoff_len": 256, "max_steps": max_steps, "logging_steps": 1, "per_device_train_batch_size": 4,
                       "learning_rate": 1.0e-2, "use_cpu": True},
        "predict_args": {"cutoff_len": 256, "max_new_tokens": 6}}))


def second_method() -> str | None:
    """A real second method whose recipe (and data converter) exists now: dpo if the miner is there, else grpo."""
    from qalign.converters.cli import SUBCOMMANDS

    converters = {spec.name for spec in SUBCOMMANDS}
    if (RECIPES / "dpo.yaml").is_file() and "preference" in converters:
        return "dpo"
    if (RECIPES / "grpo.yaml").is_file():
        return "grpo"
    return None


def study_file(folder: Path, model: Path, methods: list[str], seeds: list[int]) -> Path:
    spec = {
        "name": "tiny", "model": str(model), "template": "qwen3_nothink", "recipes": str(RECIPES),
        "train": "train.jsonl", "test": "test.jsonl", "top_k": 1, "methods": methods, "seeds": seeds,
        "bootstrap": {"samples": 200, "seed": 0},
        "train_args": {"cutoff_len": 256, "max_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 4,
                       "learning_rate": 1.0e-2, "use_cpu": True},
        "predict_args": {"cutoff_len": 256, "max_new_tokens": 6},
        "mining_args": {"num_samples": 2, "max_new_tokens": 6, "device": "cpu"},
        "overrides": {"grpo": {"num_generations": 4, "max_completion_length": 6},
                      "cot": {"predict": {"max_new_tokens": 8}}},
        # the CoT row with the model as its own teacher; a random model reaches no F1 > 0, so every sample with
        # reasoning and an answer is kept (cot_min_f1 0)
        "cot_teacher": "self", "cot_min_f1": 0.0,
        "teach_args": {"num_samples": 2, "max_new_tokens": 4, "answer_tokens": 3, "device": "cpu"},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_study(folder: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*QALIGN, "study", "study.yaml", *args], cwd=folder, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"qalign study failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def test_study_runs_reports_and_resumes(tiny_qwen3: Path, tmp_path: Path) -> None:
    write_raw(tmp_path / "train.jsonl", 12)
    write_raw(tmp_path / "test.jsonl", 6, offset=100)
    second = second_method()
    methods, seeds = (["sft", second], [42]) if second else (["sft"], [1, 2])
    study_file(tmp_path, tiny_qwen3, methods, seeds)

    first = run_study(tmp_path, "--jobs", "2")  # independent steps side by side; the rerun goes one by one
    total = int(re.search(r"^study tiny: (\d+) steps", first.stdout, re.M).group(1))
    assert total >= 8 and first.stdout.count(": ok (") == total and "skip (done)" not in first.stdout, first.stdout
    out = tmp_path / "reports" / "tiny"
    report = (out / "report.md").read_text()
    for label in ["base", "base_model_cot", *(methods if second else [f"sft (seed {s})" for s in seeds]),
                  *(["cot"] if second else [])]:
        training = "—" if label in ("base", "base_model_cot") else VERDICT
        row = (rf"^\| {re.escape(label)} \| 6 \| {INTERVAL} \| {INTERVAL} \| {INTERVAL} \| \d+ \| \d+\.\d \| "
               rf"{training} \| ok \|$")  # then no answer, words
        assert re.search(row, report, re.M), f"no row with intervals for {label}:\n{report}"
    teacher = json.loads((tmp_path / "data" / "tiny_teacher.summary.json").read_text())
    assert teacher["questions"] == 12 and teacher["asked"] == 12 and teacher["samples"] == 24
    assert re.search(r"^\| tiny_cot \| 24 \| \d+ \| \d+ \| ", report, re.M), report  # the CoT teacher section
    assert re.search(r"^\| sft.* \| [+-]\d+\.\d \[-?\d+\.\d, -?\d+\.\d\] \|", report, re.M), "no paired Δ vs base"
    # training health: one row per trained run with its signals and a verdict, the same verdict in results.json
    health = report.split("## Training health", 1)[1].split("## Claims (seeds pooled)", 1)[0]
    assert "Rule: SFT learned when" in health
    trained = [*methods, *(["cot"] if second else [])]  # CoT-SFT trains too (an SFT stage)
    runs = [f"{m}-s{s}" for m in trained for s in seeds]
    for run in runs:
        stage = {"cot": "sft"}.get(run.split("-")[0], run.split("-")[0])
        row = rf"^\| {run} \| {stage} \| 3 \| (loss|reward) -?\d+\.\d{{3}} → -?\d+\.\d{{3}}.* \| {VERDICT} \|"
        assert re.search(row, health, re.M), f"no health row for {run}:\n{health}"
    assert "Split: every run here (base and each seed) was scored on `test.jsonl`" in report
    assert "## Claims (seeds pooled)" in report and (len(seeds) > 1 or "(1 seed(s); a claim needs 3)" in report)
    assert "## Wins and losses (SubEM)" in report and "| transformers | 4.56.2 |" in report
    assert f"| {RECIPES / 'sft.yaml'} | `" in report and "Seeds: training" in report
    for png in ("training_curves.png", "methods.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    base = results["rows"][0]
    assert base["label"] == "base" and base["subem"]["low"] <= base["subem"]["mean"] <= base["subem"]["high"]
    verdicts = {h["run"]: h["verdict"] for h in results["training_health"]}
    assert set(verdicts) == set(runs) and set(verdicts.values()) <= {"learned", "did not learn", "not measured"}
    assert {r["run"]: r["training"] for r in results["rows"] if r["run"] in verdicts} == verdicts
    sft_log = next((out / "logs").glob("*train-sft*.log")).read_text()
    assert f"training health (sft, 3 logged steps): {verdicts[runs[0]].upper()}" in sft_log  # printed by qalign train

    adapters = sorted(out.glob("runs/*/train/adapter_model.safetensors"))
    assert len(adapters) == (3 if second else 4)  # sft, second/other seed, cot (one per seed without second)
    stamps = [p.stat().st_mtime_ns for p in adapters]
    again = run_study(tmp_path)
    assert again.stdout.count("skip (done)") == total, again.stdout
    assert "running" not in again.stdout
    assert [p.stat().st_mtime_ns for p in adapters] == stamps, "a finished training step ran again"
    assert "## Results on the test set" in (out / "report.md").read_text()

    # another seed: only that seed's steps are planned, everything finished is still skipped
    plan = run_study(tmp_path, "--seeds", *map(str, seeds), "7", "--dry-run").stdout
    assert re.search(r"train sft-s7: would run qalign train \S*runs/sft-s7/train/recipe\.yaml$", plan, re.M)
    assert not (out / "runs/sft-s7/train/recipe.yaml").exists()  # a dry run writes nothing
    ran = yaml.safe_load((out / f"runs/sft-s{seeds[0]}/train/recipe.yaml").read_text())  # what that step trained on
    assert ran["seed"] == seeds[0] and ran["output_dir"].endswith(f"runs/sft-s{seeds[0]}/train")
    assert re.search(rf"train sft-s{seeds[0]}: skip \(done\)", plan)
