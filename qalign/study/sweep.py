"""`qalign sweep SWEEP.yaml`: a grid over any method's recipe keys, chosen on a validation slice of the train file.

A sweep file is a study file (or `study: FILE` plus study keys that override it) with three more keys:
`val_limit` (the validation slice: that many train-file questions after the first `train_limit`, none trained on),
`metric` (subem, em or f1: what the best setting maximises) and `grid` (METHOD -> {recipe key: [values]}).
Each grid point is a study run `<method>-<setting>-s<seed>`, planned by `qalign.study.plan.build_sweep_plan` and
run by the study's runner, so finished steps are skipped through their done-markers. Nothing is scored on dev or
test. OUTPUT/sweep.md holds the table; OUTPUT/best.yaml the best setting per method as study `overrides`.
"""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.io import atomic_write_text, read_yaml_mapping
from qalign.overrides import apply_dotlist, deep_merge, override_value

TABLE_FILE = "sweep.md"
BEST_FILE = "best.yaml"
_SWEEP_KEYS = ("study", "grid", "metric")
_LEGACY = ("base", "prompts", "num_generations")
_EXAMPLE = "recipes/smollm2-135m/grpo-sweep.yaml"
Point = tuple[str, str, dict[str, Any]]  # (method, setting name, recipe keys)


def _setting_name(values: dict[str, Any]) -> str:
    text = "-".join(f"{key}{override_value(value)}" for key, value in values.items())
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_") or "default"


def grid_points(grid: Any, where: str) -> list[Point]:
    """Every (method, setting, keys) of `grid`: the product of each method's value lists, in file order."""
    from qalign.study.config import METHODS

    if not isinstance(grid, dict) or not grid:
        raise QalignError(f"{where}: `grid` maps a method to its recipe keys and values, e.g. "
                          "grid: {grpo: {learning_rate: [1.0e-5, 1.0e-4]}}.")
    points: list[Point] = []
    for method, keys in grid.items():
        if method not in METHODS:
            raise QalignError(f"{where}: grid.{method}: not a method; use one of {', '.join(METHODS)}.")
        if not isinstance(keys, dict) or not keys:
            raise QalignError(f"{where}: grid.{method} must map recipe keys to value lists, e.g. "
                              "{beta: [0.0, 0.04]}.")
        lists = {key: value if isinstance(value, list) else [value] for key, value in keys.items()}
        empty = [key for key, value in lists.items() if not value]
        if empty:
            raise QalignError(f"{where}: grid.{method}.{empty[0]} is empty; give at least one value.")
        for combo in itertools.product(*lists.values()):
            values = dict(zip(lists, combo, strict=True))
            points.append((str(method), _setting_name(values), values))
    names = [(m, s) for m, s, _ in points]
    if len(set(names)) != len(names):
        raise QalignError(f"{where}: two grid points of one method share a name; give each value once.")
    return points


def load_sweep(path: str | Path, assignments: list[str] | None = None, *, seeds: list[int] | None = None,
               output: str | None = None) -> tuple[Any, list[Point], str]:
    """The sweep's study config (scored on its validation slice), its grid points and the metric it maximises."""
    from qalign.evaluators.scoring import METRICS
    from qalign.study.config import _resolve, build_config, read_yaml

    path = Path(path)
    spec = read_yaml_mapping(path, "sweep file", _EXAMPLE)
    if all(key in spec for key in _LEGACY):
        raise QalignError(f"{path}: this is the old GRPO-only grid (base/predict/prompts/num_generations/beta), which "
                          f"scored on dev; write it as a sweep file (study keys + val_limit + grid), see {_EXAMPLE}.")
    spec = apply_dotlist(spec, assignments or [])
    study_file = spec.get("study")
    base: dict[str, Any] = {}
    if study_file:
        beside = path.parent / str(study_file)
        base = read_yaml(beside if beside.is_file() else _resolve(str(study_file)))
    merged = deep_merge(base, {k: v for k, v in spec.items() if k not in _SWEEP_KEYS})
    if "name" not in spec and merged.get("name"):
        merged["name"] = f"{merged['name']}-sweep"  # its own datasets and folder, apart from the study's
    merged.setdefault("test", merged.get("train"))  # never read: a sweep is scored on its validation slice
    points = grid_points(spec.get("grid"), str(path))
    methods = list(dict.fromkeys(method for method, _, _ in points))
    from_sft = [m for m in (merged.get("from_sft") or []) if m in methods]
    merged |= {"methods": (["sft"] if from_sft and "sft" not in methods else []) + methods, "from_sft": from_sft}
    if seeds:
        merged["seeds"] = seeds
    if output:
        merged["output"] = output
    if not merged.get("val_limit"):
        raise QalignError(f"{path}: a sweep chooses on a validation slice of the train file, never dev or test: set "
                          "val_limit (and train_limit), e.g. train_limit: 1024 and val_limit: 200.")
    metric = str(spec.get("metric", "f1")).lower()
    if metric not in METRICS:
        raise QalignError(f"{path}: metric {metric!r}: choose one of {', '.join(METRICS)}.")
    return build_config(merged, path, exact_methods=True), points, metric  # the grid's methods, no implied cot


