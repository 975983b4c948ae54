"""Generation speed: `qalign predict` (qalign's batch engine) vs LLaMA-Factory's do_predict, mining, GRPO rollouts.

Every measurement is a `qalign ...` subprocess (fresh process, as the study runs them), timed and logged; results
go to OUT/results.json after each one, and a part that was cut off resumes where it stopped (finished measurements
are kept). The last lines printed are a markdown table. Parts (GPU; see bench/RESULTS.md for the commands):

  qwen8b   Qwen3-8B-shaped bf16, random weights: PROMPTS prompts of 600-1000 tokens x 32 new tokens through
           `qalign predict`, and the first LF_PROMPTS of them through LLaMA-Factory's do_predict
  awq      the same shape as a random AWQ checkpoint (fp16): qalign predict vs do_predict on AWQ_PROMPTS prompts
  grpo-awq GRPO stage on the AWQ model, 16 prompts x 8 completions a step
  smollm2  SmolLM2-135M on real NQ: predict agreement with do_predict (300 dev questions), mining 1024 x 4
           samples (new engine vs the previous qalign, --old DIR), GRPO completions/s at 1 x 8 and 16 x 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QALIGN = [sys.executable, "-m", "qalign.cli"]
PREDICT_8B = REPO / "recipes" / "qwen3-8b-awq" / "predict.yaml"
SMOL = REPO / "recipes" / "smollm2-135m"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true",
       "DISABLE_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1", "LLAMAFACTORY_VERBOSITY": "WARN"}


class Bench:
    """Timed subprocess runs with results saved after each (skipped when already in results.json)."""

    def __init__(self, out: Path, work: Path) -> None:
        self.out, self.work = out, work
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.json"
        self.results: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=2) + "\n")
        tmp.replace(self.path)

    def run(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, timeout: int = 900,
            collect: Any = None) -> dict[str, Any] | None:
        if name in self.results and self.results[name].get("ok"):
            print(f"[{name}] done earlier", flush=True)
            return self.results[name]
        log = self.out / f"{name}.log"
        print(f"[{name}] {' '.join(cmd)}", flush=True)
        started = time.perf_counter()
        with log.open("w") as handle:
            try:
                code = subprocess.run(cmd, cwd=self.work, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                                      env={**os.environ, **ENV, **(env or {})}).returncode
            except subprocess.TimeoutExpired:
                code = -9
        result: dict[str, Any] = {"ok": code == 0, "wall_s": round(time.perf_counter() - started, 2)}
        if code == 0 and collect is not None:
            result.update(collect())
        elif code != 0:
            result["tail"] = log.read_text(errors="replace")[-1500:]
        self.results[name] = result
        self.save()
        print(f"[{name}] {'ok' if code == 0 else f'FAILED ({code})'} in {result['wall_s']} s", flush=True)
        return result if code == 0 else None


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _predict_stats(folder: Path) -> dict[str, Any]:
    """Generation time of a predict run: qalign's predict_results.json or LLaMA-Factory's predict_runtime."""
    stats = _json(folder / "predict_results.json")
    rows = sum(1 for _ in (folder / "generated_predictions.jsonl").open())
    seconds = stats.get("generate_seconds", stats.get("predict_runtime"))
    return {"prompts": rows, "generate_s": seconds, "prompts_per_s": round(rows / seconds, 2) if seconds else None,
            **{k: stats[k] for k in ("load_seconds", "batch_tokens", "prompt_tokens", "new_tokens") if k in stats}}


def write_synthetic_set(work: Path, name: str, count: int, low: int, high: int, seed: int = 0) -> None:
    """A registered eval set of `count` prompts of `low`-`high` words (= tokens for the word-level tokenizer)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        words = " ".join(f"w{rng.randrange(5000)}" for _ in range(rng.randint(low, high)))
        rows.append({"instruction": words, "input": "", "output": "w1 w2", "id": str(i), "answers": ["w1 w2"]})
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / f"{name}.json").write_text(json.dumps(rows))
    info_path = work / "dataset_info.json"
    info = _json(info_path)
    info[name] = {"file_name": f"data/{name}.json",
                  "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    info_path.write_text(json.dumps(info, indent=2))


# --small: a CPU smoke run of the script itself (tiny Qwen3 shape), not a measurement
SMALL_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 6000}


