"""Run the study's steps in order, each `qalign ...` in a subprocess with its own log, skipping finished ones.

A step is finished when its done-marker exists and the command recorded when it last ran (OUTPUT/steps/) is the
same; a step whose input step ran in this invocation is run again. A failed step blocks the steps that need it
and the study goes on with the others.
"""

from __future__ import annotations

import json
import re
import time
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
    steps: list[Step], output: Path, *, force: bool = False, dry_run: bool = False, echo=print
) -> dict[str, StepResult]:
    """Run (or, with dry_run, list) every step; return each step's result by name."""
    step_dependencies(steps)
    logs, state_dir = output / "logs", output / "steps"
    results: dict[str, StepResult] = {}
    ran: set[str] = set()
    total = len(steps)
    for index, step in enumerate(steps, start=1):
        label = f"[{index}/{total}] {step.name}"
        problem = step.check()  # before the needs: a missing recipe is the reason to report, not its data
        if problem:
            results[step.name] = StepResult("failed", problem)
            echo(f"{label}: cannot run: {problem}")
            continue
        blocked = _blocked_by(step, results)
        if blocked:
            results[step.name] = blocked
            echo(f"{label}: not run ({blocked.reason})")
            continue
        recorded = _recorded(state_dir, step)
        fresh_inputs = any(need in ran for need in step.needs)
        if not force and step.done.exists() and not fresh_inputs and recorded in (None, step.argv):
            results[step.name] = StepResult("done")
            echo(f"{label}: skip (done)")
            continue
        if dry_run:
            results[step.name] = StepResult("planned")
            ran.add(step.name)  # its dependents would run again too
            echo(f"{label}: would run {command_line(step)}")
            continue
        why = "" if force or not step.done.exists() else " (inputs changed)" if fresh_inputs else " (command changed)"
        echo(f"{label}: running{why} ...")
        log = logs / f"{index:02d}-{slug(step.name)}.log"
        start = time.time()
        code = _execute(step, log)
        seconds = time.time() - start
        if code != 0 or not step.done.exists():
            detail = f"exit {code}" if code else f"finished without writing {step.done}"
            error = _error_line(log)
            reason = f"{step.name} failed ({detail}{': ' + error if error else ''}; log {log})"
            results[step.name] = StepResult("failed", reason, seconds, log)
            echo(f"{label}: FAILED in {seconds:.0f} s: {reason}")
            continue
        atomic_write_json(state_dir / f"{slug(step.name)}.json", {"argv": step.argv, "seconds": round(seconds, 1)})
        results[step.name] = StepResult("ran", "", seconds, log)
        ran.add(step.name)
        echo(f"{label}: ok ({seconds:.0f} s)")
    return results
