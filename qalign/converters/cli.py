"""`qalign convert <format> ...`: one sub-command per output format.

Adding a format = a module with a `convert_<format>(job: ConvertJob, ...) -> ConversionResult` function (the job
holds the shared options: source, name, dataset_dir, top_k, prompt, limit, split, strict), plus one `Subcommand` in
`SUBCOMMANDS` below: `add_common_arguments` gives it the shared flags and `_execute` prints the summary line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from qalign.converters.job import ConvertJob
from qalign.converters.registry import ConversionResult

_INPUT_HELP = (
    "DPR/FiD records {question, answers, ctxs:[{title, text}]} or NQ-open records {question, answer:[...]} "
    "as .json/.jsonl, optionally .gz; or a Hugging Face dataset id owner/name (needs network)"
)


@dataclass(frozen=True)
class Subcommand:
    """One `qalign convert` format: its CLI text, its extra options and the function that runs it."""

    name: str
    help: str
    description: str
    run: Callable[[argparse.Namespace], ConversionResult]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, *, passages: bool = True) -> None:
    """The options every converter shares: input, dataset name and folder, prompt, limits, strictness."""
    parser.add_argument("--input", required=True, metavar="FILE_OR_HF_ID", help=_INPUT_HELP)
    parser.add_argument("--dataset", required=True, metavar="NAME",
                        help="dataset name: written to DIR/data/NAME.json and registered in DIR/dataset_info.json")
    if passages:
        parser.add_argument("--top-k", type=_count, default=5, metavar="K",
                            help="passages per prompt, taken from the start of ctxs (default: 5; 0 = closed book)")
        parser.add_argument("--prompt", default="answer_only", metavar="NAME_OR_FILE",
                            help="bundled template name (qalign/prompts/: answer_only, think_then_answer, closed_book) "
                                 "or a .txt file with {question} and {passages} (default: answer_only)")
    parser.add_argument("--limit", type=_count, default=None, metavar="N",
                        help="stop after N usable records (after de-duplication)")
    parser.add_argument("--offset", type=_count, default=0, metavar="N",
                        help="drop the first N usable records (e.g. a validation slice after the training rows: "
                             "--offset 1024 --limit 100); their duplicates later in the file are dropped too")
    parser.add_argument("--split", default="train", help="split to read from a Hugging Face dataset (default: train)")
    parser.add_argument("--dataset-dir", default=".", metavar="DIR",
                        help="LLaMA-Factory dataset_dir holding dataset_info.json (default: current folder)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on a record without question or answers instead of skipping and counting it")
    parser.add_argument("--force", action="store_true",
                        help="replace a registered dataset of that name that qalign did not write, or of another kind")


def summary_line(result: ConversionResult) -> str:
    """`wrote N rows to PATH; D duplicates dropped, S skipped without answers[, Q without a question]`."""
    stats = result.stats
    line = (f"wrote {result.rows} rows to {result.path} (dataset '{result.name}'); "
            f"{stats.duplicates} duplicates dropped, {stats.skipped_no_answer} skipped without answers")
    if stats.skipped_no_question:
        line += f", {stats.skipped_no_question} skipped without a question"
    return line


def _execute(run: Callable[[argparse.Namespace], ConversionResult]) -> Callable[[argparse.Namespace], int]:
    def func(args: argparse.Namespace) -> int:
        result = run(args)
        if result.stats.skipped_locations:
            print("qalign: skipped records, e.g. " + ", ".join(result.stats.skipped_locations), file=sys.stderr)
        for note in result.stats.notes():
            print(f"qalign: note: {note}", file=sys.stderr)
        print(summary_line(result))
        return 0

    return func


def _run_alpaca(args: argparse.Namespace) -> ConversionResult:
    from qalign.converters.alpaca import convert_alpaca

    return convert_alpaca(ConvertJob.from_args(args), answer=args.answer)


def _alpaca_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--answer", choices=("first", "shortest"), default="first",
                        help="which gold alias becomes the training target (default: first)")


def _run_eval(args: argparse.Namespace) -> ConversionResult:
    from qalign.converters.eval_set import convert_eval

    return convert_eval(ConvertJob.from_args(args))


def _run_grpo(args: argparse.Namespace) -> ConversionResult:
    from qalign.converters.eval_set import convert_grpo

    return convert_grpo(ConvertJob.from_args(args))


def _run_preference(args: argparse.Namespace) -> ConversionResult:
    from qalign.converters.preference import convert_preference, pair_summary
    from qalign.converters.sampling_args import sampling_config

    result, counts = convert_preference(
        ConvertJob.from_args(args), sampling=sampling_config(args), samples=args.samples, strategy=args.strategy,
        threshold=args.threshold, max_pairs=args.max_pairs, margin=args.margin)
    print(pair_summary(counts))
    return result


def _preference_arguments(parser: argparse.ArgumentParser) -> None:
    from qalign.converters.preference import add_preference_arguments

    add_preference_arguments(parser)


def _run_kto(args: argparse.Namespace) -> ConversionResult:
    from qalign.converters.kto import convert_kto, kto_summary
    from qalign.converters.sampling_args import sampling_config

    result, counts = convert_kto(
        ConvertJob.from_args(args), sampling=sampling_config(args), samples=args.samples, strategy=args.strategy,
        threshold=args.threshold, desirable=args.desirable, max_per_question=args.max_per_question,
        margin=args.margin)
    print(kto_summary(counts))
    return result


def _kto_arguments(parser: argparse.ArgumentParser) -> None:
    from qalign.converters.kto import add_kto_arguments

    add_kto_arguments(parser)



def _run_cot(args: argparse.Namespace) -> ConversionResult:
    from qalign.converters.cot import convert_cot, cot_summary

    result, counts = convert_cot(ConvertJob.from_args(args), args.teacher, min_f1=args.min_f1)
    print(cot_summary(counts))
    return result


def _cot_arguments(parser: argparse.ArgumentParser) -> None:
    from qalign.converters.cot import add_cot_arguments

    add_cot_arguments(parser)

SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "alpaca", "SFT data: prompt with passages -> one short answer",
        "Write alpaca-format SFT rows {id, question, instruction, input, output} to DIR/data/NAME.json and "
        "register NAME (kind sft) in DIR/dataset_info.json. Duplicate questions are dropped; records without "
        "answers are skipped and counted (or fail with --strict). Example: qalign convert alpaca "
        "--input ../shared/data/nq-open-top5.train.jsonl.gz --dataset nq-top5-train",
        _run_alpaca, _alpaca_arguments,
    ),
    Subcommand(
        "eval", "evaluation data: prompts plus every gold alias",
        "Write eval rows {id, question, instruction, input, output, answers} to DIR/data/NAME.json and register "
        "NAME (kind eval). Warns when its questions also appear in a registered training dataset. Example: "
        "qalign convert eval --input ../shared/data/nq-open-top5.dev.jsonl.gz --dataset nq-top5-dev",
        _run_eval,
    ),
    Subcommand(
        "grpo", "GRPO prompts: the eval rows (every gold alias for the rewards), as training data",
        "Write the rows `convert eval` writes to DIR/data/NAME.json and register NAME as kind grpo, the GRPO "
        "stage's training prompts: the overlap warning then compares them with evaluation sets, not with the "
        "other training sets. Example: qalign convert grpo --input data/sample/nq-sample.train.jsonl "
        "--dataset nq_grpo",
        _run_grpo,
    ),
    Subcommand(
        "preference", "DPO/ORPO data: pairs mined from the model's own samples",
        "Sample --num-samples completions per question (LLaMA-Factory template, cached and resumable in "
        "DIR/data/NAME.samples.jsonl), score them against every gold alias and write ranking rows {id, question, "
        "instruction, input, chosen, rejected}: chosen = the shortest exact sample or the gold answer, rejected = "
        "a sample at least --margin below it in F1, verbose ones that hold the gold included (--strategy subem|f1: "
        "the old rules). Example: qalign convert preference --model "
        "models/smollm2-135m-instruct --input data/sample/nq-sample.train.jsonl --dataset nq_pref",
        _run_preference, _preference_arguments,
    ),
    Subcommand(
        "kto", "KTO data: desirable / undesirable samples, cleaned",
        "Label the model's samples (desirable = exact samples and/or gold, undesirable = samples at least --margin "
        "below in F1, verbose ones included), drop empty, degenerate, duplicate and near negatives, and write "
        "{id, question, instruction, input, output, kto_tag} rows. "
        "Reuse a preference run's samples: qalign convert kto --input data/sample/nq-sample.train.jsonl "
        "--dataset nq_kto --samples data/nq_pref.samples.jsonl",
        _run_kto, _kto_arguments,
    ),
    Subcommand(
        "cot", "CoT-SFT data: teacher reasoning whose answer matches the gold (F1 >= --min-f1)",
        "Join teacher outputs ({id or question, reasoning, answer}, or output '<think>...</think>answer') to the "
        "QA input by id or question, keep those whose answer reaches F1 >= --min-f1 (default 0.9) against the gold "
        "aliases, and write alpaca rows whose output is '<think>reasoning</think>' + the answer (prompt default: "
        "think_then_answer). Example: qalign convert cot --input data/sample/nq-sample.train.jsonl "
        "--teacher teacher.jsonl --dataset nq_cot",
        _run_cot, _cot_arguments,
    ),
]


def add_convert_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `convert` with one sub-command per entry of `SUBCOMMANDS`."""
    convert = subparsers.add_parser(
        "convert", help="raw QA records -> LLaMA-Factory datasets (registered in dataset_info.json)",
        description="Convert QA records (DPR/FiD, NQ-open, or a Hugging Face dataset) into LLaMA-Factory datasets.",
    )
    formats = convert.add_subparsers(dest="convert_format", metavar="FORMAT")
    for spec in SUBCOMMANDS:
        sub = formats.add_parser(spec.name, help=spec.help, description=spec.description)
        add_common_arguments(sub)
        if spec.add_arguments:
            spec.add_arguments(sub)
        sub.set_defaults(func=_execute(spec.run))
    convert.set_defaults(func=lambda args: convert.print_help() or 2)
    return convert
