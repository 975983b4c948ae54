"""`qalign sweep GRID.yaml`: a GRPO grid (prompt variant x num_generations x beta), each run trained, predicted
and scored, collected into one markdown table.

A run is `qalign train BASE.yaml overrides` -> `qalign train PREDICT.yaml adapter_name_or_path=...` ->
`qalign eval`, in OUTPUT_DIR/<run>/{train,predict,eval}. Each step whose output exists is skipped, so a sweep
resumes where it stopped; a run whose eval/summary.json exists is finished. Grid file keys: see
recipes/smollm2-135m/grpo-sweep.yaml.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.io import atomic_write_text, read_yaml_mapping
from qalign.overrides import override_args

TABLE_FILE = "sweep.md"
_REQUIRED = ("base", "predict", "output_dir", "prompts", "num_generations", "beta")


@dataclass(frozen=True)
class Run:
    """One grid point and its folders."""

    variant: str
    dataset: str
    eval_set: str
    num_generations: int
    beta: float
    root: Path
    train_args: tuple[str, ...] = ()
    predict_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.variant}-g{self.num_generations}-b{self.beta:g}"

    def folder(self, step: str) -> Path:
        return self.root / self.name / step


def _as_list(spec: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = spec[key]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise QalignError(f"{path}: `{key}` is empty; give at least one value, e.g. {key}: [4, 8].")
    return values


def _overrides(value: Any, key: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise QalignError(f"{path}: `{key}` must be a mapping of LLaMA-Factory keys, e.g. {key}: {{max_steps: 20}}.")
    return value


def load_grid(path: str | Path) -> tuple[list[Run], dict[str, Any]]:
    """Read the grid file: every run (variant x num_generations x beta) and the shared settings."""
    path = Path(path)
    spec = read_yaml_mapping(path, "grid file", "recipes/smollm2-135m/grpo-sweep.yaml", _REQUIRED)
    missing = [key for key in _REQUIRED if key not in spec]
    if missing:
        raise QalignError(f"{path}: missing key(s) {', '.join(missing)}; see recipes/smollm2-135m/grpo-sweep.yaml.")
    prompts = spec["prompts"]
    if isinstance(prompts, list):  # a list of dataset names: each is its own variant
        prompts = {name: name for name in prompts}
    if not isinstance(prompts, dict) or not prompts:
        raise QalignError(f"{path}: `prompts` maps variant -> dataset or {{dataset, eval_set, train_args, ...}}.")
    variants = []
    for variant, value in prompts.items():
        value = {"dataset": value} if isinstance(value, str) else dict(value or {})
        eval_set = value.get("eval_set", spec.get("eval_set"))
        if not value.get("dataset") or not eval_set:
            raise QalignError(f"{path}: prompt variant `{variant}` needs a dataset and an eval_set "
                              "(its own or the top-level `eval_set`).")
        # a variant's own train_args/predict_args come after the shared ones, so they win
        extra = tuple(override_args(_overrides(spec.get(key), key, path), _overrides(value.get(key), key, path))
                      for key in ("train_args", "predict_args"))
        variants.append((str(variant), str(value["dataset"]), str(eval_set), *extra))
    root = Path(spec["output_dir"])
    runs = [Run(variant, dataset, eval_set, int(g), float(b), root, tuple(train_args), tuple(predict_args))
            for (variant, dataset, eval_set, train_args, predict_args), g, b in itertools.product(
                variants, _as_list(spec, "num_generations", path), _as_list(spec, "beta", path))]
    return runs, {"base": spec["base"], "predict": spec["predict"], "root": root}


def _qalign(args: list[str], log: Path) -> None:
    """Run `qalign ARGS` in a subprocess (a fresh process per training run), output to LOG; raise on failure."""
    from qalign.procs import run_in_subprocess

    code = run_in_subprocess(args, log)
    if code != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise QalignError(f"`qalign {' '.join(args)}` exited with {code}; last lines of {log}:\n{tail}")


def run_steps(run: Run, shared: dict[str, Any], common: list[str], grpo_only: list[str], force: bool) -> None:
    """Train, predict and score one run, skipping every step whose output already exists (unless force)."""
    from qalign.evaluators.scoring import evaluate

    train, predict, evaluation = run.folder("train"), run.folder("predict"), run.folder("eval")
    if force or not (train / "train_results.json").is_file():
        _qalign(["train", shared["base"], f"dataset={run.dataset}", f"num_generations={run.num_generations}",
                 f"beta={run.beta}", f"output_dir={train}", *run.train_args, *common, *grpo_only],
                run.root / run.name / "train.log")
    predictions = predict / "generated_predictions.jsonl"
    if force or not predictions.is_file():
        _qalign(["predict", shared["predict"], f"adapter_name_or_path={train}", f"eval_dataset={run.eval_set}",
                 f"output_dir={predict}", *run.predict_args, *common], run.root / run.name / "predict.log")
    evaluate(predictions, Path("data") / f"{run.eval_set}.json", evaluation)  # QalignError names the file


def _reward_trend(train_dir: Path) -> str:
    try:
        history = json.loads((train_dir / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    except (OSError, ValueError, KeyError):
        return "—"
    rewards = [row["reward"] for row in history if "reward" in row]
    return f"{rewards[0]:.2f} → {rewards[-1]:.2f}" if rewards else "—"


def format_table(runs: list[Run], status: dict[str, str]) -> str:
    """Markdown table of every run: settings, SubEM/EM/F1 (%) of its eval, and the train reward trend."""
    from qalign.evaluators.report import load_summary

    lines = ["| run | prompt | dataset | eval set | G | beta | n | SubEM | EM | F1 | reward first → last | status |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for run in runs:
        try:
            summary = load_summary(run.folder("eval"))
            scores = [str(summary["n"])] + [f"{100 * summary[key]:.1f}" for key in ("subem", "em", "f1")]
        except QalignError:
            scores = ["—"] * 4
        cells = [run.name, run.variant, run.dataset, run.eval_set, str(run.num_generations), f"{run.beta:g}",
                 *scores, _reward_trend(run.folder("train")), status.get(run.name, "—")]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n\nScores in % on each run's eval set; reward = mean GRPO reward of the first and " \
                              "last logged training step.\n"


def run_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) the grid, then print and write OUTPUT_DIR/sweep.md; exit 1 if any run failed."""
    from qalign.grpo.args import GRPO_KEYS

    runs, shared = load_grid(args.grid)
    # GRPO keys (num_generations, temperature, ...) only make sense for training; the rest go to both steps.
    grpo_only = [o for o in args.overrides if o.split("=", 1)[0] in GRPO_KEYS]
    common = [o for o in args.overrides if o not in grpo_only]
    status: dict[str, str] = {}
    for index, run in enumerate(runs, start=1):
        label = f"[{index}/{len(runs)}] {run.name}"
        if not args.force and (run.folder("eval") / "summary.json").is_file():
            status[run.name] = "done (kept)"
            print(f"{label}: finished earlier, skipped")
            continue
        if args.dry_run:
            status[run.name] = "planned"
            print(f"{label}: would train {run.dataset}, predict and score {run.eval_set} in {run.root / run.name}")
            continue
        start = time.time()
        print(f"{label}: training, predicting and scoring in {run.root / run.name} ...", flush=True)
        try:
            run_steps(run, shared, common, grpo_only, args.force)
            status[run.name] = f"ok ({time.time() - start:.0f} s)"
        except QalignError as exc:
            status[run.name] = "failed"
            print(f"{label}: failed: {exc}", file=sys.stderr)
    table = format_table(runs, status)
    print(table, end="")
    if not args.dry_run:
        atomic_write_text(Path(shared["root"]) / TABLE_FILE, table)
        print(f"wrote {Path(shared['root']) / TABLE_FILE}")
    return 1 if "failed" in status.values() else 0


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `sweep`: run a GRPO grid and collect the scores into one markdown table."""
    parser = subparsers.add_parser(
        "sweep", help="GRPO grid (prompt variant x num_generations x beta): train, predict, eval, one table",
        description="Run every grid point of GRID.yaml as `qalign train` (GRPO) + predict + `qalign eval`, "
        "skipping finished steps, and write OUTPUT_DIR/sweep.md. Example: qalign sweep "
        "recipes/smollm2-135m/grpo-sweep.yaml model_name_or_path=models/smollm2-135m-instruct",
    )
    parser.add_argument("grid", metavar="GRID.yaml", help="grid file (keys: base, predict, output_dir, eval_set, "
                        "prompts, num_generations, beta, train_args, predict_args)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="LLaMA-Factory overrides for train and predict (GRPO keys go to train only)")
    parser.add_argument("--force", action="store_true", help="re-run every step, even finished ones")
    parser.add_argument("--dry-run", action="store_true", help="list the runs without running them")
    parser.set_defaults(func=run_sweep)
    return parser