def check_points(cfg: Any, points: list[Point]) -> None:
    """Every grid point's keys checked as the study checks its overrides (known key, right type)."""
    from dataclasses import replace

    from qalign.study.validate import check_study

    check_study(cfg)
    for method, _, values in points:
        check_study(replace(cfg, overrides={**cfg.overrides, method: {**cfg.overrides.get(method, {}), **values}}))


def _summary(cfg: Any, run: str) -> dict[str, Any] | None:
    from qalign.evaluators.report import load_summary
    from qalign.study.plan import run_dir

    try:
        return load_summary(run_dir(cfg, run) / "eval")
    except QalignError:
        return None


def _health(cfg: Any, method: str, run: str, grid: dict[str, Any] | None = None) -> Any:
    from qalign.study.claims import row_health
    from qalign.study.plan import run_dir

    return row_health(cfg, method, run_dir(cfg, run) / "train", grid)


def best_settings(cfg: Any, points: list[Point], metric: str) -> dict[str, dict[str, Any]]:
    """Per method, the setting with the highest mean `metric` over seeds (every seed evaluated), preferring
    settings whose runs all learned; ties keep the earlier setting."""
    from qalign.study.plan import run_id

    best: dict[str, dict[str, Any]] = {}
    for method, setting, values in points:
        runs = [run_id(f"{method}-{setting}", seed) for seed in cfg.seeds]
        summaries = [_summary(cfg, run) for run in runs]
        if any(summary is None for summary in summaries):
            continue
        health = [_health(cfg, method, run, values) for run in runs]
        mean = sum(float(summary[metric]) for summary in summaries) / len(summaries)
        learned = all(h is not None and h.learned for h in health)
        if method not in best or (learned, mean) > (best[method]["learned"], best[method]["mean"]):
            best[method] = {"setting": setting, "values": values, "mean": mean, "learned": learned}
    return best


def _status(run: str, steps: list[Any], results: dict[str, Any]) -> str:
    for step in steps:
        result = results.get(step.name)
        if step.run == run and result is not None and result.state in ("failed", "blocked"):
            return "not run: " + result.reason
    return "ok" if all(results.get(s.name) is not None and results[s.name].state in ("ran", "done")
                       for s in steps if s.run == run) else "not run"


