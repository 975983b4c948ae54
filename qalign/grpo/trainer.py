"""The GRPO trainer and its callbacks, built from LLaMA-Factory's parts like its own stages' trainer.py.

`QalignGRPOTrainer` is TRL's GRPOTrainer with LLaMA-Factory's `create_custom_optimizer` / `create_custom_scheduler`
(as its DPO/KTO trainers use them), so LoRA+, GaLore, APOLLO, Adam-mini, Muon and the warmup-stable-decay schedule in
a recipe take effect; it also records a small summary of each micro-batch of a step (qalign/grpo/probe.py) for the
non-finite gradient guard to dump when it skips that step, and logs where a step's seconds go (`timing/*`: the
rollouts' generate call, the whole rollout with rewards and advantages, the learning passes). `stage_callbacks`
adds the callbacks LLaMA-Factory's `tuner._training_function` adds (log, PiSSA conversion, SwanLab, profilers,
reporter). `check_supported` refuses what the stage cannot honour.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from trl import GRPOTrainer

if TYPE_CHECKING:
    import torch
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

# FinetuningArguments flag -> why the GRPO stage refuses it
UNSUPPORTED: dict[str, str] = {
    "use_badam": "BAdam needs LLaMA-Factory's BAdam callback and gradient clipping patch, which only its own "
                 "trainers install; use LoRA, GaLore or APOLLO",
    "use_dft_loss": "DFT is an SFT loss; GRPO's loss is set by `loss_type`",
    "use_asft_loss": "ASFT is an SFT loss; GRPO's loss is set by `loss_type`",
    "use_eaft_loss": "EAFT is an SFT loss; GRPO's loss is set by `loss_type`",
    "use_mca": "mcore_adapter runs pt/sft/dpo only",
    "use_hyper_parallel": "hyper_parallel runs sft only",
    "early_stopping_steps": "early stopping watches an eval metric and the GRPO stage does not evaluate",
}


# What LLaMA-Factory 0.9.5's tuner appends to the callbacks of every stage: mirrored by `stage_callbacks`, except
# EarlyStoppingCallback (refused above). tests/test_register.py compares this with the installed tuner's source.
TUNER_CALLBACKS = ("LogCallback", "PissaConvertCallback", "get_swanlab_callback", "EarlyStoppingCallback",
                   "TorchProfilerCallback", "ModuleProfilerCallback", "ReporterCallback")


def check_supported(finetuning_args: FinetuningArguments) -> None:
    """Raise for every option set in the recipe that the GRPO stage would otherwise ignore."""
    refused = [f"`{name}` ({why})" for name, why in UNSUPPORTED.items() if getattr(finetuning_args, name, None)]
    if refused:
        raise ValueError("The GRPO stage cannot honour " + "; ".join(refused) + ". Remove it from the recipe "
                         "(or the command line) to train with GRPO.")


def stage_callbacks(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: Seq2SeqTrainingArguments,
    finetuning_args: FinetuningArguments,
    generating_args: GeneratingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> list[TrainerCallback]:
    """`callbacks` + what LLaMA-Factory's tuner adds for every stage, in its order (the reporter last)."""
    from llamafactory.train import callbacks as lf_callbacks
    from llamafactory.train.trainer_utils import get_swanlab_callback

    from qalign.grpo.guard import NonFiniteGradientGuard

    out = list(callbacks or [])
    out.append(NonFiniteGradientGuard())  # qalign's: one bad batch must not write NaN into the adapter
    out.append(lf_callbacks.LogCallback())  # trainer_log.jsonl: LLaMA-Board's progress, the `reward` column
    if finetuning_args.pissa_convert:
        out.append(lf_callbacks.PissaConvertCallback())
    if finetuning_args.use_swanlab:
        out.append(get_swanlab_callback(finetuning_args))
    if getattr(training_args, "enable_torch_profiler", False):
        out.append(lf_callbacks.TorchProfilerCallback(training_args))
    if getattr(training_args, "profile_modules", None):
        out.append(lf_callbacks.ModuleProfilerCallback(training_args.profile_modules))
    out.append(lf_callbacks.ReporterCallback(model_args, data_args, finetuning_args, generating_args))
    return out


class QalignGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer whose optimizer and scheduler come from LLaMA-Factory's recipe options."""

    def __init__(self, finetuning_args: FinetuningArguments, **kwargs: Any) -> None:
        from qalign.grpo.guard import NonFiniteGradientGuard

        self.finetuning_args = finetuning_args
        self.step_records: list[dict[str, Any]] = []  # this optimizer step's micro-batches; the guard clears it
        self._timing_seconds: dict[str, float] = {}  # running totals of `_timed` blocks
        super().__init__(**kwargs)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, NonFiniteGradientGuard):
                callback.attach(self.step_records, self.args.output_dir)

    @staticmethod
    def _clock() -> float:
        """perf_counter once the GPU's queued work has finished (timings of asynchronous kernels lie otherwise)."""
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def _timed(self, key: str) -> Iterator[None]:
        """Seconds of the block, appended to the `timing/KEY` metric (TRL averages it per logged step)."""
        started = self._clock()
        try:
            yield
        finally:
            seconds = self._clock() - started
            self._timing_seconds[key] = self._timing_seconds.get(key, 0.0) + seconds
            self._metrics["train" if self.model.training else "eval"][f"timing/{key}"].append(seconds)

    def _generate(self, prompts: list[str], images: Any) -> Any:
        with self._timed("generate_s"):  # TRL 0.24: the rollouts' generate call (transformers or vLLM)
            return super()._generate(prompts, images)

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        with self._timed("rollout_s"):  # generate + rewards + advantages (+ old/ref log-probs when needed)
            return super()._generate_and_score_completions(inputs)

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        from qalign.grpo.probe import summarize_microbatch

        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training:
            self.step_records.append(summarize_microbatch(len(self.step_records), inputs))
            self._prepared = inputs  # training_step's own `inputs` are the raw rows; the probe needs these
        return inputs

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        logps, entropies = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self.step_records and logps.requires_grad:  # the loss pass (not the no-grad old/ref passes)
            self.step_records[-1]["logps_nonfinite"] = int((~logps.detach().isfinite()).sum().item())
        return logps, entropies

    def training_step(self, model: torch.nn.Module, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        from qalign.grpo.probe import batch_tokens, grads_finite, nonfinite_grads

        started, rollout_before = self._clock(), self._timing_seconds.get("rollout_s", 0.0)
        loss = super().training_step(model, inputs, num_items_in_batch)
        # this micro-batch's forward + backward: the rollout that its first micro-batch triggers left out
        rollout = self._timing_seconds.get("rollout_s", 0.0) - rollout_before
        self._metrics["train"]["timing/learn_s"].append(self._clock() - started - rollout)
        if self.step_records:
            record = self.step_records[-1]
            record["loss"] = float(loss.item())
            record["grads_finite_after"] = grads_finite(model)
            if not record["grads_finite_after"] and all(r.get("grads_finite_after", True)
                                                        for r in self.step_records[:-1]):
                record |= nonfinite_grads(model) | batch_tokens(self._prepared)  # the micro-batch that broke it
        return loss

    def create_optimizer(self, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        from llamafactory.train.trainer_utils import create_custom_optimizer

        if self.optimizer is None:
            self.optimizer = create_custom_optimizer(self.model, self.args, self.finetuning_args)
        return super().create_optimizer(*args, **kwargs)

    def create_scheduler(self, num_training_steps: int,
                         optimizer: torch.optim.Optimizer | None = None) -> torch.optim.lr_scheduler.LRScheduler:
        from llamafactory.train.trainer_utils import create_custom_scheduler

        create_custom_scheduler(self.args, num_training_steps, optimizer)
        return super().create_scheduler(num_training_steps, optimizer)
