"""What a GRPO step's micro-batches looked like, so a skipped (non-finite) step names its cause.

Three of four SmolLM2 GRPO runs on an H200 (bf16) hit one non-finite gradient (steps 4, 4, 7), at the same step for
two learning rates on the same data order; it did not reproduce on CPU (bench/RESULTS.md). The trainer records one
small summary per micro-batch; the guard writes them to `output_dir/nonfinite_step_<N>.json` when it skips step N.
"""

from __future__ import annotations

from typing import Any


def summarize_microbatch(index: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """Shape, padding, masking and advantage range of one GRPO micro-batch (TRL 0.24's `_prepare_inputs` output)."""
    prompt_mask, completion_mask = inputs["prompt_mask"], inputs["completion_mask"]
    prompt_lengths = prompt_mask.sum(1)
    kept = completion_mask.sum(1)
    advantages = inputs["advantages"].float()
    return {
        "micro_batch": index,
        "rows": int(prompt_mask.size(0)),
        "prompt_width": int(prompt_mask.size(1)),
        "prompt_lengths": prompt_lengths.tolist(),
        "left_pad_max": int(prompt_mask.size(1) - prompt_lengths.min().item()),
        "completion_width": int(completion_mask.size(1)),
        "completion_tokens_kept": kept.tolist(),  # 0: masked (truncated, with mask_truncated_completions)
        "rows_fully_masked": int((kept == 0).sum().item()),
        "num_items_in_batch": float(inputs["num_items_in_batch"]) if "num_items_in_batch" in inputs else None,
        "advantages_min": float(advantages.min().item()),
        "advantages_max": float(advantages.max().item()),
        "advantages_finite": bool(advantages.isfinite().all().item()),
    }


def nonfinite_grads(model: Any, limit: int = 12) -> dict[str, Any]:
    """Which gradients are non-finite (the first `limit` names, with NaN / inf counts): names the layer and the
    projection (attention q/k/v/o or MLP) where the backward broke."""
    import torch

    names, total = [], 0
    for name, param in model.named_parameters():
        if param.grad is None or bool(torch.isfinite(param.grad).all().item()):
            continue
        total += 1
        if len(names) < limit:
            grad = param.grad
            names.append({"name": name, "nan": int(grad.isnan().sum().item()), "inf": int(grad.isinf().sum().item())})
    return {"nonfinite_params": total, "first_nonfinite": names}


def batch_tokens(inputs: dict[str, Any], tail: int = 24) -> dict[str, Any]:
    """The micro-batch's completion ids and each prompt's last `tail` ids (they end with its question): enough
    to find the rows again and replay the step."""
    return {"completion_ids": inputs["completion_ids"].tolist(),
            "prompt_tail_ids": inputs["prompt_ids"][:, -tail:].tolist()}


def grads_finite(model: Any) -> bool:
    """True when every gradient present is finite (one device sync)."""
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all().item())