def sweep_table(cfg: Any, points: list[Point], metric: str, steps: list[Any], results: dict[str, Any],
                best: dict[str, dict[str, Any]]) -> str:
    """sweep.md: where it was scored, one row per run (base first, then the SFT runs that from_sft points
    continue), the best setting per method."""
    from qalign.evaluators.scoring import METRIC_LABELS
    from qalign.health import PREFERENCE_LOSS, RULES
    from qalign.study.plan import run_id

    lines = [f"# Sweep `{cfg.name}`", "", f"Scored on a validation slice: the {cfg.val_limit} questions of "
             f"`{cfg.train}` after the first {cfg.train_limit} (dataset `{cfg.dataset('val')}`), which no run "
             "trained on; no run was scored on dev or test.", "",
             "| method | setting | seed | n | SubEM | EM | F1 | training | signal first → last tenth | status |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    rows: list[tuple[str, str, int | None, str, dict[str, Any]]] = [("base", "—", None, "base", {})]
    if cfg.from_sft and "sft" not in {m for m, _, _ in points}:  # the runs the from-SFT points continue
        rows += [("sft", "default (from_sft start)", seed, run_id("sft", seed), {}) for seed in cfg.seeds]
    rows += [(m, s, seed, run_id(f"{m}-{s}", seed), grid) for m, s, grid in points for seed in cfg.seeds]
    for method, setting, seed, run, grid in rows:
        summary = _summary(cfg, run)
        scores = [str(summary["n"]), *(f"{100 * summary[k]:.1f}" for k in ("subem", "em", "f1"))] if summary \
            else ["—"] * 4
        health = _health(cfg, method, run, grid) if seed is not None else None
        key = "reward" if method == "grpo" else "loss"
        if health and PREFERENCE_LOSS in health.signals:  # the preference part, when `loss` also holds pref_ftx's
            key = PREFERENCE_LOSS
        trend = health.signals.get(key) if health else None
        cells = [method, setting, "—" if seed is None else str(seed), *scores,
                 health.verdict if health else "—", f"{key} {trend[0]:.3f} → {trend[1]:.3f}" if trend else "—",
                 _status(run, steps, results)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", f"Scores in % of the validation slice. training: {RULES}", "",
              f"## Best setting per method (mean {METRIC_LABELS[metric]} over seeds {', '.join(map(str, cfg.seeds))})",
              ""]
    for method, chosen in best.items():
        values = ", ".join(f"{k}={override_value(v)}" for k, v in chosen["values"].items())
        note = "" if chosen["learned"] else " — no setting of this method learned on every seed"
        lines.append(f"- {method}: `{values}` ({100 * chosen['mean']:.1f}){note}")
    if not best:
        lines.append("No setting was evaluated on every seed.")
    return "\n".join(lines) + "\n"


def best_yaml(cfg: Any, metric: str, best: dict[str, dict[str, Any]], source: str) -> str:
    """best.yaml: the chosen settings as study `overrides`, with where and how they were chosen."""
    import yaml

    header = [f"# Best setting per method of `qalign sweep {source}`, by mean {metric} over seeds "
              f"{', '.join(map(str, cfg.seeds))}", f"# on {cfg.val_limit} questions of {cfg.train} after the first "
              f"{cfg.train_limit} (never dev or test). Paste `overrides` into a study file, or pass",
              "# overrides.METHOD.KEY=VALUE to `qalign study`."]
    header += [f"# {m}: {metric} {100 * c['mean']:.1f}{'' if c['learned'] else ' (did not learn on every seed)'}"
               for m, c in best.items()]
    body = yaml.safe_dump({"overrides": {m: c["values"] for m, c in best.items()}}, sort_keys=False)
    return "\n".join(header) + "\n" + body


def run_sweep(args: argparse.Namespace) -> int:
    """Plan, run or resume every grid point, then write sweep.md and best.yaml; exit 1 when a step failed."""
    from qalign.study.plan import build_sweep_plan
    from qalign.study.runner import run_steps
    cfg, points, metric = load_sweep(args.sweep, args.assignments, seeds=args.seeds, output=args.output)
    check_points(cfg, points)
    steps = build_sweep_plan(cfg, points)
    print(f"sweep {cfg.name}: {len(points)} setting(s) x {len(cfg.seeds)} seed(s), {len(steps)} steps; scored on "
          f"{cfg.val_limit} train-file questions after the first {cfg.train_limit}; output {cfg.output}", flush=True)
    results = run_steps(steps, cfg.output, force=args.force, dry_run=args.dry_run, jobs=args.jobs,
                        cold=args.cold, echo=lambda line: print(line, flush=True))
    if args.dry_run:
        return 0
    best = best_settings(cfg, points, metric)
    table = sweep_table(cfg, points, metric, steps, results, best)
    atomic_write_text(cfg.output / TABLE_FILE, table)
    atomic_write_text(cfg.output / BEST_FILE, best_yaml(cfg, metric, best, args.sweep))
    print(table, end="")
    print(f"wrote {cfg.output / TABLE_FILE} and {cfg.output / BEST_FILE}")
    return 1 if any(result.state == "failed" for result in results.values()) else 0


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `sweep`: a grid over any method's recipe keys, scored on a validation slice, one table."""
    parser = subparsers.add_parser(
        "sweep", help="grid over any method's recipe keys, scored on a validation slice of the train file",
        description="Train every grid point of SWEEP.yaml with the study's plan and runner (finished steps are "
        "skipped), score it on val_limit train-file questions after the first train_limit (never dev or test), "
        "and write OUTPUT/sweep.md and OUTPUT/best.yaml (the best setting per method as study overrides). "
        f"Example: qalign sweep {_EXAMPLE} model=models/smollm2-135m-instruct",
    )
    parser.add_argument("sweep", metavar="SWEEP.yaml", help="sweep file: study keys (or study: FILE) + val_limit, "
                        "metric, grid {METHOD: {key: [values]}}")
    parser.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                        help="override sweep/study keys (dotted: grid.grpo.beta=[0.0,0.1], overrides.grpo.max_steps=5)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="training seeds (every point, each)")
    parser.add_argument("--output", metavar="DIR", help="output folder (default: reports/NAME)")
    from qalign.study.runner import add_run_options

    add_run_options(parser)
    parser.set_defaults(func=run_sweep)
    return parser
