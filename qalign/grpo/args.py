"""GRPO arguments: the YAML keys qalign adds to LLaMA-Factory for `stage: grpo`, and their mapping to TRL.

LLaMA-Factory's parser rejects keys it does not know, so `split_grpo_args` takes the GRPO keys out of the parsed
YAML dict (or the `--key value` argv list) before LLaMA-Factory sees the rest. Under `stage: grpo`, `temperature`,
`top_p`, `top_k` and `repetition_penalty` are the GRPO sampling settings (LLaMA-Factory's own generation keys of the
same names are for predict/chat and keep their defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import TYPE_CHECKING, Any, get_type_hints

from qalign.errors import checked_number
from qalign.grpo.rewards import DEFAULT_REWARDS, REWARD_FUNCS

if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments, FinetuningArguments
    from transformers import Seq2SeqTrainingArguments
    from trl import GRPOConfig

LOSS_TYPES = ("grpo", "dapo", "bnpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")

# The TRL 0.24 GRPOConfig fields a recipe may set under `stage: grpo` (names, types, defaults and help come from TRL).
TRL_FIELDS = (
    "num_generations", "beta", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_completion_length",
    "max_prompt_length", "reward_weights", "loss_type", "scale_rewards", "epsilon", "epsilon_high", "delta",
    "num_iterations", "importance_sampling_level", "mask_truncated_completions", "top_entropy_quantile",
    "steps_per_generation", "generation_batch_size", "disable_dropout", "sync_ref_model", "ref_model_mixup_alpha",
    "ref_model_sync_steps", "shuffle_dataset", "log_completions", "num_completions_to_print", "cache_implementation",
)
# Not offered: TRL's `use_transformers_paged` rollout crashes on the pinned transformers 4.56.2 (IndexError in
# generate_batch, SmolLM2 and 8B AWQ alike; bench/RESULTS.md, 2026-12-01), and vLLM cannot live in the stack.
# Where qalign's default differs from TRL's, and why (everything else is TRL's default).
QALIGN_DEFAULTS: dict[str, Any] = {
    "max_completion_length": 64,  # retrieval QA answers are a few words (TRL: 256)
    "max_prompt_length": None,  # None: LLaMA-Factory's cutoff_len (TRL: 512, which would cut retrieved passages)
    "shuffle_dataset": None,  # None: not LLaMA-Factory's disable_shuffling (TRL: True)
}
# Types qalign reads differently: reward weights also as a comma string (`reward_weights: 1,0.5`).
QALIGN_TYPES: dict[str, Any] = {"reward_weights": str | None}
REWARD_FUNCS_HELP = f"Reward names, list or comma string, of: {', '.join(REWARD_FUNCS)} (qalign's; default: " \
                    f"{', '.join(DEFAULT_REWARDS)})."


def _trl_fields() -> list[tuple[str, Any, Any]]:
    """(name, type, dataclass field) of every TRL_FIELDS entry, read from TRL's GRPOConfig."""
    from trl import GRPOConfig

    hints = get_type_hints(GRPOConfig)
    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    missing = [name for name in TRL_FIELDS if name not in fields]
    if missing:
        raise ImportError(f"qalign/grpo/args.py: TRL's GRPOConfig has no field(s) {missing}; qalign was tested with "
                          "trl==0.24.0 (pip install trl==0.24.0), or update TRL_FIELDS.")
    out = [("reward_funcs", str | None, field(default=None, metadata={"help": REWARD_FUNCS_HELP}))]
    for name in TRL_FIELDS:
        default = QALIGN_DEFAULTS.get(name, fields[name].default)
        out.append((name, QALIGN_TYPES.get(name, hints[name]),
                    field(default=default, metadata={"help": fields[name].metadata.get("help", "")})))
    return out


class _GRPOArgumentsMethods:
    """Validation and the TRL mapping of `GRPOArguments` (its fields are built from TRL's GRPOConfig)."""

    def __post_init__(self) -> None:
        self.reward_funcs = _split(self.reward_funcs) or list(DEFAULT_REWARDS)
        unknown = [name for name in self.reward_funcs if name not in REWARD_FUNCS]
        if unknown:
            raise ValueError(
                f"Unknown reward function(s) {unknown} in `reward_funcs`; choose from: {', '.join(REWARD_FUNCS)}."
            )
        weights = _split(self.reward_weights)
        if weights is not None:
            try:
                weights = [float(w) for w in weights]
            except (TypeError, ValueError):
                raise ValueError(f"`reward_weights` must be numbers, got {self.reward_weights!r}.") from None
            if len(weights) != len(self.reward_funcs):
                raise ValueError(
                    f"`reward_weights` has {len(weights)} value(s) but `reward_funcs` names {len(self.reward_funcs)} "
                    f"({', '.join(self.reward_funcs)}); give one weight per reward function."
                )
        self.reward_weights = weights

        self.num_generations = _number(self, "num_generations", int, low=2, why="GRPO compares completions")
        self.beta = _number(self, "beta", float, low=0.0, why="0 disables the KL term")
        self.temperature = _number(self, "temperature", float, low=0.0, strict=True)
        self.top_p = _number(self, "top_p", float, low=0.0, high=1.0, strict=True)
        self.max_completion_length = _number(self, "max_completion_length", int, low=1)
        self.epsilon = _number(self, "epsilon", float, low=0.0, strict=True)
        self.num_iterations = _number(self, "num_iterations", int, low=1)
        self.top_entropy_quantile = _number(self, "top_entropy_quantile", float, low=0.0, high=1.0)
        for name in ("top_k", "max_prompt_length", "steps_per_generation", "generation_batch_size"):
            if getattr(self, name) is not None:
                setattr(self, name, _number(self, name, int, low=1))
        if self.epsilon_high is not None:
            self.epsilon_high = _number(self, "epsilon_high", float, low=self.epsilon)

        scale = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)  # TRL accepts booleans
        self.scale_rewards = str(scale).lower()
        _choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        _choice("importance_sampling_level", self.importance_sampling_level, ("token", "sequence"))
        if self.steps_per_generation is not None and self.generation_batch_size is not None:
            raise ValueError("Set either `steps_per_generation` or `generation_batch_size`, not both.")

    def to_config_kwargs(self) -> dict[str, Any]:
        """The GRPOConfig keyword arguments (every field here is a GRPOConfig field of the same name)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "reward_funcs"}


GRPOArguments = dataclasses.make_dataclass("GRPOArguments", _trl_fields(), bases=(_GRPOArgumentsMethods,))
GRPOArguments.__module__ = __name__  # make_dataclass's `module=` is Python 3.12+
GRPOArguments.__doc__ = "Arguments of the `grpo` stage: TRL 0.24 GRPOConfig names, types, defaults (QALIGN_DEFAULTS " \
                        "aside) and help, plus qalign's `reward_funcs`."
GRPO_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(GRPOArguments)}


def _split(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(item).strip() for item in items if str(item).strip()]
    return items or None


def _number(args: Any, name: str, kind: type, low: float, high: float | None = None,
            strict: bool = False, why: str = "") -> Any:
    """The field `name` of `args` checked by qalign's one number check (`strict`: above `low`, not at it)."""
    return checked_number(getattr(args, name), name, kind, low, high, low_open=strict, why=why)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(choices)}, got {value!r}.")


