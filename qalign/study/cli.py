"""`qalign study STUDY.yaml`: run (or resume) the method-comparison study, then write OUTPUT/report.md."""

from __future__ import annotations

import argparse

from qalign.study.config import METHODS, load_study
from qalign.study.plan import build_plan
from qalign.study.report import write_report
from qalign.study.runner import add_run_options, run_steps
from qalign.study.validate import check_study

_EPILOG = """\
Study file keys: name, model, template, recipes (folder), train, test (raw QA files), top_k, prompt, methods,
seeds, cot_teacher (a teacher file, `self`, or an endpoint {url, served_model, api_key_env}), teach_args
(options of `qalign teach`), cot_prompt, cot_min_f1, train_limit, test_limit, output (default reports/NAME),
bootstrap {samples, seed, level}, train_args / predict_args (LLaMA-Factory keys for every run), mining_args
(sampling options of `qalign convert preference|kto`), overrides {METHOD: {key: value, predict: {...}}},
from_sft (of dpo, orpo, kto: mine from and continue each seed's SFT run; grpo: continue it on the same prompts),
test_split (dev or test: what the report says the runs were scored on), val_limit (score on that many train-file
questions after the first train_limit instead of the test file: what `qalign sweep` uses).
Training keys, later wins: recipe < study keys (model, template, dataset, output_dir, seed) < train_args <
overrides.METHOD. KEY=VALUE assignments and --options go in any order.

examples:
  qalign study recipes/smollm2-135m/study.yaml
  qalign study recipes/smollm2-135m/study.yaml --seeds 1 2 --methods sft grpo --dry-run
  qalign study recipes/smollm2-135m/study-nq.yaml --overrides reports/nq-top5-sweep/best.yaml
  qalign study recipes/qwen3-8b-awq/study.yaml model=/models/Qwen3-8B-AWQ overrides.sft.max_steps=100
"""


def _as_given(args: argparse.Namespace) -> list[str]:
    """The command's arguments, rebuilt from the parsed options (for the report)."""
    given = [args.study, *args.assignments]
    for flag, value in (("--seeds", args.seeds), ("--methods", args.methods)):
        if value:
            given += [flag, *map(str, value)]
    for flag, value in (("--overrides", args.overrides), ("--output", args.output),
                        ("--cot-teacher", args.cot_teacher)):
        if value:
            given += [flag, value]
    given += ["--jobs", str(args.jobs)] if args.jobs != "auto" else []
    return given + (["--force"] if args.force else []) + (["--cold"] if args.cold else [])


def run_study(args: argparse.Namespace) -> int:
    """Plan, run or resume the steps, write the report; exit 1 when a step failed."""
    cfg = load_study(args.study, args.assignments, seeds=args.seeds, methods=args.methods, output=args.output,
                     cot_teacher=args.cot_teacher, overrides_file=args.overrides)
    check_study(cfg)  # paths, prompts, keys and types: a dry run checks what a real run needs
    steps = build_plan(cfg)
    print(f"study {cfg.name}: {len(steps)} steps, methods {', '.join(cfg.methods)}, seeds "
          f"{', '.join(map(str, cfg.seeds))}; output {cfg.output}", flush=True)
    results = run_steps(steps, cfg.output, force=args.force, dry_run=args.dry_run, jobs=args.jobs,
                        cold=args.cold, echo=lambda line: print(line, flush=True))
    if args.dry_run:
        return 0
    report = write_report(cfg, steps, results, _as_given(args))
    failed = [name for name, result in results.items() if result.state == "failed"]
    print(f"wrote {report}" + (f"; {len(failed)} step(s) failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def add_study_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `study`: every method, the test set, bootstrap CIs, plots, one report."""
    parser = subparsers.add_parser(
        "study", help="run the method comparison (SFT, DPO, ORPO, KTO, GRPO, CoT) and write a report with CIs",
        description="Convert the data, train every method with the model's recipes, predict the test set with the "
        "base model and every method, score it, and write OUTPUT/report.md: SubEM/EM/F1 with bootstrap intervals, "
        "paired differences vs base and SFT, training curves, a bar chart, wins/losses, versions and seeds. "
        "Finished steps are skipped on a rerun.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", metavar="STUDY.yaml", help="study file, e.g. recipes/smollm2-135m/study.yaml")
    parser.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                        help="override study keys (dotted for nested ones: overrides.sft.max_steps=10)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="training seeds (repeat every method)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                        help=f"methods to run, from {', '.join(METHODS)}")
    parser.add_argument("--overrides", metavar="FILE",
                        help="a YAML file whose `overrides` go over the study file's, method by method (e.g. the "
                             "best.yaml a `qalign sweep` wrote); KEY=VALUE assignments still win")
    parser.add_argument("--output", metavar="DIR", help="output folder (default: reports/NAME)")
    parser.add_argument("--cot-teacher", metavar="FILE|self",
                        help="teacher of the CoT-SFT row: a teacher file, or `self` (the study's model, via `qalign "
                             "teach`); an endpoint goes in the study file: cot_teacher: {url: ..., served_model: ...}")
    add_run_options(parser)
    parser.set_defaults(func=run_study)
    return parser
