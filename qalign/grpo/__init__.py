"""The `grpo` stage qalign registers into LLaMA-Factory (shaped like llamafactory/train/<stage>/)."""

from qalign.grpo.workflow import run_grpo, train_grpo

__all__ = ["run_grpo", "train_grpo"]
