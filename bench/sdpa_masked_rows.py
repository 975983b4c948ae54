"""Do SDPA's kernels give non-finite values for fully-masked query rows (left padding) in forward or backward?

GRPO in TRL 0.24 runs the policy on left-padded prompts; transformers 4.56 on torch >= 2.6 passes SDPA a boolean
mask in which a left-pad query row attends to nothing. This probe runs two stacked attention layers (the second
reads the first's output, as a decoder does), a loss on the last rows only (TRL keeps only completion logits),
per backend and dtype, and prints whether the output / gradients are finite.
  python bench/sdpa_masked_rows.py   (on a GPU; on CPU only the math backend runs)
"""

from __future__ import annotations

import contextlib
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def probe(device: str, dtype: torch.dtype, backend, pad: int, length: int = 800, heads: int = 9,
          head_dim: int = 64, batch: int = 4) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, heads, length, head_dim, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(head_dim, head_dim, device=device, dtype=dtype) / head_dim ** 0.5
    keep = torch.ones(batch, length, dtype=torch.bool, device=device)
    keep[: batch // 2, :pad] = False  # half the rows left-padded
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    mask = causal[None, None] & keep[:, None, None, :]
    out = {}
    try:
        ctx = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
        with ctx:
            h1 = F.scaled_dot_product_attention(x, x, x, attn_mask=mask)
            h = h1 @ w
            h2 = F.scaled_dot_product_attention(h, h, h, attn_mask=mask)
            loss = h2[:, :, -32:].float().pow(2).mean()
            loss.backward()
        out = {"pad_rows_finite": bool(torch.isfinite(h1[: batch // 2, :, :pad]).all()) if pad else None,
               "kept_rows_finite": bool(torch.isfinite(h2[:, :, -32:]).all()),
               "loss_finite": bool(torch.isfinite(loss)), "grad_finite": bool(torch.isfinite(x.grad).all())}
    except RuntimeError as error:
        out = {"error": str(error).splitlines()[0][:160]}
    return out


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backends = {"default": None, "math": SDPBackend.MATH}
    if device == "cuda":
        backends.update({"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION})
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for name, backend in backends.items():
            for pad in (0, 1, 17, 64, 129, 300):
                row = {"device": device, "dtype": str(dtype), "backend": name, "pad": pad,
                       **probe(device, dtype, backend, pad)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