GRPO_KEYS = frozenset(f.name for f in dataclasses.fields(GRPOArguments))


def stage_of(args: dict[str, Any] | list[str]) -> str:
    """The `stage` LLaMA-Factory will see in parsed YAML (dict) or argv (list); its default is sft."""
    if isinstance(args, dict):
        return str(args.get("stage", "sft"))
    for i, token in enumerate(args):
        if token == "--stage" and i + 1 < len(args):
            return args[i + 1]
        if token.startswith("--stage="):
            return token.split("=", 1)[1]
    return "sft"


def split_grpo_args(args: dict[str, Any] | list[str]) -> tuple[dict[str, Any] | list[str], dict[str, Any] | list[str]]:
    """Split (LLaMA-Factory args, GRPO args) from a YAML dict or an argv list (`--key value` / `--key=value`)."""
    if isinstance(args, dict):
        return ({k: v for k, v in args.items() if k not in GRPO_KEYS},
                {k: v for k, v in args.items() if k in GRPO_KEYS})
    rest: list[str] = []
    grpo: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        key = token[2:].split("=", 1)[0].replace("-", "_") if token.startswith("--") else None
        target = grpo if key in GRPO_KEYS else rest
        target.append(token)
        i += 1
        if key is not None and "=" not in token and i < len(args) and not args[i].startswith("--"):
            target.append(args[i])  # the flag's value
            i += 1
    return rest, grpo


def parse_grpo_args(args: dict[str, Any] | list[str]) -> GRPOArguments:
    """GRPOArguments from the split-off dict or argv list (validated in `__post_init__`)."""
    if isinstance(args, dict):
        return GRPOArguments(**args)
    from transformers import HfArgumentParser

    (parsed,) = HfArgumentParser(GRPOArguments).parse_args_into_dataclasses(args=args)
    return parsed


def generation_batch(grpo_args: GRPOArguments, per_device: int, grad_accum: int, world_size: int) -> int:
    """Completions per generation round, as TRL computes it (the global batch unless overridden)."""
    if grpo_args.generation_batch_size is not None:
        return grpo_args.generation_batch_size
    return per_device * world_size * (grpo_args.steps_per_generation or grad_accum)


def build_grpo_config(
    training_args: Seq2SeqTrainingArguments,
    data_args: DataArguments,
    finetuning_args: FinetuningArguments,
    grpo_args: GRPOArguments,
) -> GRPOConfig:
    """GRPOConfig = every HF TrainingArguments field LLaMA-Factory parsed (output_dir, lr, steps, batch sizes,
    logging, seed, precision, use_cpu, gradient checkpointing, report_to, save_strategy, ...) + the GRPO fields."""
    from transformers import TrainingArguments
    from trl import GRPOConfig

    per_device, accum = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    world = training_args.world_size
    batch = generation_batch(grpo_args, per_device, accum, world)
    if batch % grpo_args.num_generations != 0:
        raise ValueError(
            f"GRPO needs the global batch (per_device_train_batch_size {per_device} x gradient_accumulation_steps "
            f"{accum} x world size {world} = {batch} completions) to be divisible by num_generations "
            f"({grpo_args.num_generations}): each prompt's group must fit in one batch. Make "
            f"per_device_train_batch_size x gradient_accumulation_steps a multiple of {grpo_args.num_generations}."
        )

    hf_fields = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    kwargs = {name: getattr(training_args, name) for name in hf_fields if hasattr(training_args, name)}
    kwargs.update(grpo_args.to_config_kwargs())
    kwargs["remove_unused_columns"] = False  # the `answers` column must reach the reward functions
    if grpo_args.max_prompt_length is None:
        kwargs["max_prompt_length"] = data_args.cutoff_len
    if grpo_args.shuffle_dataset is None:
        kwargs["shuffle_dataset"] = not finetuning_args.disable_shuffling
    return GRPOConfig(**kwargs)
