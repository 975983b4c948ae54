"""Run the study's steps in order, each `qalign ...` in a subprocess with its own log, skipping finished ones.

A step is finished when its done-marker exists and the command recorded when it last ran (OUTPUT/steps/) is the
same; a step whose input step ran in this invocation is run again. A failed step blocks the steps that need it
and the study goes on with the others. A step starts only once every step it needs has finished, so the plan's
needs must name every input a step reads (`--jobs N` runs independent steps side by side).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from qalign.io import atomic_write_json
from qalign.study.plan import Step, step_dependencies

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class StepResult:
    """What happened to a step: done (skipped), ran, failed, blocked (a need failed) or planned (dry run)."""

    state: str
    reason: str = ""
    seconds: float = 0.0
    log: Path | None = None


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--force, --dry-run and --jobs: how `qalign study` and `qalign sweep` run their plan."""
    parser.add_argument("--force", action="store_true", help="re-run every step, even finished ones")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (and what is done) without running")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="run up to N steps side by side once the steps they need are done (default 1)")


def slug(name: str) -> str:
    return _SLUG.sub("-", name).strip("-")


def command_line(step: Step) -> str:
    """The step as a shell-readable `qalign ...` line (for logs and the report)."""
    import shlex

    return "qalign " + " ".join(shlex.quote(arg) for arg in step.argv)


def _recorded(state_dir: Path, step: Step) -> list[str] | None:
    try:
        return json.loads((state_dir / f"{slug(step.name)}.json").read_text(encoding="utf-8"))["argv"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _error_line(log: Path) -> str:
    """The last line of a log that looks like an error (else its last non-empty line), shortened."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    errors = [line for line in lines if re.search(r"(Error|error:|Exception)\b", line)]
    line = (errors or lines or [""])[-1]
    return line if len(line) <= 240 else line[:237] + "..."


def _execute(step: Step, log: Path) -> int:
    from qalign.procs import run_in_subprocess

    return run_in_subprocess(step.argv, log, header=f"$ {command_line(step)}")


def _blocked_by(step: Step, results: dict[str, StepResult]) -> StepResult | None:
    for need in step.needs:
        result = results.get(need)
        if result and result.state in ("failed", "blocked"):
            return StepResult("blocked", result.reason)
    return None


def run_steps(
    steps: list[Step], output: Path, *, force: bool = False, dry_run: bool = False, jobs: int = 1, echo=print
) -> dict[str, StepResult]:
    """Run (or, with dry_run, list) every step; return each step's result by name.

    With jobs > 1, up to that many steps whose needs have finished run at once, earliest in the plan first: at
    SmolLM2 scale a step is mostly process start and model load (a 300-question predict on the H200: 23 of its
    30 s outside generation, bench/RESULTS.md), time a GPU can spend on another step."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    step_dependencies(steps)
    logs, state_dir = output / "logs", output / "steps"
    results: dict[str, StepResult] = {}
    ran: set[str] = set()
    total = len(steps)
    pending = list(enumerate(steps, start=1))
    running: dict[Future, tuple[int, Step, Path, float]] = {}

    def settle(index: int, step: Step) -> bool:
        """Resolve a step that needs no run (cannot run, blocked, done, planned); False when it has to run."""
        label = f"[{index}/{total}] {step.name}"
        problem = step.check()  # before the needs: a missing recipe is the reason to report, not its data
        if problem:
            results[step.name] = StepResult("failed", problem)
            echo(f"{label}: cannot run: {problem}")
            return True
        blocked = _blocked_by(step, results)
        if blocked:
            results[step.name] = blocked
            echo(f"{label}: not run ({blocked.reason})")
            return True
        recorded = _recorded(state_dir, step)
        fresh_inputs = any(need in ran for need in step.needs)
        if not force and not fresh_inputs and recorded in (None, step.argv) and step.is_done():
            results[step.name] = StepResult("done")
            echo(f"{label}: skip (done)")
            return True
        if dry_run:
            results[step.name] = StepResult("planned")
            ran.add(step.name)  # its dependents would run again too
            echo(f"{label}: would run {command_line(step)}")
            return True
        why = "" if force or not step.done.exists() else " (inputs changed)" if fresh_inputs else " (command changed)"
        echo(f"{label}: running{why} ...")
        return False

    def finish(index: int, step: Step, log: Path, start: float, code: int) -> None:
        label = f"[{index}/{total}] {step.name}"
        seconds = time.time() - start
        if code != 0 or not step.done.exists():
            detail = f"exit {code}" if code else f"finished without writing {step.done}"
            error = _error_line(log)
            reason = f"{step.name} failed ({detail}{': ' + error if error else ''}; log {log})"
            results[step.name] = StepResult("failed", reason, seconds, log)
            echo(f"{label}: FAILED in {seconds:.0f} s: {reason}")
            return
        atomic_write_json(state_dir / f"{slug(step.name)}.json", {"argv": step.argv, "seconds": round(seconds, 1)})
        results[step.name] = StepResult("ran", "", seconds, log)
        ran.add(step.name)
        echo(f"{label}: ok ({seconds:.0f} s)")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            progress = True
            while progress and len(running) < jobs:
                progress = False
                for item in list(pending):
                    index, step = item
                    if len(running) >= jobs or not all(need in results for need in step.needs):
                        continue  # a need is still running, or no slot is free
                    pending.remove(item)
                    progress = True
                    if not settle(index, step):
                        log = logs / f"{index:02d}-{slug(step.name)}.log"
                        running[pool.submit(_execute, step, log)] = (index, step, log, time.time())
            if not running:
                if pending:  # nothing runs and nothing is ready: the needs go round in a circle
                    raise ValueError(f"steps wait on each other: {', '.join(step.name for _, step in pending)}")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                finish(*running.pop(future), future.result())
    return results
