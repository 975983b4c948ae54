#!/usr/bin/env bash
# The README screenshot (docs/demo.png): the page as `make demo` starts it, SmolLM2-135M base vs its SFT adapter,
# driven in headless Chromium by tests/e2e/drive.mjs. Needs `make model sft` (or `make pipeline`), Debian's chromium
# and `npm ci --prefix tests/e2e`. The page is driven twice; the second run, on warm models, is the screenshot.
# Usage: bash demo/screenshot.sh [OUT.png]   (default docs/demo.png)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-docs/demo.png}")
port=${DEMO_PORT:-8597}
mkdir -p "$(dirname "$out")"
.venv/bin/streamlit run demo/app.py --server.address 127.0.0.1 --server.port "$port" --server.headless true \
    --server.fileWatcherType none --browser.gatherUsageStats false --client.toolbarMode viewer \
    -- --recipe recipes/smollm2-135m/predict.yaml --model models/smollm2-135m-instruct \
    --outputs outputs/smollm2-135m --data data > "${TMPDIR:-/tmp}/qalign-demo-screenshot.log" 2>&1 &
server=$!
trap 'kill "$server"' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/_stcore/health" >/dev/null && break; sleep 1; done
for shot in "${TMPDIR:-/tmp}/qalign-demo-warmup.png" "$out"; do
    DEMO_URL="http://127.0.0.1:$port/" DEMO_SCREENSHOT="$shot" DEMO_VIEWPORT=1400x1040 \
    DEMO_MODELS='["base","sft"]' DEMO_QUESTION="who wrote hamlet" DEMO_GOLDS="William Shakespeare | Shakespeare" \
    DEMO_PASSAGES=$'Saturn | Saturn, the sixth planet from the Sun, is best known for its bright and extensive system of rings.\nHamlet | Hamlet, the tragedy of a Danish prince, was written by William Shakespeare around 1600.\nViolin | A standard violin has four strings, tuned in perfect fifths: G, D, A and E.' \
    node tests/e2e/drive.mjs > /dev/null
done
echo "wrote $out"
