#!/usr/bin/env bash
# Where a GRPO step and a 300-question predict spend their time, alone on the GPU (issue 21 items 2-3), and which
# parameters a non-finite GRPO gradient hits (issue 20 item 4): the study's GRPO settings (recipes/smollm2-135m/
# grpo.yaml: 16 prompts x 8 completions of <= 32 tokens, EM + F1, seed 1, the study's 1024 train questions) from the
# base model, whose seed-1 run hit a non-finite gradient at step 4 on 2026-12-02.
# On the GPU machine, after `bash bench/gpu_setup.sh`:  STEPS=8 bash bench/gpu_probe.sh   (writes $OUT/probe.txt)
set -uo pipefail
source bench/gpu_env.sh
steps=${STEPS:-8}
work=/tmp/probe && rm -rf "$work" && mkdir -p "$work"
out=${OUT:-$work}
{
  $QALIGN convert grpo --input .nq/nq-open-top5.train.jsonl.gz --dataset probe_grpo --top-k 5 --prompt answer_only \
    --limit 1024 >/dev/null
  $QALIGN convert eval --input .nq/nq-open-top5.dev.jsonl.gz --dataset probe_test --top-k 5 --prompt answer_only >/dev/null
  start=$(date +%s%N)
  $QALIGN train recipes/smollm2-135m/grpo.yaml dataset=probe_grpo output_dir=$work/grpo seed=1 bf16=true \
    max_steps="$steps" > "$work/grpo.log" 2>&1
  echo "grpo exit $? in $(( ($(date +%s%N) - start) / 1000000 )) ms (process wall, $steps steps)"
  start=$(date +%s%N)
  $QALIGN predict recipes/smollm2-135m/predict.yaml eval_dataset=probe_test output_dir=$work/predict bf16=true \
    engine_batch_tokens=262144 > "$work/predict.log" 2>&1
  echo "predict exit $? in $(( ($(date +%s%N) - start) / 1000000 )) ms (process wall, 300 questions)"
  python3 bench/grpo_timing.py --steps "$work/grpo"
  python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
for dump in sorted((work / "grpo").glob("nonfinite_step_*.json")):
    print("==", dump.name)
    for record in json.loads(dump.read_text())["micro_batches"]:
        print({k: v for k, v in record.items() if k not in ("prompt_lengths", "completion_tokens_kept",
                                                             "completion_ids", "prompt_tail_ids")})
print("predict", (work / "predict/predict_results.json").read_text())
PY
  echo "== SDPA on fully-masked (left-pad) query rows, per backend and dtype (bench/sdpa_masked_rows.py)"
  timeout 120 python3 bench/sdpa_masked_rows.py
  cp "$work"/grpo/nonfinite_step_*.json "$work/grpo.log" "$work/predict.log" "$out/" 2>/dev/null
  cp "$work/grpo/trainer_state.json" "$out/grpo_trainer_state.json" 2>/dev/null
} 2>&1 | tee "$out/probe.txt"
