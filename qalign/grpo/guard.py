"""Skip an optimizer step whose gradient is not finite, so one bad batch cannot turn the adapter into NaN.

Seen on an H200 (2026-12-02, SmolLM2-135M, bf16, LoRA, 16 prompts x 8 completions a step): at step 4 the gradient
norm came back NaN at both learning rates tried, the update wrote NaN into the adapter, and the next rollout died in
`torch.multinomial` ("probability tensor contains either inf, nan or element < 0"). The guard drops such a step's
gradients before the optimizer sees them (a parameter without a gradient is not updated, momentum included), as
torch's GradScaler skips fp16 steps that overflowed, and stops the run with a clear error when it keeps happening.
When the trainer attaches its micro-batch records (qalign/grpo/probe.py), a skipped step's records are written to
`output_dir/nonfinite_step_<N>.json`, so a GPU run names the micro-batch and what was odd about it.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

MAX_SKIPPED_IN_A_ROW = 3


class NonFiniteGradientGuard(TrainerCallback):
    """Before each optimizer step: if any gradient holds inf/NaN, drop all gradients (the step changes nothing)."""

    def __init__(self, max_in_a_row: int = MAX_SKIPPED_IN_A_ROW) -> None:
        self.max_in_a_row = max_in_a_row
        self.skipped: list[int] = []  # optimizer steps (1-based) whose update was skipped
        self._in_a_row = 0
        self.records: list[dict[str, Any]] | None = None  # the trainer's per-micro-batch records of this step
        self.output_dir: str | None = None

    def attach(self, records: list[dict[str, Any]], output_dir: str) -> None:
        """Dump `records` (which the trainer fills during a step) into output_dir when a step is skipped."""
        self.records, self.output_dir = records, output_dir

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if not grads:
            return
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all().item()  # one sync per step
        if finite:
            self._in_a_row = 0
            self._clear()
            return
        for param in model.parameters():
            param.grad = None
        step = state.global_step + 1
        self.skipped.append(step)
        self._in_a_row += 1
        dumped = self._dump(step)
        print(f"qalign GRPO: step {step}: the gradient is not finite (inf/NaN); update skipped "
              f"({len(self.skipped)} skipped so far){f'; micro-batches in {dumped}' if dumped else ''}", flush=True)
        if self._in_a_row >= self.max_in_a_row:
            raise RuntimeError(
                f"GRPO step {step}: the gradient was not finite {self._in_a_row} steps in a row (skipped steps "
                f"{self.skipped}); the run is diverging. Lower learning_rate, set max_grad_norm (default 1.0), or "
                "train in fp32 (bf16=false).")

    def _clear(self) -> None:
        if self.records is not None:
            self.records.clear()

    def _dump(self, step: int) -> str | None:
        if self.records is None or self.output_dir is None:
            return None
        from pathlib import Path

        from qalign.io import atomic_write_json

        path = Path(self.output_dir) / f"nonfinite_step_{step}.json"
        first_bad = next((r["micro_batch"] for r in self.records if r.get("grads_finite_after") is False), None)
        atomic_write_json(path, {"step": step, "first_micro_batch_with_nonfinite_grad": first_bad,
                                 "micro_batches": list(self.records)})
        self._clear()
        return str(path)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.skipped:
            print(f"qalign GRPO: {len(self.skipped)} of {state.global_step} steps skipped for a non-finite "
                  f"gradient: {self.skipped}", flush=True)
