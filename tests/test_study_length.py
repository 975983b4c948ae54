"""The study report shows length and missing answers beside the scores (results table, Training health, claims),
built from hand-made run folders (no model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from qalign.evaluators.scoring import summarize, write_results
from qalign.study.config import build_config
from qalign.study.plan import build_plan
from qalign.study.report import write_report

BASE = {"name": "u", "model": "m", "template": "smollm2", "recipes": "recipes/smollm2-135m", "train": "tr.jsonl",
        "test": "te.jsonl"}
IDS = [f"q{i}" for i in range(6)]


def _eval(folder: Path, right: int, answer: str, missing: int = 0, fields: bool = True) -> None:
    """Six questions: the first `right` exact (EM 1), the last `missing` with no answer, the rest wrong; every
    answer is `answer` (its words are the length)."""
    rows = []
    for i, qid in enumerate(IDS):
        none = i >= len(IDS) - missing
        score = float(i < right)
        row = {"id": qid, "question": f"question {qid}", "prediction": "" if none else answer, "answers": ["gold"],
               "subem": score, "em": score, "f1": score}
        if fields:
            row |= {"no_answer": none, "words": 0 if none else len(answer.split())}
        rows.append(row)
    write_results(folder, rows, summarize(rows))


def _log(folder: Path, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps(state))


def _section(report: str, start: str, end: str) -> str:
    return report.split(start, 1)[1].split(end, 1)[0]


def test_results_table_counts_missing_answers_and_mean_length(tmp_path: Path) -> None:
    cfg = build_config({**BASE, "methods": ["sft", "cot"], "cot_teacher": "t.jsonl", "seeds": [1],
                        "output": str(tmp_path / "r"), "bootstrap": {"samples": 50}})
    runs = cfg.output / "runs"
    _eval(runs / "base" / "eval", 1, "a long base answer here", fields=False)  # an old scores.jsonl: measured
    _eval(runs / "sft-s1" / "eval", 3, "gold")
    _eval(runs / "cot-s1" / "eval", 2, "two words", missing=3)
    report = write_report(cfg, build_plan(cfg), {}, ["study.yaml"]).read_text()
    results = _section(report, "## Results on", "### Differences")
    assert "| method | n | SubEM | EM | F1 | no answer | words | training | status |" in results
    # base: "a long base answer here" -> "long base answer here" = 4 normalised words; no answer 0
    assert re.search(r"^\| base \| 6 \| [^|]+ \| [^|]+ \| [^|]+ \| 0 \| 4\.0 \| — \| ok \|$", results, re.M), results
    assert re.search(r"^\| sft \| 6 \| [^|]+ \| [^|]+ \| [^|]+ \| 0 \| 1\.0 \|", results, re.M), results
    # cot: 3 of 6 without an answer (0 words), 3 of "two words": mean 1.0
    assert re.search(r"^\| cot \| 6 \| [^|]+ \| [^|]+ \| [^|]+ \| 3 \| 1\.0 \|", results, re.M), results
    assert "no answer = predictions with no extractable answer" in results
    saved = {row["label"]: row for row in json.loads((cfg.output / "results.json").read_text())["rows"]}
    assert (saved["cot"]["no_answer"], saved["cot"]["answer_words"]) == (3, 1.0)
    assert saved["base"]["answer_words"] == 4.0


def test_health_lists_a_run_with_no_logged_steps_and_grpo_clipped_ratio(tmp_path: Path) -> None:
    cfg = build_config({**BASE, "methods": ["sft", "grpo"], "seeds": [1], "output": str(tmp_path / "r"),
                        "bootstrap": {"samples": 50}})
    runs = cfg.output / "runs"
    for run in ("base", "sft-s1", "grpo-s1"):
        _eval(runs / run / "eval", 2, "gold")
    # max_steps 3 below logging_steps 5: only the final train summary row, no training row
    _log(runs / "sft-s1" / "train", {"log_history": [{"train_loss": 2.0, "train_runtime": 1.0, "step": 3}],
                                     "global_step": 3, "max_steps": 3, "logging_steps": 5})
    _log(runs / "grpo-s1" / "train", {"log_history": [
        {"reward": 0.1, "completions/clipped_ratio": 0.9, "step": 1},
        {"reward": 0.6, "completions/clipped_ratio": 0.25, "step": 2}]})
    report = write_report(cfg, build_plan(cfg), {}, ["study.yaml"]).read_text()
    health = _section(report, "## Training health", "## Claims")
    assert "| run | stage | logged steps | signals (first tenth → last tenth) | clipped | verdict | why |" in health
    assert ("| sft-s1 | sft | 0 | — | — | **not measured** | no training step logged: the run took 3 step(s) and "
            "logs every 5 (max_steps below logging_steps); lower logging_steps or train longer |") in health
    assert re.search(r"^\| grpo-s1 \| grpo \| 2 \| reward 0\.100 → 0\.600; .* \| 90% → 25% \| learned \|", health,
                     re.M), health
    assert re.search(r"^\| sft \| 6 \| .* \| \*\*not measured\*\* \| ok \|$", report, re.M)
    saved = {h["run"]: h for h in json.loads((cfg.output / "results.json").read_text())["training_health"]}
    assert saved["sft-s1"]["verdict"] == "not measured" and saved["sft-s1"]["steps"] == 0


def test_claims_flag_a_method_whose_answers_grow_past_twice_sft_while_em_falls(tmp_path: Path) -> None:
    cfg = build_config({**BASE, "methods": ["sft", "dpo", "orpo", "kto"], "seeds": [1, 2, 3],
                        "output": str(tmp_path / "r"), "bootstrap": {"samples": 50}})
    runs = cfg.output / "runs"
    _eval(runs / "base" / "eval", 0, "x")
    for seed in (1, 2, 3):
        _eval(runs / f"sft-s{seed}" / "eval", 4, "gold")  # 1 word
        _eval(runs / f"dpo-s{seed}" / "eval", 2, "gold and more words")  # 4 words, EM -33: flagged
        _eval(runs / f"orpo-s{seed}" / "eval", 5, "gold and more words")  # 4 words but EM up: not flagged
        _eval(runs / f"kto-s{seed}" / "eval", 1, "gold too")  # EM down, 2 words = 2x, not past it: not flagged
    report = write_report(cfg, build_plan(cfg), {}, ["study.yaml"]).read_text()
    claims = _section(report, "## Claims (seeds pooled)", "## Training curves")
    assert ("**Length, not alignment: dpo** answers average 4.0 words, 4.0× SFT's 1.0, while its EM falls -33.3 "
            "points vs SFT (seeds 1, 2, 3): a SubEM or F1 gain here is bought with longer answers, not better "
            "alignment.") in claims
    assert claims.count("Length, not alignment") == 1
    assert json.loads((cfg.output / "results.json").read_text())["length_flags"] == [
        line for line in claims.splitlines() if line.startswith("**Length")]
