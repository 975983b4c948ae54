#!/usr/bin/env python3
"""LoRA on an AWQ 4-bit base through qalign's recipes: GPU memory, speed and quality figures for bench/RESULTS.md.

Part 3b (default): build a Qwen3-8B-shaped random-weight AWQ checkpoint (no calibration), write synthetic
1024-token datasets, then run a few steps of each stage through `recipes/qwen3-8b-awq/<stage>.yaml` (LLaMA-Factory's
`run_exp` in a fresh process per stage, qalign's stages registered) and record peak GPU memory, s/step and tokens/s.
Part 3a (`--smollm2 DIR`): quantize SmolLM2 with `qalign quantize awq`, then dev-set SubEM/F1 of the bf16 and AWQ
models, base and after LoRA SFT (`qalign train recipes/smollm2-135m/...` + `qalign eval`).

    python bench/awq_bench.py --dry-run                       # the plan, on any machine
    python bench/awq_bench.py --stages sft,sft-noliger,predict,predict-b1
    python bench/awq_bench.py --stages dpo,orpo,kto,grpo
    python bench/awq_bench.py --smollm2 models/smollm2-135m-instruct

Prints a markdown table; with $OUT set, writes awq_bench.json, awq_bench.md and awq_bench_logs.txt there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RECIPES = REPO / "recipes" / "qwen3-8b-awq"
SMOL_RECIPES = REPO / "recipes" / "smollm2-135m"
QALIGN = [sys.executable, "-m", "qalign.cli"]
STAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "sft": ("sft.yaml", {"dataset": "bench_sft"}),
    "sft-noliger": ("sft.yaml", {"dataset": "bench_sft", "enable_liger_kernel": False}),
    "sft-fastbw": ("sft.yaml", {"dataset": "bench_sft", "qalign_awq_fast_backward": True}),
    "dpo": ("dpo.yaml", {"dataset": "bench_pref"}),
    "orpo": ("orpo.yaml", {"dataset": "bench_pref"}),
    "kto": ("kto.yaml", {"dataset": "bench_kto"}),
    # a random model never ends a completion: with truncated completions masked, no gradient would reach LoRA
    "grpo": ("grpo.yaml", {"dataset": "bench_grpo", "mask_truncated_completions": False}),
    "grpo-fastbw": ("grpo.yaml", {"dataset": "bench_grpo", "mask_truncated_completions": False,
                                  "qalign_awq_fast_backward": True}),
    "predict": ("predict.yaml", {"eval_dataset": "bench_dev", "max_samples": 48}),
    "predict-b1": ("predict.yaml", {"eval_dataset": "bench_dev", "max_samples": 4, "per_device_eval_batch_size": 1}),
}
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true",
       "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def stage_overrides(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    """`key=value` overrides on top of the stage's recipe: model, synthetic data, a few timed steps."""
    _, extra = STAGES[stage]
    common = {"model_name_or_path": str(args.work / "qwen3-8b-awq-random"), "dataset_dir": str(args.work),
              "output_dir": str(args.work / "runs" / stage), "overwrite_output_dir": True, "report_to": "none",
              "cutoff_len": args.seq_len, "overwrite_cache": True, "preprocessing_num_workers": 4}
    if stage.startswith("predict"):
        return {**common, **extra, **args.set}
    return {**common, "max_steps": args.steps, "gradient_accumulation_steps": args.grad_accum, "logging_steps": 1,
            "save_strategy": "no", "plot_loss": False, "include_num_input_tokens_seen": True, **extra, **args.set}


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **ENV, "PYTHONPATH": path}


def _run(cmd: list[str], log: Path, timeout: int) -> tuple[int, float]:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(cmd)}\n")
        handle.flush()
        try:
            code = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            handle.write(f"\n!! timed out after {timeout} s\n")
            code = 124
    return code, time.perf_counter() - start


