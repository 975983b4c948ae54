"""A study end to end on the GPU path, then one table of where its time and memory went.

  python bench/study_bench.py recipes/smollm2-135m/study-nq.yaml [KEY=VALUE ... --study-options]
      runs `qalign study FILE ...` (its default `--jobs auto` unless given), keeps its output lines in
      OUTPUT/bench/study.out and the wall time in OUTPUT/bench/bench.json, then prints the table
  python bench/study_bench.py --report-only reports/nq-top5-3seeds [--study-log FILE] [--per-step] [--json FILE]
      the table of a finished study folder, running nothing

The table: total wall, step-seconds by kind (data, mine, teach, train by recipe, predict, eval), failed steps,
steps re-queued after running out of GPU memory, and the peak GPU memory of the steps (the `peak_gpu_bytes` each
step's process reported, kept in OUTPUT/steps/*.json). Without bench.json the wall is estimated from the logs'
times. Failures and re-queues come from the runner's lines (study.out, or `--study-log FILE` where the runner's
output went elsewhere, e.g. bench/gpu_study.sh's logs/study.log), else from the logs (a log with no record, or
newer than it, is a failed step; a `*.oom.log` is a re-queue). With the runner's lines, a step with a log but no
record and no failure was still running when they end: it is listed as unfinished.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qalign.study.gpu_budget import GIB, step_kind  # noqa: E402

_LINE = re.compile(r"^\[\d+/\d+\] (?P<name>.+?): (?P<what>FAILED in (?P<seconds>\d+) s|out of GPU memory beside)")
_OUTPUT = re.compile(r"^study .*; output (?P<dir>.+)$")


def bench_kind(argv: list[str]) -> str:
    """data, mine, teach, `train <recipe>`, predict or eval."""
    kind = step_kind(argv)
    if kind == "convert":
        return "data"
    return f"train {Path(argv[1]).stem}" if kind == "train" and len(argv) > 1 else kind


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _header_argv(log: Path) -> list[str]:
    """The `qalign ...` command a step log starts with (`$ qalign ARGS`)."""
    try:
        with log.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        return []
    return shlex.split(first[len("$ qalign "):]) if first.startswith("$ qalign ") else []


def collect(folder: Path, study_log: Path | None = None) -> dict[str, Any]:
    """Steps, kinds, seconds, peaks, failures and re-queues of a study folder (see the module docstring)."""
    steps: dict[str, dict[str, Any]] = {}
    for record_path in sorted((folder / "steps").glob("*.json")):
        record = _json(record_path)
        if isinstance(record.get("argv"), list):
            recipe = record.get("recipe") if isinstance(record.get("recipe"), dict) else {}
            steps[record_path.stem] = {"argv": record["argv"], "seconds": float(record.get("seconds") or 0),
                                       # a train step's recipe file is recipe.yaml: its kind is the model recipe's
                                       "kind_argv": [record["argv"][0], recipe["from"]] if "from" in recipe else None,
                                       "peak_gpu_bytes": record.get("peak_gpu_bytes"),
                                       "requeued": bool(record.get("requeued")), "failed": False,
                                       "end": record_path.stat().st_mtime, "recorded": True}
    logs = sorted((folder / "logs").glob("*.log"))
    out_lines = _study_out(folder, study_log)
    for log in logs:
        if log.name.endswith(".oom.log"):
            continue
        slug = log.stem.split("-", 1)[1] if re.match(r"^\d+-", log.stem) else log.stem
        step = steps.get(slug)
        if step is None:
            step = steps[slug] = {"argv": _header_argv(log), "seconds": 0.0, "peak_gpu_bytes": None,
                                  "requeued": False, "failed": out_lines is None, "end": log.stat().st_mtime}
        elif out_lines is None and log.stat().st_mtime > step["end"] + 1:  # the last run failed after an ok one
            step["failed"] = True
        step["log"] = str(log)
        if log.with_suffix(".oom.log").exists():
            step["requeued"] = True
    names = {slug: slug for slug in steps}
    if out_lines is not None:  # the study's own lines name failures and re-queues exactly
        for line in out_lines:
            match = _LINE.match(line)
            if not match:
                continue
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", match["name"]).strip("-")
            step = steps.setdefault(slug, {"argv": [], "seconds": 0.0, "peak_gpu_bytes": None, "requeued": False,
                                           "failed": False, "end": 0.0})
            if match["seconds"] is not None:
                step["failed"], step["seconds"] = True, float(match["seconds"])
            else:
                step["requeued"] = True
            names[slug] = match["name"]
    for slug, step in steps.items():
        step["name"] = names.get(slug, slug)
        step["kind"] = bench_kind(step.get("kind_argv") or step["argv"]) if step["argv"] else "?"
    return {"folder": str(folder), "steps": steps, **_wall(folder, steps)}


def _study_out(folder: Path, study_log: Path | None = None) -> list[str] | None:
    path = study_log or folder / "bench" / "study.out"
    return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else None


def _wall(folder: Path, steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    bench = _json(folder / "bench" / "bench.json")
    if "wall_seconds" in bench:
        return {"wall_seconds": bench["wall_seconds"], "wall_from": "bench.json", "command": bench.get("command")}
    spans = [(step["end"] - step["seconds"], step["end"]) for step in steps.values() if step["end"]]
    wall = max(end for _, end in spans) - min(start for start, _ in spans) if spans else 0.0
    return {"wall_seconds": round(wall, 1), "wall_from": "estimated from the logs' and records' times"}


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f}"


def table(summary: dict[str, Any], per_step: bool = False) -> str:
    """The printed report: totals, a row per kind, failed and re-queued steps, the peaks."""
    steps = summary["steps"].values()
    kinds: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        kinds.setdefault(step["kind"], []).append(step)
    order = ["data", "mine", "teach", *sorted(k for k in kinds if k.startswith("train ")), "predict", "eval"]
    order += sorted(set(kinds) - set(order))
    lines = [f"study folder: {summary['folder']}",
             f"total wall: {summary['wall_seconds']:.0f} s ({summary['wall_from']}); {len(summary['steps'])} "
             f"steps, {sum(s['seconds'] for s in steps):.0f} step-seconds", "",
             "| kind | steps | step-seconds | failed | re-queued | max peak GiB |", "|---|---:|---:|---:|---:|---:|"]
    for kind in (k for k in order if k in kinds):
        rows = kinds[kind]
        peaks = [s["peak_gpu_bytes"] for s in rows if s["peak_gpu_bytes"] is not None]
        lines.append(f"| {kind} | {len(rows)} | {sum(s['seconds'] for s in rows):.0f} | "
                     f"{sum(s['failed'] for s in rows)} | {sum(s['requeued'] for s in rows)} | "
                     f"{_gib(max(peaks) if peaks else None)} |")
    failed = [s["name"] for s in steps if s["failed"]]
    requeued = [s["name"] + (" (then failed)" if s["failed"] else "") for s in steps if s["requeued"]]
    unfinished = [s["name"] for s in steps if not s.get("recorded") and not s["failed"]]
    lines += ["", f"failed steps: {', '.join(failed) or 'none'}", f"re-queued steps: {', '.join(requeued) or 'none'}"]
    if unfinished:
        lines.append(f"unfinished steps (running when the runner's lines end): {', '.join(unfinished)}")
    measured = sorted((s for s in steps if s["peak_gpu_bytes"] is not None), key=lambda s: -s["peak_gpu_bytes"])
    shown = measured if per_step else measured[:8]
    lines.append(f"peak GPU memory per step (GiB{'' if per_step else ', largest 8; --per-step: all'}): "
                 + (", ".join(f"{s['name']} {_gib(s['peak_gpu_bytes'])}" for s in shown) or "none recorded"))
    if per_step:
        lines += ["", "| step | kind | seconds | peak GiB |", "|---|---|---:|---:|"]
        lines += [f"| {s['name']} | {s['kind']} | {s['seconds']:.0f} | {_gib(s['peak_gpu_bytes'])} |"
                  for s in sorted(steps, key=lambda s: s["name"])]
    return "\n".join(lines)


def run_study(study_args: list[str]) -> Path:
    """`qalign study ARGS`, its lines echoed and kept; returns the study folder."""
    command = [sys.executable, "-m", "qalign.cli", "study", *study_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.time()
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout or []:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
    wall = time.time() - started
    folder = next((Path(m["dir"]) for m in map(_OUTPUT.match, lines) if m), None)
    if folder is None:
        sys.exit(f"study_bench: `qalign study` printed no output folder (exit {proc.returncode})")
    (folder / "bench").mkdir(parents=True, exist_ok=True)
    (folder / "bench" / "study.out").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bench = {"command": shlex.join(["qalign", "study", *study_args]), "wall_seconds": round(wall, 1),
             "exit": proc.returncode, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))}
    (folder / "bench" / "bench.json").write_text(json.dumps(bench, indent=2) + "\n", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report-only", metavar="DIR", help="report on a finished study folder; run nothing")
    parser.add_argument("--study-log", metavar="FILE", help="the runner's lines, when not in DIR/bench/study.out")
    parser.add_argument("--per-step", action="store_true", help="also print every step's seconds and peak")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    args, study_args = parser.parse_known_args(argv)
    if args.report_only:
        if study_args:
            parser.error(f"--report-only runs nothing; drop {' '.join(study_args)}")
        folder = Path(args.report_only)
        if not (folder / "steps").is_dir() and not (folder / "logs").is_dir():
            parser.error(f"{folder}: no steps/ or logs/ folder: not a study output folder")
    elif not study_args:
        parser.error("give a study file (and its options), or --report-only DIR")
    else:
        folder = run_study(study_args)
    summary = collect(folder, Path(args.study_log) if args.study_log else None)
    print(table(summary, args.per_step))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