def build_random_bf16(folder: Path, small: bool = False) -> None:
    """A Qwen3-8B-shaped bf16 model with random weights (normal, std 0.02) and a word-level tokenizer."""
    if (folder / "config.json").exists():
        return
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    sys.path.insert(0, str(REPO))
    from bench.awq_synthetic import QWEN3_8B_SHAPE, word_level_tokenizer

    shape = {**QWEN3_8B_SHAPE, **(SMALL_SHAPE if small else {})}
    tokenizer = word_level_tokenizer(shape["vocab_size"])
    config = Qwen3Config(**shape, torch_dtype="bfloat16", eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def part_qwen8b(bench: Bench, args: argparse.Namespace) -> None:
    model = bench.work / "qwen8b-bf16"
    build_random_bf16(model, args.small)
    write_synthetic_set(bench.work, "gen8b", args.prompts, 590, 990)
    precision = ["fp16=false", f"bf16={str(not args.small).lower()}"]
    common = [f"model_name_or_path={model}", "template=qwen3_nothink", "eval_dataset=gen8b", "dataset_dir=.",
              *precision, "max_new_tokens=32", "cutoff_len=2048"]
    sub = f"max_samples={args.lf_prompts}"
    for name, extra in (("8b_lf", ["engine=llamafactory", sub]), ("8b_qalign_sub", [sub]),
                        ("8b_qalign_rows128_sub", [sub, "engine_batch_rows=128"]), ("8b_qalign_all", [])):
        folder = bench.work / name
        bench.run(name, [*QALIGN, "predict", str(PREDICT_8B), *common, f"output_dir={folder}", *extra],
                  collect=lambda f=folder: _predict_stats(f))


def part_awq(bench: Bench, args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from bench.awq_synthetic import write_random_awq_checkpoint

    model = bench.work / "qwen8b-awq"
    if not (model / "config.json").exists():
        write_random_awq_checkpoint(model, device="cuda")
    write_synthetic_set(bench.work, "genawq", args.awq_prompts, 590, 990)
    common = [f"model_name_or_path={model}", "template=qwen3_nothink", "eval_dataset=genawq", "dataset_dir=.",
              "max_new_tokens=32", "cutoff_len=2048"]
    for name, extra in (("awq_lf", ["engine=llamafactory", f"max_samples={args.awq_lf_prompts}"]),
                        ("awq_qalign", [])):
        folder = bench.work / name
        bench.run(name, [*QALIGN, "predict", str(PREDICT_8B), *common, f"output_dir={folder}", *extra],
                  collect=lambda f=folder: _predict_stats(f))


def _grpo_stats(folder: Path, completions_per_step: int) -> dict[str, Any]:
    metrics = _json(folder / "train_results.json")
    steps = _json(folder / "trainer_state.json").get("global_step") or 0
    seconds = metrics.get("train_runtime")
    rewards = [row["reward"] for row in _json(folder / "trainer_state.json").get("log_history", []) if "reward" in row]
    return {"steps": steps, "train_s": seconds, "completions": steps * completions_per_step,
            "completions_per_s": round(steps * completions_per_step / seconds, 2) if seconds else None,
            "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None}


def part_grpo_awq(bench: Bench, args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from bench.awq_synthetic import write_bench_datasets

    if not (bench.work / "data" / "bench_grpo.json").exists():
        write_bench_datasets(bench.work, rows=256, passage_words=170)  # ~900-token prompts
    model = bench.work / "qwen8b-awq"
    for name, extra in (("grpo_awq_16x8", []), ("grpo_awq_16x8_paged", ["use_transformers_paged=true"])):
        folder = bench.work / name
        bench.run(name, [*QALIGN, "train", str(REPO / "recipes/qwen3-8b-awq/grpo.yaml"), f"model_name_or_path={model}",
                         "dataset=bench_grpo", "dataset_dir=.", f"output_dir={folder}", f"max_steps={args.grpo_steps}",
                         "per_device_train_batch_size=16", "gradient_accumulation_steps=8", "logging_steps=1",
                         "cutoff_len=1024", "max_completion_length=64", *extra],
                  collect=lambda f=folder: _grpo_stats(f, 128))


def part_smollm2(bench: Bench, args: argparse.Namespace) -> None:
    model, w = str(Path(args.model).resolve()), bench.work
    dev, train = str(Path(args.dev).resolve()), str(Path(args.train).resolve())
    bench.run("smol_convert", [*QALIGN, "convert", "eval", "--input", dev, "--dataset", "nq_dev"])
    bench.run("smol_convert_grpo", [*QALIGN, "convert", "eval", "--input", train, "--dataset", "nq_grpo",
                                    "--limit", "1024"])
    bf16 = f"bf16={str(not args.small).lower()}"
    common = [f"model_name_or_path={model}", "eval_dataset=nq_dev", "dataset_dir=.", bf16]
    for name, extra in (("smol_lf", ["engine=llamafactory", "per_device_eval_batch_size=64"]), ("smol_qalign", [])):
        folder = w / name
        bench.run(name, [*QALIGN, "predict", str(SMOL / "predict.yaml"), *common, f"output_dir={folder}", *extra],
                  collect=lambda f=folder: _predict_stats(f))
        bench.run(f"{name}_eval", [*QALIGN, "eval", "--predictions", str(w / name / "generated_predictions.jsonl"),
                                   "--gold", "data/nq_dev.json", "--output", str(w / f"{name}-eval")],
                  collect=lambda n=name: _json(w / f"{n}-eval" / "summary.json"))
    if "smol_lf" in bench.results and "smol_qalign" in bench.results and "agreement" not in bench.results:
        bench.results["agreement"] = agreement(w / "smol_lf", w / "smol_qalign")
        bench.save()

    mine = ["convert", "preference", "--model", model, "--template", "smollm2", "--input", train,
            "--num-samples", "4", "--max-new-tokens", "32", "--seed", "42"]
    bench.run("mine_new", [*QALIGN, *mine, "--dataset", "pref_new", "--limit", str(args.mine_limit)],
              collect=lambda: {"questions": args.mine_limit})
    if args.old:
        old_env = {"PYTHONPATH": f"{Path(args.old).resolve()}:{os.environ.get('PYTHONPATH', '')}"}
        bench.run("mine_old", [*QALIGN, *mine, "--dataset", "pref_old", "--limit", str(args.old_mine_limit),
                               "--batch-size", "32"], env=old_env, collect=lambda: {"questions": args.old_mine_limit})

    grpo = [*QALIGN, "train", str(SMOL / "grpo.yaml"), f"model_name_or_path={model}", "dataset=nq_grpo",
            "dataset_dir=.", bf16, "logging_steps=1"]
    for name, per_device, accum, steps, extra in (
        ("grpo_smol_1x8", 8, 1, 16, []), ("grpo_smol_1x8_paged", 8, 1, 16, ["use_transformers_paged=true"]),
        ("grpo_smol_16x8", 16, 8, 4, []), ("grpo_smol_16x8_paged", 16, 8, 4, ["use_transformers_paged=true"]),
    ):
        folder = w / name
        bench.run(name, [*grpo, f"output_dir={folder}", f"per_device_train_batch_size={per_device}",
                         f"gradient_accumulation_steps={accum}", f"max_steps={1 if args.small else steps}", *extra],
                  collect=lambda f=folder, n=per_device * accum: _grpo_stats(f, n))


def agreement(lf: Path, qa: Path) -> dict[str, Any]:
    """How many greedy answers are identical, and the differing ones (prompt-aligned by row)."""
    a = [json.loads(line) for line in (lf / "generated_predictions.jsonl").open()]
    b = [json.loads(line) for line in (qa / "generated_predictions.jsonl").open()]
    assert len(a) == len(b) and all(x["prompt"] == y["prompt"] for x, y in zip(a, b, strict=True))
    differ = [{"id": y.get("id"), "lf": x["predict"], "qalign": y["predict"]}
              for x, y in zip(a, b, strict=True) if x["predict"] != y["predict"]]
    return {"rows": len(a), "same": len(a) - len(differ), "rate": round(1 - len(differ) / len(a), 4),
            "differ": differ[:20]}


def table(results: dict[str, Any]) -> str:
    lines = ["| measurement | wall s | detail |", "|---|---:|---|"]
    for name, r in results.items():
        if name in ("agreement", "meta") or not isinstance(r, dict):
            continue
        detail = {k: v for k, v in r.items() if k not in ("ok", "wall_s", "tail")}
        lines.append(f"| {name} | {r.get('wall_s')} | {json.dumps(detail)[:200] if r.get('ok') else 'FAILED'} |")
    if "agreement" in results:
        ag = results["agreement"]
        lines.append(f"\nagreement qalign predict vs do_predict: {ag['same']}/{ag['rows']} ({100 * ag['rate']:.1f}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=("qwen8b", "awq", "grpo-awq", "smollm2"), required=True)
    parser.add_argument("--out", default="outputs/bench/generation")
    parser.add_argument("--work", default="/tmp/genbench", help="models, data and run folders")
    parser.add_argument("--prompts", type=int, default=3610)
    parser.add_argument("--lf-prompts", type=int, default=512)
    parser.add_argument("--awq-prompts", type=int, default=512)
    parser.add_argument("--awq-lf-prompts", type=int, default=128)
    parser.add_argument("--grpo-steps", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="CPU smoke run of the script (tiny shape)")
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--dev", default=".nq/nq-open-top5.dev.jsonl.gz")
    parser.add_argument("--train", default=".nq/nq-open-top5.train.jsonl.gz")
    parser.add_argument("--mine-limit", type=int, default=1024)
    parser.add_argument("--old", help="folder holding the previous qalign package (for mine_old)")
    parser.add_argument("--old-mine-limit", type=int, default=256)
    args = parser.parse_args(argv)
    bench = Bench(Path(args.out).resolve(), Path(args.work).resolve())
    if "meta" not in bench.results:
        import torch

        from qalign.study.repro import package_versions

        bench.results["meta"] = {"versions": package_versions(), "torch": torch.__version__,
                                 "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    parts = {"qwen8b": part_qwen8b, "awq": part_awq, "grpo-awq": part_grpo_awq, "smollm2": part_smollm2}
    for part in args.part:
        parts[part](bench, args)
    bench.save()
    print(table(bench.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