def _tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def build_inputs(args: argparse.Namespace) -> None:
    """The random Qwen3-8B-shaped AWQ checkpoint and the synthetic datasets, in `args.work`."""
    from bench.awq_synthetic import write_bench_datasets, write_random_awq_checkpoint

    ckpt = args.work / "qwen3-8b-awq-random"
    if not (ckpt / "model.safetensors.index.json").exists():
        start = time.perf_counter()
        write_random_awq_checkpoint(ckpt, device="cuda")
        print(f"built {ckpt} in {time.perf_counter() - start:.0f} s", flush=True)
        import torch

        torch.cuda.empty_cache()  # the stage processes need the GPU, not this one
    write_bench_datasets(args.work, rows=args.rows, passage_words=args.seq_len // 3)


def run_stages(args: argparse.Namespace, results: dict[str, Any]) -> None:
    for stage in args.stages:
        recipe = args.recipes / STAGES[stage][0]
        if not recipe.exists():
            results[stage] = {"ok": False, "error": f"{recipe} not found (skipped)"}
            print(f"== {stage}: skipped, no {recipe.name}", flush=True)
            continue
        out = args.work / "results" / f"{stage}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--child", stage, "--work", str(args.work), "--steps", str(args.steps),
               "--grad-accum", str(args.grad_accum), "--seq-len", str(args.seq_len), "--recipes", str(args.recipes)]
        cmd += [f"--set={key}={json.dumps(value)}" for key, value in args.set.items()]
        log = args.work / "logs" / f"{stage}.log"
        log.unlink(missing_ok=True)
        print(f"== {stage}: {recipe} ...", flush=True)
        code, wall = _run(cmd, log, args.stage_timeout)
        result = json.loads(out.read_text()) if out.exists() else {"ok": False, "error": f"exit code {code}"}
        result.update(wall_s=wall, log_tail=_tail(log))
        results[stage] = result
        print(f"   {'ok' if result.get('ok') else 'FAILED: ' + str(result.get('error'))[:300]} ({wall:.0f} s)",
              flush=True)


