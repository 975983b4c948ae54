"""`qalign study` pieces without a model: the study file, the plan, resuming/failing steps, the report's figures."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from qalign.errors import QalignError
from qalign.evaluators.bootstrap import bootstrap_ci, paired_bootstrap
from qalign.evaluators.scoring import summarize, write_results
from qalign.study.config import REPO_ROOT, build_config, load_study
from qalign.study.plan import Step, build_plan
from qalign.study.report import NO_TEACHER, collect_rows, write_report
from qalign.study.runner import StepResult, run_steps

BASE = {"name": "u", "model": "m", "template": "smollm2", "recipes": "recipes/smollm2-135m", "train": "tr.jsonl",
        "test": "te.jsonl"}


def _steps(cfg) -> dict[str, Step]:
    return {step.name: step for step in build_plan(cfg)}


def _recipe(step: Step) -> dict:
    """What a train/predict step's recipe file holds (its argv names only that file)."""
    assert step.argv == [step.argv[0], str(step.recipe.path)] and step.recipe.path.name == "recipe.yaml"
    return step.recipe.content()


def test_study_file_defaults_overrides_and_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text("name: u\nmodel: m\ntemplate: smollm2\nrecipes: recipes/smollm2-135m\ntrain: a\ntest: b\n"
                    "overrides: {sft: {max_steps: 5}}\n")
    cfg = load_study(path, ["overrides.sft.max_steps=7", "train_args.bf16=true", "top_k=3"],
                     seeds=[1, 2], methods=["sft", "grpo"], output="out/x")
    assert cfg.methods == ["sft", "grpo"] and cfg.seeds == [1, 2] and cfg.output == Path("out/x")
    assert cfg.overrides["sft"] == {"max_steps": 7} and cfg.train_args == {"bf16": True} and cfg.top_k == 3
    assert cfg.recipes == REPO_ROOT / "recipes/smollm2-135m"  # found beside qalign when not in the cwd
    # --methods is the whole list of rows: no cot row (not even the no-teacher hint) unless it names cot
    assert cfg.bootstrap_samples == 1000 and cfg.row_methods == ["sft", "grpo"]
    assert build_config(BASE).output == Path("reports/u")
    for spec, message in [({**BASE, "method": ["sft"]}, "unknown key"), ({**BASE, "methods": ["ppo"]}, "ppo"),
                          ({**BASE, "name": "a b"}, "must use letters"), ({"name": "u"}, "missing key"),
                          ({**BASE, "overrides": {"sftt": {}}}, "overrides.sftt: not a method")]:
        with pytest.raises(QalignError, match=message):
            build_config(spec)



def test_an_overrides_file_goes_over_the_study_file_and_under_assignments(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: u\nmodel: m\ntemplate: smollm2\nrecipes: recipes/smollm2-135m\ntrain: a\ntest: b\n"
                    "overrides: {sft: {max_steps: 5}, dpo: {max_steps: 100, pref_beta: 0.1}}\n")
    best = tmp_path / "best.yaml"  # as `qalign sweep` writes it
    best.write_text("# chosen on the validation slice\noverrides:\n  dpo: {pref_beta: 0.5, learning_rate: 0.001}\n"
                    "  grpo: {reward_funcs: 'subem,f1,format'}\n")
    cfg = load_study(path, ["overrides.dpo.learning_rate=2e-4"], overrides_file=best)
    assert cfg.overrides == {"sft": {"max_steps": 5}, "dpo": {"max_steps": 100, "pref_beta": 0.5,
                                                               "learning_rate": 2e-4},
                             "grpo": {"reward_funcs": "subem,f1,format"}}
    steps = _steps(cfg)
    dpo = _recipe(steps["train dpo-s42"])
    assert {"pref_beta": 0.5, "learning_rate": 2e-4, "max_steps": 100}.items() <= dpo.items()
    for text, message in [("dpo: {pref_beta: 0.5}\n", r"best.yaml:1: an overrides file holds `overrides"),
                          ("overrides: [dpo]\n", "must be a mapping"), ("overrides: {dpo: 3}\n", "must be a mapping")]:
        best.write_text(text)
        with pytest.raises(QalignError, match=message):
            load_study(path, overrides_file=best)
    with pytest.raises(QalignError, match="overrides file not found"):
        load_study(path, overrides_file=tmp_path / "none.yaml")

