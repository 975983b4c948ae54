#!/usr/bin/env bash
# The next GRPO speed-ups, A/B on one GPU (issue 21 item 2), each run alone, same data, seed and steps:
#   recipe   recipes/smollm2-135m/grpo.yaml as shipped (16 x 8 completions, 8 learning micro-batches of 16)
#   mb32     4 micro-batches of 32 (per_device_train_batch_size=32 gradient_accumulation_steps=4): the same rollout
#            and the same Adam step (tests/test_grpo.py checks it on the CPU), half the learning passes
#   bf16     the model folder saved in bfloat16: LLaMA-Factory 0.9.5 loads the checkpoint's dtype
#            (torch_dtype="auto"), so from `qalign model`'s float32 folder every rollout runs in float32
#   bf16+mb32
# and a 300-question predict from the float32 and the bfloat16 folders (seconds and scores).
# On the GPU machine, after `bash bench/gpu_setup.sh`:  STEPS=6 bash bench/gpu_grpo_ab.sh   ($OUT/grpo_ab.txt)
set -uo pipefail
source bench/gpu_env.sh
steps=${STEPS:-6}
work=/tmp/grpo-ab && rm -rf "$work" && mkdir -p "$work"
out=${OUT:-$work}
{
  python3 - <<'PY'
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, dst = "models/smollm2-135m-instruct", "models/smollm2-135m-instruct-bf16"
AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32).to(torch.bfloat16).save_pretrained(dst)
AutoTokenizer.from_pretrained(src).save_pretrained(dst)
print("wrote", dst)
PY
  $QALIGN convert grpo --input .nq/nq-open-top5.train.jsonl.gz --dataset ab_grpo --top-k 5 --prompt answer_only \
    --limit 1024 >/dev/null
  $QALIGN convert eval --input .nq/nq-open-top5.dev.jsonl.gz --dataset ab_test --top-k 5 --prompt answer_only >/dev/null
  bf16=model_name_or_path=models/smollm2-135m-instruct-bf16
  mb32="per_device_train_batch_size=32 gradient_accumulation_steps=4"
  for variant in recipe mb32 bf16 bf16+mb32; do
    case $variant in recipe) extra="" ;; mb32) extra=$mb32 ;; bf16) extra=$bf16 ;; bf16+mb32) extra="$bf16 $mb32" ;; esac
    # shellcheck disable=SC2086
    timeout 240 $QALIGN train recipes/smollm2-135m/grpo.yaml dataset=ab_grpo output_dir="$work/$variant" seed=1 \
      bf16=true max_steps="$steps" $extra > "$work/$variant.log" 2>&1
    echo "$variant exit $?"
  done
  python3 bench/grpo_timing.py "$work/recipe" "$work/mb32" "$work/bf16" "$work/bf16+mb32"
  for model in models/smollm2-135m-instruct models/smollm2-135m-instruct-bf16; do
    name=$(basename "$model")
    $QALIGN predict recipes/smollm2-135m/predict.yaml model_name_or_path="$model" eval_dataset=ab_test bf16=true \
      output_dir="$work/predict-$name" engine_batch_tokens=262144 > "$work/predict-$name.log" 2>&1
    $QALIGN eval --predictions "$work/predict-$name/generated_predictions.jsonl" --gold data/ab_test.json \
      --output "$work/eval-$name" > /dev/null 2>&1
    echo "== predict $name"; cat "$work/predict-$name/predict_results.json"; cat "$work/eval-$name/summary.json"
  done
} 2>&1 | tee "$out/grpo_ab.txt"
