"""GRPO arguments: the YAML keys qalign adds to LLaMA-Factory for `stage: grpo`, and their mapping to TRL.

LLaMA-Factory's parser rejects keys it does not know, so `split_grpo_args` takes the GRPO keys out of the parsed
YAML dict (or the `--key value` argv list) before LLaMA-Factory sees the rest. Under `stage: grpo`, `temperature`,
`top_p`, `top_k` and `repetition_penalty` are the GRPO sampling settings (LLaMA-Factory's own generation keys of the
same names are for predict/chat and keep their defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qalign.grpo.rewards import DEFAULT_REWARDS, REWARD_FUNCS

if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments, FinetuningArguments
    from transformers import Seq2SeqTrainingArguments
    from trl import GRPOConfig

LOSS_TYPES = ("grpo", "dapo", "bnpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class GRPOArguments:
    r"""Arguments of the `grpo` stage (TRL 0.24 GRPOConfig names and meanings)."""

    num_generations: int = field(default=8, metadata=_help("Completions sampled per prompt (the GRPO group, >= 2)."))
    beta: float = field(default=0.0, metadata=_help("KL coefficient; 0 loads no reference model."))
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature of the completions."))
    top_p: float = field(default=1.0, metadata=_help("Nucleus sampling probability, in (0, 1]."))
    top_k: int | None = field(default=None, metadata=_help("Top-k sampling (None: off)."))
    min_p: float | None = field(default=None, metadata=_help("Min-p sampling (None: off)."))
    repetition_penalty: float = field(default=1.0, metadata=_help("Repetition penalty while sampling."))
    max_completion_length: int = field(default=64, metadata=_help("Max new tokens per completion."))
    max_prompt_length: int | None = field(
        default=None, metadata=_help("Prompt token limit (None: LLaMA-Factory's cutoff_len already applies).")
    )
    reward_funcs: str | None = field(
        default=None, metadata=_help(f"Reward names, list or comma string, of: {', '.join(REWARD_FUNCS)}.")
    )
    reward_weights: str | None = field(default=None, metadata=_help("One weight per reward (list or comma string)."))
    loss_type: str = field(default="dapo", metadata=_help(f"One of {', '.join(LOSS_TYPES)}."))
    scale_rewards: str = field(default="group", metadata=_help("Advantage scaling: group, batch or none."))
    epsilon: float = field(default=0.2, metadata=_help("Lower clipping epsilon."))
    epsilon_high: float | None = field(default=None, metadata=_help("Upper clipping epsilon (DAPO: 0.28)."))
    delta: float | None = field(default=None, metadata=_help("Two-sided clipping bound (INTELLECT-2)."))
    num_iterations: int = field(default=1, metadata=_help("Optimisation passes per generated batch (mu)."))
    importance_sampling_level: str = field(default="token", metadata=_help("token or sequence (GSPO)."))
    mask_truncated_completions: bool = field(default=False, metadata=_help("Drop truncated completions from loss."))
    top_entropy_quantile: float = field(default=1.0, metadata=_help("Keep the top-rho entropy tokens in the loss."))
    steps_per_generation: int | None = field(default=None, metadata=_help("Steps per generation (None: grad acc)."))
    generation_batch_size: int | None = field(default=None, metadata=_help("Completions per generation round."))
    use_transformers_paged: bool = field(
        default=False, metadata=_help("Roll out with transformers' paged continuous batching (generate_batch).")
    )
    cache_implementation: str | None = field(
        default=None, metadata=_help("KV cache of the rollout `generate` (None: dynamic; e.g. static).")
    )
    disable_dropout: bool = field(default=False, metadata=_help("Disable dropout in the policy."))
    sync_ref_model: bool = field(default=False, metadata=_help("TR-DPO style reference model sync."))
    ref_model_mixup_alpha: float = field(default=0.6, metadata=_help("Reference sync mix-up alpha."))
    ref_model_sync_steps: int = field(default=512, metadata=_help("Reference sync period in steps."))
    shuffle_dataset: bool | None = field(default=None, metadata=_help("None: not disable_shuffling."))
    log_completions: bool = field(default=False, metadata=_help("Print sample completions at each log."))
    num_completions_to_print: int | None = field(default=None, metadata=_help("How many to print."))

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


def _split(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(item).strip() for item in items if str(item).strip()]
    return items or None


def _number(args: GRPOArguments, name: str, kind: type, low: float, high: float | None = None,
            strict: bool = False, why: str = "") -> Any:
    value = getattr(args, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (kind is float or float(value).is_integer())
    if ok:
        value = kind(value)
        ok = (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        kind_name = "an integer" if kind is int else "a number"
        raise ValueError(f"`{name}` must be {kind_name} {bound}{f' ({why})' if why else ''}, got {value!r}.")
    return value


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