def test_plan_names_datasets_by_study_and_merges_overrides() -> None:
    cfg = build_config({**BASE, "methods": ["sft", "dpo", "kto", "grpo"], "seeds": [3],
                        "train_args": {"max_steps": 9, "bf16": True}, "predict_args": {"max_new_tokens": 16},
                        "overrides": {"grpo": {"max_steps": 4, "predict": {"max_new_tokens": 8}}},
                        "mining_args": {"num_samples": 2, "margin": 0.2, "ignored": 1}})
    steps = _steps(cfg)
    assert list(steps)[:5] == ["data test", "data train", "data grpo", "data pref", "data kto"]
    assert steps["data pref"].argv[:2] == ["convert", "preference"] and "--num-samples" in steps["data pref"].argv
    samples = [s.argv[s.argv.index("--samples") + 1] for s in (steps["data pref"], steps["data kto"])]
    assert samples == ["data/u_samples.jsonl"] * 2  # mined once, shared
    assert "ignored" not in " ".join(steps["data kto"].argv)
    assert all("--margin 0.2" in " ".join(steps[s].argv) for s in ("data pref", "data kto"))
    grpo = _recipe(steps["train grpo-s3"])
    assert grpo["dataset"] == "u_grpo" and grpo["seed"] == 3 and grpo["max_steps"] == 4 and grpo["bf16"] is True
    assert grpo["max_steps"] != 9 and "predict" not in grpo
    assert _recipe(steps["train dpo-s3"])["dataset"] == "u_pref"
    assert _recipe(steps["train kto-s3"])["dataset"] == "u_kto"
    assert _recipe(steps["predict grpo-s3"])["max_new_tokens"] == 8
    assert _recipe(steps["predict sft-s3"])["max_new_tokens"] == 16
    assert _recipe(steps["predict sft-s3"])["adapter_name_or_path"] == "reports/u/runs/sft-s3/train"
    assert "adapter_name_or_path" not in _recipe(steps["predict base"])
    assert steps["train grpo-s3"].recipe.path == Path("reports/u/runs/grpo-s3/train/recipe.yaml")
    assert steps["predict grpo-s3"].recipe.path == Path("reports/u/runs/grpo-s3/predict/recipe.yaml")
    assert steps["eval kto-s3"].done == Path("reports/u/runs/kto-s3/eval/summary.json")
    assert not any("cot" in name for name in steps)

    with_cot = _steps(build_config({**BASE, "methods": ["sft"], "cot_teacher": "t.jsonl"}))
    assert with_cot["data cot"].argv[:2] == ["convert", "cot"] and "--teacher" in with_cot["data cot"].argv
    assert _recipe(with_cot["predict cot-s42"])["eval_dataset"] == "u_test_cot"  # tested with its think prompt
    assert "--prompt think_then_answer" in " ".join(with_cot["data test_cot"].argv)


