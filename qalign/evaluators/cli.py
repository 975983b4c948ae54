"""`qalign eval` and `qalign report`."""

from __future__ import annotations

import argparse
from pathlib import Path

from qalign.errors import QalignError
from qalign.evaluators.report import build_report
from qalign.evaluators.scoring import evaluate, format_summary
from qalign.io import atomic_write_text

_EVAL_EPILOG = """\
Predictions are joined to gold by `id` when they have one. LLaMA-Factory's generated_predictions.jsonl has no
ids: its rows are matched by order, and each row's prompt must contain its gold question (otherwise: error).

example:
  qalign eval --predictions saves/smollm2/sft/predict/generated_predictions.jsonl --gold data/nq_gold_dev.json
"""

_REPORT_EPILOG = """\
example:
  qalign report --run base=saves/smollm2/base/predict --run sft=saves/smollm2/sft/predict --output report.md
"""


def run_eval(args: argparse.Namespace) -> int:
    """Score one predictions file, print the table, write summary.json and scores.jsonl."""
    if args.output is not None and args.output.exists() and not args.output.is_dir():
        raise QalignError(f"{args.output}: --output is a file; pass a folder for summary.json and scores.jsonl "
                          f"(e.g. {args.output.with_suffix('')}_eval).")
    summary, written = evaluate(args.predictions, args.gold, args.output)
    print(format_summary(summary, title=f"{args.predictions} vs {args.gold}"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Print the comparison table of several evaluated runs, optionally writing it to a file."""
    if args.output is not None and args.output.is_dir():
        raise QalignError(f"{args.output}: is a folder; pass a file name for --output "
                          f"(e.g. {args.output / 'report.md'}).")
    table = build_report(args.run)
    print(table, end="")
    if args.output:
        atomic_write_text(args.output, table)
        print(f"wrote {args.output}")
    return 0


def add_eval_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` and `report` sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    ev = subparsers.add_parser(
        "eval",
        help="score predictions against gold answers (SubEM, EM, F1)",
        description="Score predictions against gold answer aliases: SubEM, EM and F1 (SQuAD normalisation, "
        "<think>...</think> stripped). Writes DIR/summary.json and per-question DIR/scores.jsonl.",
        epilog=_EVAL_EPILOG,
        formatter_class=fmt,
    )
    ev.add_argument(
        "--predictions",
        required=True,
        type=Path,
        metavar="FILE",
        help='LLaMA-Factory generated_predictions.jsonl, or a jsonl of {"id", "prediction"} rows',
    )
    ev.add_argument(
        "--gold",
        required=True,
        type=Path,
        metavar="FILE",
        help="the eval set predict ran on (data/NAME.json), or a raw QA file (DPR/FiD or NQ-open json/jsonl/.gz)",
    )
    ev.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        default=None,
        help="where to write summary.json and scores.jsonl (default: the folder of --predictions)",
    )
    ev.set_defaults(func=run_eval)

    rep = subparsers.add_parser(
        "report",
        help="compare evaluated runs in a markdown table",
        description="Read DIR/summary.json of each run (written by `qalign eval`) and print a markdown table: "
        "method, n, SubEM, EM, F1 in percent, and ΔSubEM / ΔF1 in points vs the first run.",
        epilog=_REPORT_EPILOG,
        formatter_class=fmt,
    )
    rep.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a run to compare: its name and the folder holding its summary.json (repeat; the first is the baseline)",
    )
    rep.add_argument("--output", type=Path, metavar="FILE.md", default=None, help="also write the table to this file")
    rep.set_defaults(func=run_report)
