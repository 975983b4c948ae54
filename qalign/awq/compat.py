"""What qalign needs from AutoAWQ 0.2.9 on transformers 4.56, and checks for LoRA-on-AWQ training.

1. The Qwen3 fix. AutoAWQ's `AwqQuantizer.init_quant` swaps decoder layer 0 for a local `Catcher` module to grab
   that layer's inputs. transformers 4.56's Qwen3Model (and Qwen2, Gemma2/3, ...) reads `decoder_layer.attention_type`
   before calling the layer, which the Catcher lacks: `AttributeError: 'Catcher' object has no attribute
   'attention_type'`. `QalignAwqQuantizer` runs AutoAWQ's own `init_quant` while the layer list hands the wrapped
   layer's plain attributes (`attention_type`, ...) to whatever is put in its place. It is passed to
   `model.quantize(quantizer_cls=...)` by `qalign quantize awq` only; nothing is patched at import.
2. The checkpoint format qalign produces and trains on (Qwen3-8B-AWQ's): GEMM, 4-bit, group 128, zero point.
3. Checks a training run can make: AWQ layers in train mode (in eval mode they run under `no_grad`, so the LoRA
   layers below them get no gradient) and how many LoRA B matrices left their zero initialisation.
The opt-in training patch of AutoAWQ's backward is bench-only: `bench/awq_backward.py` (it must not import AutoAWQ).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from awq.quantize.quantizer import AwqQuantizer
from torch import nn

AWQ_FORMAT: dict[str, Any] = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                              "version": "gemm"}
_PLAIN = (str, int, float, bool)


def autoawq_quant_config(w_bit: int = 4, group_size: int = 128) -> dict[str, Any]:
    """AutoAWQ's `quant_config` for the GEMM, zero-point format."""
    return {"zero_point": True, "q_group_size": group_size, "w_bit": w_bit, "version": "GEMM"}


def copy_plain_attributes(source: nn.Module, target: nn.Module) -> list[str]:
    """Give `target` the public str/int/float/bool attributes of `source` it lacks; return their names."""
    copied = []
    for name, value in vars(source).items():
        if name.startswith("_") or not isinstance(value, _PLAIN) or hasattr(target, name):
            continue
        setattr(target, name, value)
        copied.append(name)
    return copied


@contextlib.contextmanager
def carry_layer_attributes(layers: nn.ModuleList) -> Iterator[None]:
    """While active, a module put at `layers[i]` receives the plain attributes of the layer it replaces."""
    original_cls = type(layers)

    def __setitem__(self: nn.ModuleList, idx: int, module: nn.Module) -> None:
        copy_plain_attributes(original_cls.__getitem__(self, idx), module)
        original_cls.__setitem__(self, idx, module)

    layers.__class__ = type(f"_Carrying{original_cls.__name__}", (original_cls,), {"__setitem__": __setitem__})
    try:
        yield
    finally:
        layers.__class__ = original_cls


class QalignAwqQuantizer(AwqQuantizer):
    """AutoAWQ's quantizer; layer 0's Catcher stand-in carries the layer's `attention_type` (Qwen3 fix)."""

    def init_quant(self, n_samples: int = 128, max_seq_len: int = 512) -> Any:
        with carry_layer_attributes(self.awq_model.get_model_layers(self.model)):
            return super().init_quant(n_samples=n_samples, max_seq_len=max_seq_len)


def check_awq_config(config: Mapping[str, Any], group_size: int = 128) -> list[str]:
    """Differences between a model config's `quantization_config` and qalign's AWQ format (empty list: it matches)."""
    quant = config.get("quantization_config")
    if not isinstance(quant, Mapping):
        return ["config has no quantization_config (not a quantized checkpoint)"]
    want = {**AWQ_FORMAT, "group_size": group_size}
    problems = []
    for key, value in want.items():
        got = quant.get(key)
        if isinstance(got, str) and isinstance(value, str):
            got = got.lower()
        if got != value:
            problems.append(f"quantization_config.{key} is {got!r}, expected {value!r}")
    return problems


def awq_train_mode(model: nn.Module) -> tuple[int, int]:
    """(AWQ GEMM layers in train mode, all AWQ GEMM layers)."""
    from awq.modules.linear import WQLinear_GEMM

    layers = [module for module in model.modules() if isinstance(module, WQLinear_GEMM)]
    return sum(module.training for module in layers), len(layers)


def lora_b_summary(model: nn.Module) -> dict[str, list[int]]:
    """Per target name (q_proj, ...): [LoRA B matrices that are non-zero, all LoRA B matrices].

    LoRA B starts at zero, so after a few optimizer steps every B that received a gradient is non-zero.
    """
    summary: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        if ".lora_B." not in name:
            continue
        target = name.split(".lora_B.")[0].rsplit(".", 1)[-1]
        counts = summary.setdefault(target, [0, 0])
        counts[0] += int(bool(torch.count_nonzero(param.detach()).item()))
        counts[1] += 1
    return summary