def test_from_sft_mines_from_each_seeds_sft_run_and_continues_its_adapter() -> None:
    cfg = build_config({**BASE, "methods": ["dpo", "kto", "sft", "orpo"], "from_sft": ["dpo", "kto"],
                        "seeds": [1, 2], "mining_args": {"num_samples": 2}})
    assert cfg.row_methods == ["sft", "dpo", "kto", "orpo", "cot"] and cfg.label("dpo") == "dpo (from sft)"
    plan = build_plan(cfg)
    steps = {step.name: step for step in plan}
    order = list(steps)
    assert "data kto" not in steps and "data pref" in steps  # orpo still starts from the base model
    for seed in (1, 2):
        adapter = f"reports/u/runs/sft-s{seed}/train"
        pref, kto = steps[f"data pref_sft-s{seed}"], steps[f"data kto_sft-s{seed}"]
        assert pref.needs == (f"train sft-s{seed}",)  # KTO reads the samples the pairs drew: after them
        assert kto.needs == (f"data pref_sft-s{seed}", f"train sft-s{seed}")
        for mined in (pref, kto):
            assert mined.argv[mined.argv.index("--adapter") + 1] == adapter
            assert mined.argv[mined.argv.index("--samples") + 1] == f"data/u_samples_sft-s{seed}.jsonl"
        dpo = steps[f"train dpo-s{seed}"]
        assert {"dataset": f"u_pref_sft-s{seed}", "adapter_name_or_path": adapter, "ref_model": "m",
                "ref_model_adapters": adapter}.items() <= _recipe(dpo).items()
        assert dpo.needs == (f"data pref_sft-s{seed}", f"train sft-s{seed}")
        assert _recipe(steps[f"train kto-s{seed}"])["dataset"] == f"u_kto_sft-s{seed}"
        assert order.index(f"train sft-s{seed}") < order.index(f"data pref_sft-s{seed}") < order.index(
            f"train dpo-s{seed}")
    orpo = _recipe(steps["train orpo-s1"])
    assert orpo["dataset"] == "u_pref" and not any(k.startswith(("adapter_name_or_path", "ref_model")) for k in orpo)
    labels = [row.label for row in collect_rows(cfg, plan, {})]
    assert "dpo (from sft) (seed 1)" in labels and "orpo (seed 2)" in labels
    for spec, message in [({**BASE, "from_sft": ["ppo"]}, "ppo cannot start from SFT"),
                          ({**BASE, "methods": ["dpo"], "from_sft": "dpo"}, "sft is not in methods")]:
        with pytest.raises(QalignError, match=message):
            build_config(spec)


def test_grpo_from_sft_continues_the_adapter_on_the_same_prompts_and_from_base_stays() -> None:
    steps = _steps(build_config({**BASE, "methods": ["sft", "grpo"], "from_sft": ["grpo"], "seeds": [5]}))
    grpo = steps["train grpo-s5"]
    assert {"dataset": "u_grpo", "adapter_name_or_path": "reports/u/runs/sft-s5/train"}.items() <= \
        _recipe(grpo).items()
    assert not any(k.startswith("ref_model") for k in _recipe(grpo))  # GRPO's KL reference: the adapter-free base
    assert grpo.needs == ("data grpo", "train sft-s5") and not any(n.startswith("data pref") for n in steps)
    from_base = _steps(build_config({**BASE, "methods": ["sft", "grpo"], "seeds": [5]}))["train grpo-s5"]
    assert from_base.needs == ("data grpo",) and not any(k.startswith("adapter_name") for k in _recipe(from_base))


def test_missing_converter_or_recipe_fails_only_that_method(monkeypatch, tmp_path: Path) -> None:
    import qalign.converters.job as converters

    without = {name: kind for name, kind in converters.FORMAT_KINDS.items() if name != "preference"}
    monkeypatch.setattr(converters, "FORMAT_KINDS", without)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name in ("dpo.yaml", "predict.yaml"):  # no sft.yaml
        (recipes / name).write_text("stage: dpo\n")
    cfg = build_config({**BASE, "methods": ["sft", "dpo"], "recipes": str(recipes), "output": str(tmp_path / "out")})
    lines: list[str] = []
    results = run_steps(build_plan(cfg), cfg.output, dry_run=True, echo=lines.append)
    assert results["data pref"].state == "failed" and "`qalign convert preference` is not available" in \
        results["data pref"].reason
    assert results["train dpo-s42"].state == "blocked" and results["eval dpo-s42"].state == "blocked"
    assert results["train sft-s42"].state == "failed" and "sft.yaml not found" in results["train sft-s42"].reason
    assert results["data test"].state == "planned" and results["predict base"].state == "planned"
    assert results["data train"].state == "failed" and "no recipe uses it" in results["data train"].reason
    assert any(re.match(r"\[\d+/\d+\] train dpo-s42: not run \(`qalign convert preference`", line) for line in lines)
    rows = {row.label: row for row in collect_rows(cfg, build_plan(cfg), results)}
    assert rows["dpo"].status.startswith("not run: `qalign convert preference` is not available")
    assert rows["cot"].status == NO_TEACHER


