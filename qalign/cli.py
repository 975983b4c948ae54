"""`qalign`: llamafactory-cli with qalign's stages registered, plus qalign's own subcommands."""

from __future__ import annotations

import argparse
import sys
import time

from qalign.errors import QalignError
from qalign.procs import record_peak_at_exit

# Sub-commands handed to LLaMA-Factory's launcher unchanged (after qalign registers its stages).
LLAMAFACTORY_COMMANDS = ("train", "chat", "export", "webui", "webchat", "api", "env", "version")
INTERMIXED = ("study", "sweep")  # FILE [KEY=VALUE ...] with --options anywhere


def run_llamafactory(argv: list[str]) -> int:
    """Run `llamafactory-cli ARGV...` in this process, with qalign's extensions registered first."""
    from qalign.converters.kto_weights import resolve_auto_weights
    from qalign.lf.recipe_checks import (
        RECIPE_COMMANDS,
        check_grpo_values,
        check_recipe_argv,
        check_train_keys,
        check_train_usage,
    )
    from qalign.lf.servers import bind_loopback

    config = None
    train = bool(argv) and argv[0] == "train"
    if train:
        check_train_usage(argv[1:])  # no recipe, or --flags: the usage, not LLaMA-Factory's traceback
    if argv and argv[0] in RECIPE_COMMANDS:  # recipe and overrides checked before the 10-14 s of imports
        rest, config = check_recipe_argv(argv[1:], command=argv[0])
        rest = resolve_auto_weights(rest, config) if train else rest  # kto_*_weight: auto -> numbers
        argv = [argv[0], *rest]
    if train and config is not None:
        check_train_keys(config, argv[1])  # keys, types, paths, datasets: before the imports (cached field table)
    where = bind_loopback(argv[0]) if argv else None
    if where:
        print(where, file=sys.stderr, flush=True)
    from llamafactory.cli import main as llamafactory_main

    from qalign.lf.register import register_all

    register_all()  # GRPO stage, webui, torchrun worker: before LLaMA-Factory parses anything
    if train and config is not None:
        check_grpo_values(config, argv[1])  # needs TRL (imported by now): before any model or data is loaded
    sys.argv = ["llamafactory-cli", *argv]
    started = time.time()
    try:
        llamafactory_main()
    except SystemExit as exc:  # the torchrun launcher exits with the workers' status
        if exc.code not in (0, None):
            raise
    if train and config is not None and config.get("stage") != "grpo":  # GRPO prints its own
        from qalign.health import report_config

        report_config(config, since=started)
    return 0


def build_parser() -> argparse.ArgumentParser:
    # imported here so `qalign train ...` (the hot path) does not pay for them
    from qalign.awq.quantize import add_quantize_parser
    from qalign.converters.cli import add_convert_parser
    from qalign.evaluators.cli import add_eval_parsers
    from qalign.generate.predict import add_predict_parser
    from qalign.generate.teach import add_teach_parser
    from qalign.models.from_gguf import add_model_parser
    from qalign.retrieve.cli import add_retrieve_parser
    from qalign.study.cli import add_study_parser
    from qalign.study.sweep import add_sweep_parser

    parser = argparse.ArgumentParser(
        prog="qalign",
        description="Align LLMs for retrieval-augmented QA. LLaMA-Factory commands ("
        + ", ".join(LLAMAFACTORY_COMMANDS)
        + ") pass through, e.g. `qalign train recipes/smollm2-135m/sft.yaml key=value`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LLAMAFACTORY_COMMANDS:
        sub.add_parser(name, help=f"LLaMA-Factory `{name}` (run `qalign {name} -h` for its options)", add_help=False)
    for add_parser in (add_convert_parser, add_eval_parsers, add_model_parser, add_predict_parser, add_quantize_parser,
                       add_sweep_parser, add_study_parser, add_teach_parser, add_retrieve_parser):
        add_parser(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args`, except that `study` and `sweep` (FILE [KEY=VALUE ...] [--options]) take their KEY=VALUE
    assignments before, between or after the options (`study.yaml --dry-run top_k=3`), as their headers show."""
    if argv and argv[0] in INTERMIXED:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
        args = sub.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    record_peak_at_exit()  # every qalign process passes here: the study runner's GPU budget learns its peak
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LLAMAFACTORY_COMMANDS:
        try:
            return run_llamafactory(argv)
        except QalignError as exc:
            print(f"qalign: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except QalignError as exc:
        print(f"qalign: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
