#!/usr/bin/env bash
# The README's 3-seed comparison on one lent GPU, as one background job that outlives the ≤10-minute calls:
#   1. `qalign sweep recipes/smollm2-135m/sweep-nq.yaml` (validation slice) and, beside it, the study's steps that
#      no swept value touches (base and the three SFT runs: `--methods sft`);
#   2. `qalign study recipes/smollm2-135m/study-nq.yaml --overrides <the sweep's best.yaml>` (finished steps skipped);
#   3. bench/study_bench.py's step table of both folders (wall, step seconds by kind, failed / re-queued, peak memory).
# Both runners use `--jobs auto` (the default on a GPU): a step starts when free GPU memory covers its peak, and a
# step that still runs out of memory is re-queued and run alone.
# On the GPU machine, after `bash bench/gpu_setup.sh` (the wheels, SmolLM2 and .nq/ in place):
#   bash bench/gpu_study.sh start            # copies the checkout to /tmp/q and starts the job (setsid)
#   BEST=docs/sweep-nq-top5-em/best.yaml bash bench/gpu_study.sh start   # the study only, with an earlier sweep's choice
#   METHODS="sft dpo kto grpo" BEST=... bash bench/gpu_study.sh start   # ... and only these rows (base always runs)
#   bash bench/gpu_study.sh watch SECONDS    # waits until the job ends or SECONDS pass, then copies the reports
#                                            # (adapters left out) and the logs to $OUT
# The machine goes back ~30 s after a call ends, background job and all: call `watch` again at once, every time.
set -uo pipefail
work=/tmp/q
sweep_file=${SWEEP_FILE:-recipes/smollm2-135m/sweep-nq.yaml}
study_file=${STUDY_FILE:-recipes/smollm2-135m/study-nq.yaml}

chain() {
  source bench/gpu_env.sh
  export OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false  # a dozen processes share 16 cores
  mkdir -p logs
  date +%s > logs/chain.start
  local best=${BEST:-reports/nq-top5-sweep/best.yaml} chosen=()
  if [ -z "${BEST:-}" ]; then  # BEST=FILE (an earlier sweep's best.yaml): no sweep, the study at once
    $QALIGN sweep "$sweep_file" > logs/sweep.log 2>&1 &
    local sweep=$!
    $QALIGN study "$study_file" --methods sft > logs/first.log 2>&1 &  # the runners see each other's GPU processes
    local first=$!
    wait $sweep; echo "sweep exit $?" >> logs/chain.log; date +%s > logs/sweep.end
    wait $first; echo "first exit $?" >> logs/chain.log
  fi
  [ -f "$best" ] && chosen=(--overrides "$best")  # a sweep that wrote nothing leaves the study file's values
  local rows=()
  [ -n "${METHODS:-}" ] && read -r -a rows <<< "--methods $METHODS"
  $QALIGN study "$study_file" "${chosen[@]}" "${rows[@]}" > logs/study.log 2>&1
  echo "study exit $?" >> logs/chain.log
  date +%s > logs/chain.end
  for pair in sweep:reports/nq-top5-sweep study:reports/nq-top5-3seeds; do
    local log=${pair%%:*} folder=${pair#*:}
    python3 bench/study_bench.py --report-only "$folder" --per-step --study-log "logs/$log.log" > "logs/bench-$log.txt" 2>&1
  done
}

collect() {
  local out=${OUT:?OUT is the folder whose files come back}
  cd "$work" || return 1
  # what a report needs, not the adapters or the tokenizer copied into every run (375 MB compressed, over the
  # 16 MiB a file may come back with); about 1 MB for the sweep
  find reports logs -type f -size -3M ! -name '*.safetensors' ! -name '*.bin' ! -name '*.pt' ! -name 'tokenizer*' \
    ! -name 'vocab.json' ! -name 'merges.txt' ! -name 'special_tokens*' ! -name 'chat_template*' > /tmp/q-list
  ls data/*_teacher.jsonl dataset_info.json >> /tmp/q-list 2>/dev/null
  tar czf "$out/reports.tgz" -T /tmp/q-list
  ls -la "$out"
  cat logs/chain.log 2>/dev/null
  for log in sweep first study; do [ -f "logs/$log.log" ] && { echo "== $log"; tail -n 6 "logs/$log.log"; }; done
  for table in logs/bench-*.txt; do [ -f "$table" ] && { echo "== $table"; head -n 30 "$table"; }; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
}

case "${1:-}" in
  start)
    rm -rf "$work" && mkdir -p "$work"
    tar cf - --exclude=./.gg1 --exclude=./.gg2 --exclude=./.gg3 --exclude=./.whl . | tar xf - -C "$work"
    cd "$work" && setsid nohup bash bench/gpu_study.sh chain > /tmp/q-chain.out 2>&1 < /dev/null &
    sleep 5; echo "started in $work"
    ;;
  chain) chain ;;
  watch)
    deadline=$(( $(date +%s) + ${2:?watch SECONDS} ))
    while [ "$(date +%s)" -lt "$deadline" ] && [ ! -f "$work/logs/chain.end" ]; do sleep 10; done
    collect
    ;;
  *) echo "usage: bash bench/gpu_study.sh start | watch SECONDS" >&2; exit 2 ;;
esac