def _raw(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"question": f"q {i}?", "answers": [f"a{i}"]}) + "\n" for i in range(n)))


def test_steps_resume_rerun_on_change_and_fail_with_the_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _raw(tmp_path / "r.jsonl", 3)
    first = Step("data a", ["convert", "eval", "--input", "r.jsonl", "--dataset", "a"], Path("data/a.json"))
    second = Step("data b", ["convert", "alpaca", "--input", "r.jsonl", "--dataset", "b"], Path("data/b.json"),
                  needs=("data a",))
    out = tmp_path / "out"
    assert [r.state for r in run_steps([first, second], out, echo=lambda _: None).values()] == ["ran", "ran"]
    lines: list[str] = []
    assert [r.state for r in run_steps([first, second], out, echo=lines.append).values()] == ["done", "done"]
    assert lines == ["[1/2] data a: skip (done)", "[2/2] data b: skip (done)"]
    changed = Step(first.name, [*first.argv, "--top-k", "0"], first.done)
    lines.clear()
    run_steps([changed, second], out, echo=lines.append)
    assert lines[0] == "[1/2] data a: running (command changed) ..." and "running (inputs changed)" in lines[2]

    broken = Step("data c", ["convert", "eval", "--input", "missing.jsonl", "--dataset", "c"], Path("data/c.json"))
    after = Step("data d", second.argv, Path("data/d.json"), needs=("data c",))
    results = run_steps([broken, after], out, echo=lambda _: None)
    assert results["data c"].state == "failed" and "missing.jsonl: file not found" in results["data c"].reason
    assert results["data c"].log and results["data c"].log.is_file()
    assert results["data d"] == StepResult("blocked", results["data c"].reason)


def test_a_train_step_writes_its_recipe_file_and_reruns_when_its_keys_change(monkeypatch, tmp_path: Path) -> None:
    from dataclasses import replace

    import yaml

    import qalign.study.runner as runner
    from qalign.overrides import override_args

    seen: list[dict] = []

    def execute(step: Step, log: Path) -> int:  # what `qalign train FILE` would read
        seen.append(yaml.safe_load(Path(step.argv[1]).read_text()))
        step.done.parent.mkdir(parents=True, exist_ok=True)
        step.done.write_text("{}")
        return 0

    monkeypatch.setattr(runner, "_execute", execute)
    cfg = build_config({**BASE, "methods": ["sft"], "output": str(tmp_path / "r"), "train_args": {"max_steps": 3}})
    train = replace(_steps(cfg)["train sft-s42"], needs=())  # its data step is not part of this test
    assert run_steps([train], cfg.output, echo=lambda _: None)["train sft-s42"].state == "ran"
    written = yaml.safe_load(train.recipe.path.read_text())
    source = yaml.safe_load(train.recipe.source.read_text())
    assert written == seen[0] == {**source, "model_name_or_path": "m", "template": "smollm2", "dataset": "u_train",
                                  "output_dir": str(tmp_path / "r/runs/sft-s42/train"), "seed": 42, "max_steps": 3}
    record = json.loads((cfg.output / "steps" / "train-sft-s42.json").read_text())
    assert record["argv"] == ["train", str(train.recipe.path)] and record["recipe"]["keys"]["max_steps"] == 3
    lines: list[str] = []
    run_steps([train], cfg.output, echo=lines.append)
    assert lines == ["[1/1] train sft-s42: skip (done)"] and len(seen) == 1
    changed = _steps(build_config({**BASE, "methods": ["sft"], "output": str(tmp_path / "r"),
                                   "train_args": {"max_steps": 4}}))["train sft-s42"]
    changed = replace(changed, needs=())
    run_steps([changed], cfg.output, echo=lines.append)
    assert lines[1] == "[1/1] train sft-s42: running (command changed) ..." and seen[1]["max_steps"] == 4
    assert yaml.safe_load(changed.recipe.path.read_text())["max_steps"] == 4
    # a record of the recipe + key=value argv such a step ran with before recipe files still counts as done
    legacy = {"argv": ["train", str(changed.recipe.source), *override_args(changed.recipe.keys)], "seconds": 1.0}
    (cfg.output / "steps" / "train-sft-s42.json").write_text(json.dumps(legacy))
    assert run_steps([changed], cfg.output, echo=lambda _: None)["train sft-s42"].state == "done"


