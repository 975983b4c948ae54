"""GRPO throughput: qalign's `stage: grpo` (via `qalign train`) vs TRL's GRPOTrainer used directly, same settings.

Both runs use the same model, LoRA (r/alpha, dropout 0, every linear projection), prompts (rendered by the
LLaMA-Factory template, as qalign does), reward functions (subem + f1), num_generations, max_completion_length,
batch, learning rate, steps, precision and gradient checkpointing. It prints completions/s, step time and the mean
reward of the first and last quarter of the steps, and writes OUT/results.json.

GPU (SmolLM2, a converted set):
  python bench/grpo_bench.py --model models/smollm2-135m-instruct --dataset nq_grpo --steps 30 --bf16
CPU smoke test (tiny settings):
  python bench/grpo_bench.py --model /tmp/tiny-qwen3 --template qwen3_nothink --dataset t_grpo --dataset-dir DIR \
      --steps 2 --num-generations 2 --batch 2 --max-completion-length 8 --cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/smollm2-135m-instruct", help="HF model folder")
    parser.add_argument("--template", default="smollm2", help="LLaMA-Factory template")
    parser.add_argument("--dataset", default="nq_grpo", help="dataset name in DATASET_DIR/dataset_info.json")
    parser.add_argument("--dataset-dir", default=".", help="folder holding dataset_info.json")
    parser.add_argument("--max-samples", type=int, default=512, help="prompts read from the dataset")
    parser.add_argument("--cutoff-len", type=int, default=1024, help="prompt token limit")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="per-device completions per step (prompts x G)")
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on in both runs (default: off)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true")
    precision.add_argument("--fp16", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="use_cpu in both runs (fp32)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="outputs/bench/grpo", help="output folder")
    parser.add_argument("--only", choices=("qalign", "trl"), help="run one side only")
    return parser.parse_args(argv)


def qalign_config(args: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    """The YAML `qalign train` gets (stage grpo)."""
    return {
        "model_name_or_path": args.model, "stage": "grpo", "do_train": True, "finetuning_type": "lora",
        "lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha, "lora_dropout": 0.0, "lora_target": "all",
        "dataset": args.dataset, "dataset_dir": args.dataset_dir, "template": args.template,
        "cutoff_len": args.cutoff_len, "max_samples": args.max_samples, "preprocessing_num_workers": 1,
        "overwrite_cache": True, "output_dir": str(output_dir), "overwrite_output_dir": True, "report_to": "none",
        "logging_steps": 1, "save_strategy": "no", "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1, "learning_rate": args.lr, "max_steps": args.steps,
        "lr_scheduler_type": "constant", "warmup_ratio": 0.0, "seed": args.seed, "bf16": args.bf16,
        "fp16": args.fp16, "use_cpu": args.cpu, "disable_gradient_checkpointing": not args.gradient_checkpointing,
        "gradient_checkpointing": args.gradient_checkpointing, "num_generations": args.num_generations,
        "max_completion_length": args.max_completion_length, "temperature": args.temperature, "beta": args.beta,
        "reward_funcs": "subem,f1", "dataloader_num_workers": 0,
    }


def run_qalign(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """`qalign train` in a subprocess; timings from its train_results.json, rewards from trainer_state.json."""
    from qalign.procs import run_in_subprocess

    out.mkdir(parents=True, exist_ok=True)
    config = out / "grpo.yaml"
    config.write_text(yaml.safe_dump(qalign_config(args, out)))
    code = run_in_subprocess(["train", str(config)], out / "train.log")
    if code != 0:
        sys.exit(f"qalign train failed (exit {code}); see {out / 'train.log'}")
    runtime = json.loads((out / "train_results.json").read_text())["train_runtime"]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {"runtime": runtime, "rewards": [row["reward"] for row in history if "reward" in row]}


def trl_prompts(args: argparse.Namespace, tokenizer: Any) -> Any:
    """The dataset rows as TRL prompts, rendered with LLaMA-Factory's template exactly like the qalign stage."""
    from datasets import Dataset
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.data.processor.processor_utils import infer_seqlen
    from llamafactory.hparams import DataArguments

    info = json.loads((Path(args.dataset_dir) / "dataset_info.json").read_text())[args.dataset]
    columns = info.get("columns", {})
    rows = json.loads((Path(args.dataset_dir) / info["file_name"]).read_text())[: args.max_samples]
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=args.template))
    prompts, answers = [], []
    for row in rows:
        content = "\n".join(x for x in (row[columns.get("prompt", "instruction")], row.get(columns.get("query",
                                                                                                    "input"))) if x)
        response = row[columns.get("response", "output")]
        prompt_ids, response_ids = template.encode_oneturn(
            tokenizer, [{"role": "user", "content": content}, {"role": "assistant", "content": response}])
        if template.efficient_eos:
            response_ids = [*response_ids, tokenizer.eos_token_id]
        prompt_ids = prompt_ids[: infer_seqlen(len(prompt_ids), len(response_ids), args.cutoff_len)[0]]
        prompts.append(tokenizer.decode(prompt_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
        answers.append(row.get("answers") or [response])
    return Dataset.from_dict({"prompt": prompts, "answers": answers})


def run_trl(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """TRL's GRPOTrainer with a peft LoRA config on the same model, prompts and settings."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from qalign.grpo.rewards import f1, subem

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dataset = trl_prompts(args, tokenizer)  # also fixes eos/pad like LLaMA-Factory does for the qalign run
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    config = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        learning_rate=args.lr, max_steps=args.steps, lr_scheduler_type="constant", warmup_ratio=0.0,
        logging_steps=1, save_strategy="no", report_to=[], seed=args.seed, bf16=args.bf16, fp16=args.fp16,
        use_cpu=args.cpu, gradient_checkpointing=args.gradient_checkpointing, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, max_prompt_length=args.cutoff_len,
        temperature=args.temperature, beta=args.beta, dataloader_num_workers=0,
    )
    lora = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[subem, f1], args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora)
    result = trainer.train()
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    return {"runtime": result.metrics["train_runtime"], "rewards": rewards}


def summarize(name: str, result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rewards = result["rewards"]
    window = max(1, len(rewards) // 4)
    completions = args.steps * args.batch
    return {
        "run": name, "steps": args.steps, "completions": completions, "train_s": result["runtime"],
        "step_s": result["runtime"] / args.steps, "completions_per_s": completions / result["runtime"],
        "reward_first": sum(rewards[:window]) / window if rewards else float("nan"),
        "reward_last": sum(rewards[-window:]) / window if rewards else float("nan"),
    }


def environment() -> str:
    import torch
    import transformers
    import trl

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return (f"device: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
            f"trl {trl.__version__}, python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    from qalign.io import atomic_write_json

    args = parse_args(argv)
    if args.batch % args.num_generations:
        sys.exit(f"--batch ({args.batch}) must be a multiple of --num-generations ({args.num_generations}).")
    if not args.cpu and not (args.bf16 or args.fp16):
        print("note: no --bf16/--fp16: both runs train in fp32", file=sys.stderr)
    out = Path(args.out)
    rows = []
    for name, runner in (("qalign stage (qalign train)", run_qalign), ("TRL GRPOTrainer", run_trl)):
        if args.only and not name.lower().startswith(args.only):
            continue
        start = time.time()
        print(f"== {name} ...", flush=True)
        rows.append(summarize(name, runner(args, out / name.split()[0].lower()), args))
        print(f"   done in {time.time() - start:.0f} s wall", flush=True)
    header = "| run | steps | completions | train s | step s | completions/s | reward first ¼ | reward last ¼ |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['steps']} | {r['completions']} | {r['train_s']:.1f} | {r['step_s']:.3f} | "
                     f"{r['completions_per_s']:.1f} | {r['reward_first']:.3f} | {r['reward_last']:.3f} |")
    table = "\n".join(lines)
    print(f"\n{table}\n\n{environment()}\ncommand: python {' '.join(sys.argv)}")
    atomic_write_json(out / "results.json", {"rows": rows, "args": vars(args), "env": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
