"""The sampling options of `convert preference|kto` (argparse) and the SamplingConfig they make."""

from __future__ import annotations

import argparse

from qalign.generate.sampling import DEFAULT_MARGIN, STRATEGIES, SamplingConfig, check_margin


def sampling_config(args: argparse.Namespace) -> SamplingConfig | None:
    """The SamplingConfig of parsed CLI options (None without --model: cached samples only)."""
    if not args.model:
        return None
    return SamplingConfig(model=args.model, adapter=args.adapter, template=args.template,
                          num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                          batch_tokens=args.batch_tokens, device=args.device)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `convert preference` and `convert kto`: the model, sampling, cache and scoring."""
    group = parser.add_argument_group("sampling")
    defaults = SamplingConfig  # a dataclass keeps its field defaults as class attributes: one source for both
    group.add_argument("--model", help="model folder or hub id to sample from (not needed when --samples "
                                       "already holds every question)")
    group.add_argument("--adapter", help="LoRA adapter folder(s), comma-separated, applied on --model")
    group.add_argument("--template", default=defaults.template,
                       help="LLaMA-Factory chat template (default: %(default)s)")
    group.add_argument("--num-samples", type=int, default=defaults.num_samples, metavar="N",
                       help="completions per question (%(default)s)")
    group.add_argument("--temperature", type=float, default=defaults.temperature, metavar="T",
                       help="sampling temperature (%(default)s)")
    group.add_argument("--top-p", type=float, default=defaults.top_p, metavar="P",
                       help="nucleus sampling (%(default)s)")
    group.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, metavar="K",
                       help="tokens per completion (%(default)s)")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="B",
                       help="questions sampled together and then written to the cache, in input order (the unit "
                            "a killed run loses); the engine batches them under a memory budget (%(default)s)")
    group.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens, metavar="T",
                       help="rows x (prompt + new tokens) per generate call (default: sized from free GPU memory, "
                            "32768 on CPU); a batch that runs out of memory is split and retried")
    group.add_argument("--seed", type=int, default=defaults.seed,
                       help="seed; samples depend on (seed, question id) (%(default)s)")
    group.add_argument("--device", default=defaults.device,
                       help="auto (cuda if available, else cpu), cpu, cuda, cuda:1 (default: %(default)s)")
    group.add_argument("--samples", metavar="FILE", help="sample cache to read/resume (default: "
                                                         "DIR/data/NAME.samples.jsonl); reuse another run's here")
    group.add_argument("--strategy", choices=STRATEGIES, default="em",
                       help="what makes a positive: an answer equal to a gold alias, best F1 then fewest words, "
                            "else the gold answer; every sample --margin below it in F1 is a negative, verbose ones "
                            "(holding the gold) included (em, default); or the old rules, negatives that hold a gold "
                            "alias dropped: a gold alias inside it (subem) or F1 >= --threshold (f1)")
    group.add_argument("--margin", type=_margin, default=DEFAULT_MARGIN, metavar="M",
                       help="--strategy em: a negative's F1 is at least M below the positive's; closer samples are "
                            "dropped and counted as near (%(default)s)")
    group.add_argument("--threshold", type=float, default=0.5, help="F1 threshold of --strategy f1 (0.5)")


def _margin(text: str) -> float:
    try:
        return check_margin(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--margin {text}: {exc}") from None