def _timed_steps(monkeypatch, tmp_path: Path, seconds: float = 0.3) -> dict[str, tuple[float, float]]:
    """Replace the subprocess with a sleep that writes the done-marker (`fail` in a name: exit 1); record spans."""
    import threading

    import qalign.study.runner as runner

    spans: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()

    def execute(step: Step, log: Path) -> int:
        start = time.monotonic()
        time.sleep(seconds)
        if "fail" in step.name:
            return 1
        step.done.parent.mkdir(parents=True, exist_ok=True)
        step.done.write_text("done")
        with lock:
            spans[step.name] = (start, time.monotonic())
        return 0

    monkeypatch.setattr(runner, "_execute", execute)
    return spans


def test_jobs_run_independent_steps_side_by_side_and_needs_in_order(monkeypatch, tmp_path: Path) -> None:
    spans = _timed_steps(monkeypatch, tmp_path)
    done = tmp_path / "done"
    steps = [Step("a", [], done / "a"), Step("b", [], done / "b"), Step("c", [], done / "c", needs=("a", "b")),
             Step("fail d", [], done / "d"), Step("e", [], done / "e", needs=("fail d",)),
             Step("f", [], done / "f", needs=("c",))]
    lines: list[str] = []
    results = run_steps(steps, tmp_path / "out", jobs=2, echo=lines.append)
    assert {name: r.state for name, r in results.items()} == {"a": "ran", "b": "ran", "c": "ran", "fail d": "failed",
                                                               "e": "blocked", "f": "ran"}
    assert spans["a"][0] < spans["b"][1] and spans["b"][0] < spans["a"][1], "a and b did not overlap"
    assert spans["c"][0] >= max(spans["a"][1], spans["b"][1]) and spans["f"][0] >= spans["c"][1]
    assert lines[:2] == ["[1/6] a: running ...", "[2/6] b: running ..."]  # earliest in the plan first
    assert "[5/6] e: not run (fail d failed (exit 1; log " in "\n".join(lines)
    # one job: strictly one after another, the same results; a rerun skips what is done
    for path in done.iterdir():
        path.unlink()
    spans.clear()
    sequential = run_steps(steps, tmp_path / "out", jobs=1, echo=lambda _: None)
    assert {n: r.state for n, r in sequential.items()} == {n: r.state for n, r in results.items()}
    ordered = sorted(spans.values())
    pairs = zip(ordered, ordered[1:], strict=False)
    assert all(end <= later[0] for (_, end), later in pairs), "steps overlapped with jobs=1"
    again = run_steps(steps, tmp_path / "out", jobs=3, echo=lambda _: None)
    assert [again[n].state for n in ("a", "b", "c", "f")] == ["done"] * 4
    with pytest.raises(ValueError, match="steps wait on each other: x, y"):
        run_steps([Step("x", [], done / "x", needs=("y",)), Step("y", [], done / "y", needs=("x",))],
                  tmp_path / "out", jobs=2, echo=lambda _: None)


def _fake_eval(folder: Path, scores: dict[str, tuple[float, float, float]]) -> None:
    rows = [{"id": qid, "question": f"question {qid}", "prediction": f"pred {qid}", "answers": ["gold"],
             "subem": s, "em": e, "f1": f} for qid, (s, e, f) in scores.items()]
    write_results(folder, rows, summarize(rows))


