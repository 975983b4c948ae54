"""Opt-in patch of AutoAWQ's backward for LoRA training on AWQ layers (process-wide, applied on request only).

AutoAWQ 0.2.9's `WQLinearMMFunction.backward` computes the input gradient as `grad.bmm(W.T.repeat(batch, 1, 1))`:
one dequantized weight copy per sample (micro-batch 4: 4 x 100 MB for each MLP matrix of an 8B model) before the
matmul. `awq_backward` computes `grad @ W.T`, the same numbers, without the copies. This module imports nothing from
AutoAWQ at import time, so an import hook on `awq.modules.linear.gemm` can call `patch_awq_backward(module)`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch


def awq_backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Input gradient of an AWQ GEMM layer (the quantized base is frozen: no other gradient)."""
    from awq.modules.linear import gemm

    _, qweight, qzeros, scales, _ = ctx.saved_tensors
    if gemm.awq_ext is not None:
        weights = gemm.awq_ext.dequantize_weights_cuda(qweight, scales, qzeros, 1, 0, 0, False)
    elif gemm.TRITON_AVAILABLE:
        weights = gemm.awq_dequantize_triton(qweight, scales, qzeros)
    else:
        raise ValueError("AWQ backward needs triton or autoawq-kernels (AutoAWQ's own requirement).")
    grad_input = grad_output @ weights.to(grad_output.dtype).t() if ctx.needs_input_grad[0] else None
    return (grad_input, *([None] * 7))


awq_backward._qalign = True  # type: ignore[attr-defined]


def patch_awq_backward(gemm: ModuleType | None = None) -> bool:
    """Make `awq_backward` the backward of every AWQ GEMM layer in this process; False if it already was."""
    if gemm is None:
        from awq.modules.linear import gemm
    if getattr(gemm.WQLinearMMFunction.backward, "_qalign", False):
        return False
    gemm.WQLinearMMFunction.backward = staticmethod(awq_backward)  # autograd looks it up at each backward
    return True
