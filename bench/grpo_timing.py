"""Where GRPO runs spent their steps: one row per run from its trainer_state.json (the stage's `timing/*` metrics).

  python bench/grpo_timing.py [--steps] RUN_DIR [RUN_DIR ...]   (each holds trainer_state.json; --steps: per step)
Prints a markdown table: seconds a step (train_runtime / steps), the rollout, its generate call, one learning
micro-batch, the first/last reward, skipped (non-finite) steps, and the non-finite dumps' first bad micro-batch.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

KEYS = ("timing/rollout_s", "timing/generate_s", "timing/learn_s")


def _rows(state: dict) -> list[dict]:
    return [row for row in state.get("log_history", []) if "reward" in row]


def run_row(run: Path) -> str:
    state = json.loads((run / "trainer_state.json").read_text(encoding="utf-8"))
    rows = _rows(state)
    runtime = next((row["train_runtime"] for row in state["log_history"] if "train_runtime" in row), math.nan)
    means = [statistics.mean(row.get(key, math.nan) for row in rows) if rows else math.nan for key in KEYS]
    skipped = [str(row["step"]) for row in rows if not math.isfinite(row.get("grad_norm", 0.0))]
    dumps = sorted(p.name for p in run.glob("nonfinite_step_*.json"))
    reward = f"{rows[0]['reward']:.3f} → {rows[-1]['reward']:.3f}" if rows else "—"
    return (f"| {run.name} | {runtime / max(len(rows), 1):.2f} | " + " | ".join(f"{m:.3f}" for m in means)
            + f" | {reward} | {', '.join(skipped) or 'none'} | {', '.join(dumps) or '—'} |")


def step_rows(run: Path) -> list[str]:
    rows = _rows(json.loads((run / "trainer_state.json").read_text(encoding="utf-8")))
    return [f"| {run.name} | {row['step']} | {row['reward']:.3f} | " + " | ".join(f"{row.get(k, math.nan):.3f}"
            for k in KEYS) + f" | {row.get('completions/mean_length', math.nan):.1f} | {row.get('grad_norm')} |"
            for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--steps", action="store_true", help="also one row per logged step")
    args = parser.parse_args(argv)
    print("| run | s/step | rollout | generate | learn (1 micro-batch) | reward first → last | non-finite steps "
          "| dumps |\n|---|---:|---:|---:|---:|---|---|---|")
    for run in args.runs:
        print(run_row(run) if (run / "trainer_state.json").is_file() else f"| {run.name} | no trainer_state.json |")
    if args.steps:
        print("\n| run | step | reward | rollout | generate | learn | completion tokens | grad norm |\n"
              "|---|---:|---:|---:|---:|---:|---:|---|")
        for run in args.runs:
            if (run / "trainer_state.json").is_file():
                print("\n".join(step_rows(run)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