def test_report_figures_match_the_bootstrap(tmp_path: Path) -> None:
    cfg = build_config({**BASE, "methods": ["sft", "grpo"], "seeds": [1, 2], "output": str(tmp_path / "r"),
                        "bootstrap": {"samples": 300, "seed": 4}})
    ids = [f"q{i}" for i in range(8)]
    base = dict(zip(ids, [1, 0, 0, 1, 0, 0, 0, 1], strict=True))
    sft1 = dict(zip(ids, [1, 1, 0, 1, 1, 0, 1, 0], strict=True))
    sft2 = dict(zip(ids, [1, 1, 1, 1, 0, 0, 1, 1], strict=True))
    for run, subem in (("base", base), ("sft-s1", sft1), ("sft-s2", sft2)):
        _fake_eval(cfg.output / "runs" / run / "eval", {q: (float(v), float(v), 0.5 * v) for q, v in subem.items()})
    report = write_report(cfg, build_plan(cfg), {}, ["study.yaml"]).read_text()

    base_ci = bootstrap_ci(list(map(float, base.values())), 300, 4)
    assert f"| base | 8 | {base_ci.format()} |" in report
    delta = paired_bootstrap({q: float(v) for q, v in sft1.items()}, {q: float(v) for q, v in base.items()}, 300, 4)
    # no trainer logs: the run is `not measured` (listed in Training health), and its differences say so
    assert re.search(rf"^\| sft \(seed 1\) \(\*\*not measured\*\*\) \| {re.escape(delta.format(signed=True))} \|",
                     report, re.M)
    mean = bootstrap_ci([(a + b) / 2 for a, b in zip(sft1.values(), sft2.values(), strict=True)], 300, 4)
    assert f"| sft (mean of seeds 1, 2) | 8 | {mean.format()} |" in report
    assert re.search(r"^\| grpo \(seed 1\) \| — \| — \| — \| — \| — \| — \| — \| not run \|$", report, re.M)
    # sft seed 2 wins over base on q1, q2, q6 and over seed 1 on q2, q7; base wins over seed 2 on none
    assert "| sft (seed 2) | 3 | 2 | — |" in report and "| base | — | 1 | 0 |" in report
    assert "Examples, base → best method by SubEM (`sft (seed 2)`)" in report and "**3 wins" in report
    assert "**0 losses" in report and "No training logs found" in report
    assert (cfg.output / "methods.png").is_file() and not (cfg.output / "training_curves.png").exists()
    saved = json.loads((cfg.output / "results.json").read_text())["rows"]
    assert saved[0]["subem"] == {"mean": base_ci.mean, "low": base_ci.low, "high": base_ci.high, "n": 8}


