#!/usr/bin/env bash
# Re-check LoRA on an AWQ 4-bit base on a CUDA GPU (bench/RESULTS.md, "LoRA on AWQ"). Each part fits in about
# 10 minutes on one H100 (smollm2 resumes where it stopped when run again); `all` runs the three in turn.
#   bash bench/awq_smoke.sh sft       # Qwen3-8B-shaped AWQ: SFT (Liger fused loss / none / + qalign's AWQ
#                                     # backward), predict 16 and 1 prompts at a time
#   bash bench/awq_smoke.sh stages    # Qwen3-8B-shaped AWQ: DPO, ORPO, KTO, GRPO (+ qalign's AWQ backward)
#   bash bench/awq_smoke.sh smollm2   # quantize SmolLM2 + dev SubEM/F1 of bf16 vs AWQ, base and LoRA-SFT
#   bash bench/awq_smoke.sh all
# Needs the pinned stack plus liger-kernel==0.7.0 (`make install`; on an offline GPU machine the carried wheels,
# `bash bench/gpu_setup.sh && source bench/gpu_env.sh`), and for smollm2 models/smollm2-135m-instruct (`make model`).
# smollm2 uses .nq/nq-open-top5.{train,dev}.jsonl.gz when present (a copy of ../shared/data), else the bundled sample.
# Prints markdown tables; with OUT=DIR set, also writes DIR/awq_bench.json, awq_bench.md and awq_bench_logs.txt
# (one part per call: a later part overwrites them). PYTHON=... picks the interpreter (default .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SMOL=${SMOL:-models/smollm2-135m-instruct}
smol_data=()
if [ -f .nq/nq-open-top5.train.jsonl.gz ] && [ -f .nq/nq-open-top5.dev.jsonl.gz ]; then
  smol_data=(--smol-train .nq/nq-open-top5.train.jsonl.gz --smol-dev .nq/nq-open-top5.dev.jsonl.gz
             --smol-dev-limit 300 --smol-steps 100)
fi

run_part() {
  case "$1" in
    sft)     "$PY" bench/awq_bench.py --stages sft,sft-noliger,sft-fastbw,predict,predict-b1 ;;
    stages)  "$PY" bench/awq_bench.py --stages dpo,orpo,kto,grpo,grpo-fastbw ;;
    smollm2) "$PY" bench/awq_bench.py --smollm2 "$SMOL" ${smol_data[@]+"${smol_data[@]}"} ;;
    *) echo "usage: bash bench/awq_smoke.sh [sft|stages|smollm2|all]" >&2; return 2 ;;
  esac
}

status=0
if [ "${1:-all}" = all ]; then
  for part in sft stages smollm2; do run_part "$part" || status=1; done
else
  run_part "$1" || status=$?
fi
exit "$status"
