"""Measure one LLaMA-Factory run in this process: peak GPU memory, step times, tokens/s, LoRA-on-AWQ health.

`run_recipe(recipe, overrides, result_path)` loads a qalign recipe, applies `key=value` overrides, registers qalign's
stages, and runs `llamafactory.train.tuner.run_exp` with a `MeasureCallback`.
Run one recipe per process: LLaMA-Factory and Liger patch classes globally, and the memory peak is per process.
"""

from __future__ import annotations

import json
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

GIB = 2**30
# override key (not LLaMA-Factory's): apply bench.awq_backward.patch_awq_backward
FAST_BACKWARD = "qalign_awq_fast_backward"


def _cuda() -> Any:
    import torch

    return torch.cuda if torch.cuda.is_available() else None


class MeasureCallback(TrainerCallback):
    """Step times (CUDA-synchronised), tokens per step (`state.num_input_tokens_seen`), memory, AWQ/LoRA checks."""

    def __init__(self) -> None:
        self.result: dict[str, Any] = {"step_times": [], "step_tokens": [], "losses": [], "prediction_steps": []}
        self._t0 = 0.0
        self._tokens = 0

    def _sync(self) -> float:
        cuda = _cuda()
        if cuda is not None:
            cuda.synchronize()
        return time.perf_counter()

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        cuda = _cuda()
        if cuda is not None:  # the model is loaded: remember its footprint, then measure the run on its own
            self.result["after_load_gib"] = cuda.memory_allocated() / GIB
            self.result["load_peak_gib"] = cuda.max_memory_allocated() / GIB
            cuda.reset_peak_memory_stats()
        self.result["init_end"] = self._sync()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = self._sync()

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.result["step_times"].append(self._sync() - self._t0)
        if model is not None:  # the fewest AWQ layers seen in train mode after a step (eval mode: no LoRA grads)
            from qalign.awq.compat import awq_train_mode

            in_train, total = awq_train_mode(model)
            seen = self.result.get("awq_layers_in_train_mode")
            if seen is None or in_train < seen[0]:
                self.result["awq_layers_in_train_mode"] = [in_train, total]
        seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.result["step_tokens"].append(seen - self._tokens)
        self._tokens = seen

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.result["losses"].append(logs["loss"])

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.result["prediction_steps"].append(self._sync())

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is not None:
            from qalign.awq.compat import lora_b_summary

            self.result["lora_b_nonzero"] = lora_b_summary(model)


def summarize(result: dict[str, Any], skip_first: int = 1) -> dict[str, Any]:
    """Median step time and tokens/s over the steps after the first `skip_first` (warm-up, kernel compilation)."""
    times = result.get("step_times", [])[skip_first:]
    tokens = result.get("step_tokens", [])[skip_first:]
    out: dict[str, Any] = {}
    if times:
        out["step_s"] = statistics.median(times)
        out["tokens_per_step"] = statistics.median(tokens) if tokens else None
        out["tokens_per_s"] = sum(tokens) / sum(times) if tokens and sum(tokens) else None
    preds = result.get("prediction_steps", [])
    if preds and result.get("init_end"):
        out["predict_s"] = preds[-1] - result["init_end"]
        out["predict_batches"] = len(preds)
        if len(preds) > 1:  # batches after the first (which also compiles the kernels)
            out["predict_steady_s"] = preds[-1] - preds[0]
    return out


def count_generated_tokens(output_dir: Path, model_dir: str) -> int | None:
    """Tokens in LLaMA-Factory's `generated_predictions.jsonl` (re-tokenized `predict` texts; exact for word-level
    tokenizers, close for BPE ones)."""
    path = output_dir / "generated_predictions.jsonl"
    if not path.exists():
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(len(tokenizer(row.get("predict", ""), add_special_tokens=False).input_ids) for row in rows)


def load_recipe(recipe: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The recipe's YAML with `overrides` on top (what `qalign train recipe.yaml key=value` would run)."""
    from qalign.io import read_yaml_mapping

    return {**read_yaml_mapping(recipe, "recipe", "recipes/qwen3-8b-awq/sft.yaml"), **overrides}


def run_recipe(recipe: Path, overrides: dict[str, Any], result_path: Path) -> dict[str, Any]:
    """Run the recipe in this process and write the measurements (or the error) to `result_path` as JSON."""
    from qalign.io import atomic_write_text
    from qalign.lf.register import register_all

    result: dict[str, Any] = {"recipe": str(recipe), "overrides": overrides, "ok": False}
    started = time.perf_counter()
    callback = MeasureCallback()
    try:
        register_all()
        args = load_recipe(recipe, overrides)
        output_dir, model_dir = Path(args["output_dir"]), args["model_name_or_path"]  # before run_exp consumes args
        if args.pop(FAST_BACKWARD, False):
            from bench.awq_backward import patch_awq_backward

            patch_awq_backward()
        from llamafactory.train.tuner import run_exp

        run_exp(args, callbacks=[callback])
        result["ok"] = True
    except BaseException as exc:  # record and report; the parent prints the log tail
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        result["traceback"] = traceback.format_exc()[-4000:]
    cuda = _cuda()
    result.update(callback.result)
    if cuda is not None:
        result["run_peak_gib"] = cuda.max_memory_allocated() / GIB
        result["run_reserved_gib"] = cuda.max_memory_reserved() / GIB
        result["peak_gib"] = max(result["run_peak_gib"], result.get("load_peak_gib", 0.0))
        result["device"] = cuda.get_device_name()
    result.update(summarize(result))
    if result["ok"] and result.get("predict_s"):
        tokens = count_generated_tokens(output_dir, model_dir)
        if tokens:
            batches = result["predict_batches"]
            steady = result.get("predict_steady_s")
            per_s = tokens * (batches - 1) / batches / steady if steady else tokens / result["predict_s"]
            result.update(generated_tokens=tokens, tokens_per_s=per_s)
    result["wall_s"] = time.perf_counter() - started
    atomic_write_text(result_path, json.dumps(result, indent=2, default=str) + "\n")
    return result