def _log(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": rows}))


def test_report_marks_runs_that_did_not_learn_and_claims_only_what_every_seed_holds(tmp_path: Path) -> None:
    cfg = build_config({**BASE, "methods": ["sft", "dpo"], "from_sft": ["dpo"], "seeds": [1, 2, 3],
                        "test": "nq.dev.jsonl", "output": str(tmp_path / "r"), "bootstrap": {"samples": 300}})
    ids = [f"q{i}" for i in range(10)]
    right = {"base": 0, "sft-s1": 4, "sft-s2": 3, "sft-s3": 5, "dpo-s1": 5, "dpo-s2": 4, "dpo-s3": 6}
    for run, n in right.items():  # the first n questions right
        _fake_eval(cfg.output / "runs" / run / "eval", {q: (float(i < n),) * 2 + (0.5 * (i < n),)
                                                          for i, q in enumerate(ids)})
        if run.startswith("sft"):
            _log(cfg.output / "runs" / run / "train", [{"loss": 2.0}, {"loss": 1.0}])
        elif run != "base":  # dpo seed 3 stays at ln 2
            flat = run == "dpo-s3"
            _log(cfg.output / "runs" / run / "train",
                 [{"loss": 0.693, "rewards/accuracies": 0.5}, {"loss": 0.69 if flat else 0.4,
                                                               "rewards/accuracies": 0.5 if flat else 0.9}])
    report = write_report(cfg, build_plan(cfg), {}, ["study.yaml"]).read_text()
    assert "scored on `nq.dev.jsonl`, the **dev** split" in report and "## Results on the dev set" in report
    assert re.search(r"^\| dpo \(from sft\) \(seed 3\) \| 10 \| .* \| \*\*did not learn\*\* \| ok \|$", report, re.M)
    assert re.search(r"^\| dpo \(from sft\) \(seed 1\) \| 10 \| .* \| learned \| ok \|$", report, re.M)
    assert re.search(r"^\| dpo \(from sft\) \(mean of seeds 1, 2, 3\) .* \| \*\*did not learn: seed 3\*\* \|", report,
                     re.M)
    health = report.split("## Training health", 1)[1].split("## Claims", 1)[0]
    assert "Rule: SFT learned when" in health and "| sft-s1 | sft | 2 | loss 2.000 → 1.000 | — | learned |" in health
    assert "| dpo-s3 | dpo | 2 | loss 0.693 → 0.690; rewards/accuracies 0.500 → 0.500 | — | **did not learn** |" \
        in health

    claims = report.split("## Claims (seeds pooled)", 1)[1].split("## Training curves", 1)[0]
    # sft vs base: +40, +30, +50 per seed; pooled per question: q0-q2 1, q3 2/3, q4 1/3, the rest 0
    pooled = bootstrap_ci([1, 1, 1, 2 / 3, 1 / 3, 0, 0, 0, 0, 0], 300, 0)
    assert f"| sft | base | SubEM | 1, 2, 3 | +40.0, +30.0, +50.0 | +40.0 | {pooled.format(signed=True)} | sft beats " \
           "base on SubEM |" in claims
    # dpo vs sft: +10 on every seed, but seed 3 never left ln 2: no claim
    dpo = bootstrap_ci([0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0], 300, 0)
    assert f"| dpo (from sft) | sft | SubEM | 1, 2, 3 | +10.0, +10.0, +10.0 | +10.0 | {dpo.format(signed=True)} | " \
           "no difference found (dpo seed 3 did not visibly learn) |" in claims
    assert "Claims that hold: sft beats base on SubEM; sft beats base on F1." in claims
    saved = json.loads((cfg.output / "results.json").read_text())
    assert saved["test_split"] == "dev" and {h["run"]: h["verdict"] for h in saved["training_health"]}["dpo-s3"] == \
        "did not learn"
    first = saved["claims"][0]
    assert first["method"] == "sft" and first["per_seed"] == pytest.approx([0.4, 0.3, 0.5])
    assert [r["training"] for r in saved["rows"][:2]] == [None, "learned"]


def test_predict_steps_go_to_warm_workers_unless_cold(monkeypatch, tmp_path: Path) -> None:
    """run_steps hands predict steps a warm pool (qalign.study.warm) for its run; --cold or QALIGN_COLD_STEPS=1 not."""
    import argparse

    from qalign.study import runner
    from qalign.study.runner import add_run_options
    from qalign.study.warm import takes

    seen: list[bool] = []

    def execute(step: Step, log: Path) -> int:
        seen.append(runner._warm is not None)  # noqa: SLF001 - the pool _execute would use
        step.done.parent.mkdir(parents=True, exist_ok=True)
        step.done.write_text("done")
        return 0

    monkeypatch.setattr(runner, "_execute", execute)
    monkeypatch.delenv("QALIGN_COLD_STEPS", raising=False)
    for name, cold in (("warm", False), ("cold", True)):
        step = Step(name, ["predict", "r.yaml"], tmp_path / name / "done")
        assert run_steps([step], tmp_path / name, echo=lambda _: None, cold=cold)[name].state == "ran"
    monkeypatch.setenv("QALIGN_COLD_STEPS", "1")
    assert run_steps([Step("env", ["predict", "r.yaml"], tmp_path / "env/done")], tmp_path / "env",
                     echo=lambda _: None)["env"].state == "ran"
    assert seen == [True, False, False] and runner._warm is None  # noqa: SLF001 - closed with its run
    assert takes(["predict", "r.yaml"]) and takes(["predict", "r.yaml", "max_new_tokens=4"])
    assert not takes(["predict", "--help"]) and not takes(["train", "r.yaml"]) and not takes(["predict"])
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    assert parser.parse_args(["--cold"]).cold and not parser.parse_args([]).cold
