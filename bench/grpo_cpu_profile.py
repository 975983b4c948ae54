"""Where one GRPO step's time goes on the CPU: perf_counter spans around TRL 0.24's GRPOTrainer methods.

  PYTHONPATH=$PWD python bench/grpo_cpu_profile.py --dataset-dir DIR --out OUT.json [key=value ...]
DIR holds `nq_grpo` (qalign convert grpo ... --dataset-dir DIR). The recipe is recipes/smollm2-135m/grpo.yaml;
key=value pairs override it (e.g. per_device_train_batch_size=16 gradient_accumulation_steps=2 max_steps=2).
Prints and writes per-step seconds by span, the rewards and losses, and whether generation used the KV cache.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*")
    opts = parser.parse_args()

    import torch
    from trl import GRPOTrainer

    from qalign.grpo import trainer as qtrainer
    from qalign.lf.register import register_all

    spans: dict[str, float] = defaultdict(float)
    seen = {"generate_input_widths": []}

    def timed(name, fn):
        def wrapper(self, *args, **kwargs):
            key = name if name != "logps" else ("logps_grad" if torch.is_grad_enabled() else "logps_nograd")
            start = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                spans[key] += time.perf_counter() - start
        return wrapper

    for name, attr in (("generate", "_generate_single_turn"), ("rewards", "_calculate_rewards"),
                       ("logps", "_get_per_token_logps_and_entropies"), ("loss", "_compute_loss"),
                       ("training_step", "training_step"), ("prepare", "_generate_and_score_completions")):
        setattr(GRPOTrainer, attr, timed(name, getattr(GRPOTrainer, attr)))

    from transformers import TrainerCallback

    steps: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            spans.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kw):
            steps.append({"step": state.global_step, "wall": time.perf_counter() - self.t0, **dict(spans)})

        def on_log(self, args, state, control, logs=None, **kw):
            if steps and logs and "reward" in logs:
                steps[-1].update({k: logs[k] for k in ("reward", "loss", "completions/mean_length",
                                                       "completions/clipped_ratio") if k in logs})

    original_generate = None

    def spy_forward(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and len(seen["generate_input_widths"]) < 3 and not torch.is_grad_enabled():
            seen["generate_input_widths"].append(int(ids.shape[1]))

    config = yaml.safe_load((REPO / "recipes/smollm2-135m/grpo.yaml").read_text())
    config.update({"model_name_or_path": str(REPO / "models/smollm2-135m-instruct"), "dataset_dir": opts.dataset_dir,
                   "output_dir": str(Path(opts.out).with_suffix("")) + "-run", "use_cpu": True, "plot_loss": False,
                   "cutoff_len": 512})
    for item in opts.overrides:
        key, value = item.split("=", 1)
        config[key] = yaml.safe_load(value)
    register_all()
    old_init = qtrainer.QalignGRPOTrainer.__init__

    def init(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Clock()]
        old_init(self, *args, **kwargs)
        self.model.register_forward_pre_hook(spy_forward, with_kwargs=True)

    qtrainer.QalignGRPOTrainer.__init__ = init
    del original_generate
    torch.set_num_threads(2)
    from llamafactory.train.tuner import run_exp

    start = time.perf_counter()
    run_exp(config)
    result = {"config": {k: config[k] for k in ("per_device_train_batch_size", "gradient_accumulation_steps",
                                                "num_generations", "max_completion_length", "max_steps")},
              "overrides": opts.overrides, "total_s": time.perf_counter() - start, "steps": steps,
              "generate_first_forward_widths": seen["generate_input_widths"], "torch_threads": torch.get_num_threads()}
    Path(opts.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