def _summary(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def run_smollm2(args: argparse.Namespace, results: dict[str, Any], save: Any = lambda: None) -> None:
    """3a: bf16 vs AWQ SmolLM2, base and LoRA-SFT, dev-set SubEM/F1 through qalign's own commands.

    Resumable: a step whose output is already in `args.work` is skipped, so a run cut off by a time limit goes on
    where it stopped when called again with the same --work. `save()` runs after every step (partial results)."""
    work, logs = args.work / "smol", args.work / "logs" / "smollm2.log"
    train, dev = args.smol_train, args.smol_dev or Path(str(args.smol_train).replace("train", "dev"))
    limit = lambda n: ["--limit", str(n)] if n else []  # noqa: E731
    steps: dict[str, float] = {}
    table: dict[str, Any] = {}
    results["smollm2"] = state = {"ok": False, "models": table, "seconds": steps, "train": str(train), "dev": str(dev),
                                  "sft_steps": args.smol_steps, "group_size": args.smol_group_size}

    def step(name: str, done: Path, cmd: list[str]) -> None:
        if done.exists():
            print(f"== smollm2 {name}: done before ({done.name} exists), skipped", flush=True)
            return
        print(f"== smollm2 {name} ...", flush=True)
        code, steps[name] = _run(cmd, logs, 600)
        state["log_tail"] = _tail(logs, 60)
        print(f"   exit {code} ({steps[name]:.0f} s)", flush=True)
        save()
        if code:
            state["error"] = f"`{' '.join(cmd)}` failed (exit {code})"
            raise RuntimeError(f"{state['error']}:\n{_tail(logs, 40)}")

    data = work / "data"
    step("convert", data / "smol_train.json", [*QALIGN, "convert", "alpaca", "--input", str(train), "--dataset",
                                               "smol_train", "--dataset-dir", str(work), *limit(args.smol_train_limit)])
    step("convert-dev", data / "smol_dev.json", [*QALIGN, "convert", "eval", "--input", str(dev), "--dataset",
                                                 "smol_dev", "--dataset-dir", str(work), *limit(args.smol_dev_limit)])
    awq_dir, bf16_dir = work / "smollm2-awq", work / "smollm2-bf16"
    step("quantize", awq_dir / "qalign_quantize.json", [
        *QALIGN, "quantize", "awq", "--model", str(args.smollm2), "--output", str(awq_dir), "--force",
        "--group-size", str(args.smol_group_size), "--calib", str(data / "smol_train.json")])
    step("bf16-copy", bf16_dir / "config.json", [sys.executable, "-c", (
        "import sys, torch; from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; "
        "M.from_pretrained(sys.argv[1], torch_dtype=torch.bfloat16).save_pretrained(sys.argv[2]); "
        "T.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])"), str(args.smollm2), str(bf16_dir)])
    for variant, model, dtype in (("bf16", bf16_dir, "bf16=true"), ("awq", awq_dir, "fp16=true")):
        common = [f"model_name_or_path={model}", f"dataset_dir={work}", dtype]
        table[variant] = row = {"weights_mb": sum(f.stat().st_size for f in model.glob("*.safetensors")) / 1e6}
        adapter_dir = work / variant / "sft"
        step(f"{variant}-sft", adapter_dir / "adapter_config.json", [
            *QALIGN, "train", str(SMOL_RECIPES / "sft.yaml"), *common, "dataset=smol_train",
            f"output_dir={adapter_dir}", f"max_steps={args.smol_steps}"])
        for method, adapter in (("base", []), ("sft", [f"adapter_name_or_path={adapter_dir}"])):
            pred = work / variant / f"predict-{method}"
            step(f"{variant}-predict-{method}", pred / "generated_predictions.jsonl", [
                *QALIGN, "train", str(SMOL_RECIPES / "predict.yaml"), *common, *adapter, "eval_dataset=smol_dev",
                f"output_dir={pred}", f"per_device_eval_batch_size={args.smol_predict_batch}"])
            step(f"{variant}-eval-{method}", pred / "eval" / "summary.json", [
                *QALIGN, "eval", "--predictions", str(pred / "generated_predictions.jsonl"),
                "--gold", str(data / "smol_dev.json"), "--output", str(pred / "eval")])
            row[method] = _summary(pred / "eval" / "summary.json")
            save()
    state.update(ok=True, quantize_info=_summary(awq_dir / "qalign_quantize.json"))


def _f(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"device: {meta.get('device')}; {meta.get('versions')}", ""]
    stages = [s for s in results if s in STAGES]
    if stages:
        lines += ["| stage | peak GiB (GB) | run peak GiB | after load GiB | s/step | tokens/step | tokens/s | "
                  "AWQ train mode | LoRA B updated | status |", "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
        for stage in stages:
            r = results[stage]
            peak = f"{r['peak_gib']:.2f} ({r['peak_gib'] * 2**30 / 1e9:.2f})" if "peak_gib" in r else "—"
            lora = r.get("lora_b_nonzero") or {}
            updated = f"{sum(v[0] for v in lora.values())}/{sum(v[1] for v in lora.values())}" if lora else "—"
            mode = "/".join(map(str, r["awq_layers_in_train_mode"])) if r.get("awq_layers_in_train_mode") else "—"
            speed, per_step = _f(r.get("step_s")), _f(r.get("tokens_per_step"), 0)
            if r.get("predict_steady_s"):  # generation: seconds per batch after the first, new tokens per batch
                batches = r["predict_batches"]
                speed = f"{r['predict_steady_s'] / (batches - 1):.2f}/batch"
                per_step = _f(r["generated_tokens"] / batches, 0) if r.get("generated_tokens") else "—"
            status = "ok" if r.get("ok") else str(r.get("error", "failed")).splitlines()[0][:80].replace("|", "/")
            lines.append(f"| {stage} | {peak} | {_f(r.get('run_peak_gib'))} | {_f(r.get('after_load_gib'))} | "
                         f"{speed} | {per_step} | {_f(r.get('tokens_per_s'), 0)} | {mode} | "
                         f"{updated} | {status} |")
    smol_state = results.get("smollm2", {})
    smol = smol_state.get("models")
    if smol_state:
        seconds, state = smol_state.get("seconds", {}), smol_state
        status = "" if state.get("ok") else f"; FAILED: {state.get('error')}"
        if stages:
            lines.append("")
        lines.append(f"SmolLM2: AWQ group {state.get('group_size')}, quantize {_f(seconds.get('quantize'), 0)} s, "
                     f"LoRA SFT {state.get('sft_steps')} steps; train {state.get('train')}, dev {state.get('dev')}"
                     + status)
    if smol:
        lines += ["", "| SmolLM2-135M | weights MB | base SubEM | base F1 | SFT SubEM | SFT F1 | n |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for variant, row in smol.items():
            base, sft = row.get("base", {}), row.get("sft", {})
            pct = lambda s, k: _f(100 * s[k], 1) if k in s else "—"  # noqa: E731
            lines.append(f"| {variant} | {row['weights_mb']:.0f} | {pct(base, 'subem')} | {pct(base, 'f1')} | "
                         f"{pct(sft, 'subem')} | {pct(sft, 'f1')} | {base.get('n', '—')} |")
    return "\n".join(lines) + "\n"


def _meta() -> dict[str, Any]:
    import torch

    from qalign.study.repro import package_versions

    names = ("torch", "transformers", "peft", "autoawq", "llamafactory", "trl", "liger-kernel", "triton")
    versions = ", ".join(f"{name} {version}" for name, version in package_versions(names).items())
    return {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "versions": versions, "date": time.strftime("%Y-%m-%d %H:%M")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", help=f"comma list of {', '.join(STAGES)} (default: all, unless --smollm2)")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per training stage (first is warm-up)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation while timing (default 1)")
    parser.add_argument("--seq-len", type=int, default=1024, help="cutoff_len: every synthetic sequence fills it")
    parser.add_argument("--rows", type=int, default=96, help="rows per synthetic dataset")
    parser.add_argument("--stage-timeout", type=int, default=300, help="seconds per stage process")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "qalign-awq-bench")
    parser.add_argument("--recipes", type=Path, default=RECIPES, help="recipe folder for 3b (default: %(default)s)")
    parser.add_argument("--smollm2", type=Path, metavar="DIR", help="run 3a on this SmolLM2 folder")
    parser.add_argument("--smol-train", type=Path, default=REPO / "data/sample/nq-sample.train.jsonl")
    parser.add_argument("--smol-dev", type=Path, help="default: --smol-train with train -> dev")
    parser.add_argument("--smol-train-limit", type=int, default=0)
    parser.add_argument("--smol-dev-limit", type=int, default=0)
    parser.add_argument("--smol-steps", type=int, default=60, help="LoRA SFT steps (the recipe's max_steps)")
    parser.add_argument("--smol-predict-batch", type=int, default=64, help="prompts per generation batch")
    parser.add_argument("--smol-group-size", type=int, default=64, help="576 = SmolLM2's width is not a multiple "
                        "of 128; 64 is the largest AWQ group that divides it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every 3b stage (YAML value), e.g. --set fp16=false")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.set = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    except yaml.YAMLError as exc:
        parser.error(f"--set: {exc}")
    if args.stages:
        args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in args.stages if s not in STAGES]
        if unknown:
            parser.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    else:
        args.stages = [] if args.smollm2 else list(STAGES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        from bench.awq_measure import run_recipe

        os.environ.update(ENV)
        recipe = args.recipes / STAGES[args.child][0]
        run_recipe(recipe, stage_overrides(args.child, args), args.work / "results" / f"{args.child}.json")
        return 0
    if args.dry_run:
        print(f"work dir: {args.work}")
        for stage in args.stages:
            recipe = args.recipes / STAGES[stage][0]
            overrides = " ".join(f"{k}={v}" for k, v in stage_overrides(stage, args).items())
            print(f"{stage}: qalign train {recipe} {overrides}"
                  + ("" if recipe.exists() else "   [recipe missing: skipped]"))
        if args.smollm2:
            print(f"smollm2: qalign quantize awq --model {args.smollm2} --group-size {args.smol_group_size}; "
                  f"bf16 copy; for bf16 and awq: predict base, LoRA SFT {args.smol_steps} steps, predict SFT, eval "
                  f"(train {args.smol_train})")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("awq_bench needs a CUDA GPU (AWQ kernels are Triton/CUDA); --dry-run shows the plan", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    meta = _meta()

    def save() -> str:
        """The table so far; with $OUT set, also written there (so a run cut off by a time limit leaves its part)."""
        table = markdown(results, meta)
        out = os.environ.get("OUT")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            logs = {k: v.get("log_tail", "") for k, v in results.items() if isinstance(v, dict)}
            kept = {k: ({x: y for x, y in v.items() if x != "log_tail"} if isinstance(v, dict) else v)
                    for k, v in results.items()}
            (Path(out) / "awq_bench.json").write_text(json.dumps({"meta": meta, "results": kept}, indent=2,
                                                                 default=str) + "\n")
            (Path(out) / "awq_bench.md").write_text(table)
            (Path(out) / "awq_bench_logs.txt").write_text("\n\n".join(f"== {k}\n{v}" for k, v in logs.items()))
        return table

    try:
        if args.stages:
            build_inputs(args)
            run_stages(args, results)
        if args.smollm2:
            run_smollm2(args, results, save)
    except Exception as exc:  # report what was measured before the failure
        results["error"] = f"{type(exc).__name__}: {exc}"
        print(results["error"], file=sys.stderr)
    print(save())
    return 0 if all(r.get("ok") for r in results.values() if isinstance(r, dict)) and "error" not in results else 1


if __name__ == "__main__":
    sys.exit(main())
