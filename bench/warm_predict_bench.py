"""Cold starts vs a warm worker: N predicts of one eval set as N fresh `qalign predict` processes (what a cold
study step is), then as N jobs of one warm worker (qalign.study.warm, what the study runner does by default).

  python bench/warm_predict_bench.py [--model models/smollm2-135m-instruct] [--n 4] [--out /tmp/warm-bench]
  (from another checkout than the installed one: PYTHONPATH=$PWD, so the workers run this checkout's qalign too)

Uses the bundled sample's 30 dev questions (data/sample/nq-sample.dev.jsonl, top-1 passage) and
recipes/smollm2-135m/predict.yaml; checks the warm predictions are byte-identical to the cold ones; prints each
run's wall seconds and the predict's own generate seconds (predict_results.json), then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from qalign.overrides import read_recipe
from qalign.study.warm import WarmPool

REPO = Path(__file__).resolve().parents[1]
QALIGN = [sys.executable, "-m", "qalign.cli"]


def _recipes(out: Path, model: Path, n: int) -> list[tuple[Path, Path]]:
    """(recipe, output_dir) for cold and warm runs 0..n-1."""
    import yaml

    runs = []
    for mode in ("cold", "warm"):
        for k in range(n):
            folder = out / mode / str(k)
            recipe = read_recipe(REPO / "recipes/smollm2-135m/predict.yaml", layers=[{
                "model_name_or_path": str(model), "eval_dataset": "bench_dev", "dataset_dir": str(out),
                "output_dir": str(folder)}])
            path = out / f"{mode}-{k}.yaml"
            path.write_text(yaml.safe_dump(recipe))
            runs.append((path, folder))
    return runs


def _generate_seconds(folder: Path) -> float:
    return json.loads((folder / "predict_results.json").read_text())["generate_seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models/smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("/tmp/warm-bench"))
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([*QALIGN, "convert", "eval", "--input", str(REPO / "data/sample/nq-sample.dev.jsonl"), "--dataset",
                    "bench_dev", "--top-k", "1", "--dataset-dir", str(out)], check=True, capture_output=True)
    runs = _recipes(out, args.model.resolve(), args.n)
    cold, warm = runs[:args.n], runs[args.n:]
    rows: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    for recipe, folder in cold:
        started = time.perf_counter()
        subprocess.run([*QALIGN, "predict", str(recipe)], check=True, capture_output=True)
        rows["cold"].append((time.perf_counter() - started, _generate_seconds(folder)))
        print(f"cold {recipe.name}: {rows['cold'][-1][0]:.1f} s (generate {rows['cold'][-1][1]} s)", flush=True)
    pool = WarmPool(out / "workers")
    try:
        for k, (recipe, folder) in enumerate(warm):
            started = time.perf_counter()
            code = pool.run(["predict", str(recipe)], out / "logs" / f"warm-{k}.log", header=f"$ warm {k}")
            assert code == 0, (out / "logs" / f"warm-{k}.log").read_text()[-3000:]
            rows["warm"].append((time.perf_counter() - started, _generate_seconds(folder)))
            print(f"warm {recipe.name}: {rows['warm'][-1][0]:.1f} s (generate {rows['warm'][-1][1]} s)", flush=True)
    finally:
        pool.close()
    reference = (cold[0][1] / "generated_predictions.jsonl").read_bytes()
    same = all((folder / "generated_predictions.jsonl").read_bytes() == reference for _, folder in runs)
    print(f"\npredictions identical across all {2 * args.n} runs: {same}")
    print("| mode | runs | wall s each | total s | generate s each | outside generation |")
    print("|---|---|---|---|---|---|")
    for mode, values in rows.items():
        walls, gens = [w for w, _ in values], [g for _, g in values]
        print(f"| {mode} | {len(values)} | {', '.join(f'{w:.1f}' for w in walls)} | {sum(walls):.1f} | "
              f"{statistics.mean(gens):.2f} | {1 - sum(gens) / sum(walls):.0%} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
