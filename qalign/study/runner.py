"""Run the study's steps in order, each `qalign ...` in a subprocess with its own log, skipping finished ones.

A step is finished when its done-marker exists and the command recorded when it last ran (OUTPUT/steps/) is the
same; a step whose input step ran in this invocation is run again. A failed step blocks the steps that need it
and the study goes on with the others. A step starts only once every step it needs has finished (graphlib's
TopologicalSorter), so the plan's needs must name every input a step reads (`--jobs N` runs independent steps side
by side).

`--jobs auto` (the default; one step at a time without a visible GPU) starts a ready step only when the GPU's free
memory covers its peak (qalign.study.gpu_budget), at most one step per CPU core; a step waiting for memory says so
once (`[i/n] NAME: waiting for GPU memory (needs X GiB, Y GiB free)`). A step that runs out of GPU memory (its log
says `CUDA out of memory` / `OutOfMemoryError`) while other steps ran beside it is not failed but re-queued, its
log kept as `*.oom.log`: the first time with its need raised to RAISE x the larger of its need and the peak it had
reached (`... re-queued, now needing X GiB`), so it waits until that much is free but keeps company (on an H200 two
GRPO runs re-queued to run alone serialised the rest of a study for 7 minutes); the second time to run alone, once
nothing else runs and with no other step started beside it. Running out of memory alone is a failure.
Side by side, ready steps start heaviest chain first: the step with the most training and mining steps still
waiting below it (then plan order), so a mining step that unlocks DPO and KTO runs goes before a predict that
unlocks only an eval.
Each step's record (OUTPUT/steps/NAME.json) keeps its seconds and its process's peak GPU memory (`peak_gpu_bytes`,
reserved; `peak_allocated_bytes`, what its tensors used).
Predict steps run in warm worker processes that imported everything once (qalign.study.warm), the others in a fresh
process each; `--cold` (or QALIGN_COLD_STEPS=1) runs every step fresh.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from qalign.env import env_flag
from qalign.errors import QalignError
from qalign.io import atomic_write_json
from qalign.study.gpu_budget import GIB, GpuBudget, detect, read_peak, step_kind
from qalign.study.plan import Step, step_dependencies
from qalign.study.warm import COLD_ENV, WarmPool, takes

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError")
RAISE = 1.5  # a step that ran out of memory beside others first comes back needing this much more
POLL_SECONDS = 5.0  # how often a step waiting for GPU memory reads it again


@dataclass
class StepResult:
    """What happened to a step: done (skipped), ran, failed, blocked (a need failed) or planned (dry run)."""

    state: str
    reason: str = ""
    seconds: float = 0.0
    log: Path | None = None
    requeued: bool = False  # ran out of GPU memory beside other steps and was run again


@dataclass
class _Running:
    index: int
    step: Step
    log: Path
    start: float
    need: int  # GPU bytes the budget set aside for it


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def jobs_value(text: str) -> int | str:
    """argparse type of --jobs: `auto` or an integer of at least 1."""
    return "auto" if text == "auto" else positive_int(text)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--force, --dry-run and --jobs: how `qalign study` and `qalign sweep` run their plan."""
    parser.add_argument("--force", action="store_true", help="re-run every step, even finished ones")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (and what is done) without running")
    parser.add_argument("--jobs", type=jobs_value, default="auto", metavar="N|auto",
                        help="run up to N steps side by side once the steps they need are done; auto (default): "
                             "as many as the GPU's free memory holds (their measured or estimated peaks, at most "
                             "one per CPU core), one at a time without a GPU")
    parser.add_argument("--cold", action="store_true",
                        help="run every step in a fresh process (default: predict steps reuse warm worker "
                             f"processes that imported everything already; also {COLD_ENV}=1)")


def slug(name: str) -> str:
    return _SLUG.sub("-", name).strip("-")


def command_line(step: Step) -> str:
    """The step as a shell-readable `qalign ...` line (for logs and the report)."""
    import shlex

    return "qalign " + " ".join(shlex.quote(arg) for arg in step.argv)


def _recorded(state_dir: Path, step: Step) -> dict | None:
    """The step's record (OUTPUT/steps/NAME.json) when it holds an argv, else None."""
    try:
        record = json.loads((state_dir / f"{slug(step.name)}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("argv"), list) else None


def _same_command(record: dict | None, step: Step) -> bool:
    """No record (the done-marker decides), or the record ran this command: the same argv and, for a step with a
    recipe file, the same recipe and keys (or the recipe + key=value argv such a step had before recipe files)."""
    if record is None:
        return True
    if step.recipe is None:
        return record["argv"] == step.argv
    same = record["argv"] == step.argv and record.get("recipe") == step.recipe.record()
    return same or record["argv"] == step.recipe.legacy_argv(step.argv[0])


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


def _peak_file(log: Path) -> Path:
    return log.with_suffix(".peak.json")


def _out_of_memory(log: Path) -> bool:
    """Whether the step died of running out of GPU memory: its last error line, not any line (the engine logs a
    batch it split after an OOM and went on)."""
    return bool(_OOM.search(_error_line(log)))


# the warm predict workers of the run_steps call in progress (None: every step cold); a module global because the
# tests replace `_execute` by functions of (step, log)
_warm: WarmPool | None = None


def _execute(step: Step, log: Path) -> int:
    """Run the step's `qalign ...` into LOG: a predict step in a warm worker (unless cold), the rest in a fresh
    process; the exit code."""
    header, peak_file = f"$ {command_line(step)}", _peak_file(log)
    warm = _warm
    if warm is not None and takes(step.argv):
        return warm.run(step.argv, log, header=header, peak_file=peak_file)
    from qalign.procs import run_in_subprocess

    return run_in_subprocess(step.argv, log, header=header, peak_file=peak_file)


def _blocked_by(step: Step, results: dict[str, StepResult]) -> StepResult | None:
    for need in step.needs:
        result = results.get(need)
        if result and result.state in ("failed", "blocked"):
            return StepResult("blocked", result.reason)
    return None


HEAVY_KINDS = ("train", "mine", "teach")  # the steps that take minutes on a GPU; predict and the rest take seconds


def heavy_chains(steps: list[Step]) -> dict[str, int]:
    """Per step, the most heavy steps (HEAVY_KINDS) on one path from it (itself included) to the plan's end."""
    below: dict[str, list[str]] = {step.name: [] for step in steps}
    for step in steps:
        for need in step.needs:
            below.setdefault(need, []).append(step.name)
    heavy = {step.name: int(step_kind(step.argv) in HEAVY_KINDS) for step in steps}
    chain: dict[str, int] = {}
    for name in reversed(list(TopologicalSorter({s.name: s.needs for s in steps}).static_order())):
        chain[name] = heavy.get(name, 0) + max((chain[child] for child in below.get(name, ())), default=0)
    return chain


def run_steps(
    steps: list[Step], output: Path, *, force: bool = False, dry_run: bool = False, jobs: int | str = 1,
    echo=print, gpu: GpuBudget | None = None, poll: float = POLL_SECONDS, cold: bool = False,
) -> dict[str, StepResult]:
    """Run (or, with dry_run, list) every step; return each step's result by name.

    With jobs > 1, up to that many steps whose needs have finished run at once, earliest in the plan first: at
    SmolLM2 scale a step is mostly process start and model load (a 300-question predict on the H200: 23 of its
    30 s outside generation, bench/RESULTS.md), time a GPU can spend on another step. jobs="auto" admits them by
    GPU memory (`gpu`, default: the visible GPU; none visible: one at a time), see the module docstring.
    Predict steps run in warm workers (qalign.study.warm) unless `cold` or QALIGN_COLD_STEPS=1."""
    budget = None
    if jobs == "auto":
        budget = gpu or detect()
        jobs = budget.slots if budget else 1
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be `auto` or at least 1, not {jobs!r}")
    step_dependencies(steps)
    logs, state_dir = output / "logs", output / "steps"
    results: dict[str, StepResult] = {}
    ran: set[str] = set()
    total = len(steps)
    sorter = TopologicalSorter({step.name: step.needs for step in steps})  # a step is ready once its needs finished
    try:
        sorter.prepare()
    except CycleError as exc:  # the needs go round in a circle: nothing could ever start
        circle = set(exc.args[1])
        raise ValueError(f"steps wait on each other: {', '.join(s.name for s in steps if s.name in circle)}") from None
    by_name = {step.name: (index, step) for index, step in enumerate(steps, start=1)}
    chain = heavy_chains(steps)
    eligible: list[tuple[int, Step]] = []  # needs finished, not settled yet: in plan order
    running: dict[Future, _Running] = {}
    ready: list[tuple[int, Step]] = []  # settled, to run: waiting for memory (or, in a full pass, a slot)
    requeued: list[tuple[int, Step]] = []  # ran out of memory beside others: to run alone on an idle GPU
    starting: dict[str, str] = {}  # the line a step's start prints
    overlapped: set[str] = set()  # steps that had company while they ran
    retried: set[str] = set()  # re-queued to run alone
    raised: dict[str, int] = {}  # re-queued once, with this need (bytes)
    waiting_said: set[str] = set()
    if budget:
        for step in steps:
            budget.learn(step.peak_argv(), read_peak(state_dir / f"{slug(step.name)}.json"))
        echo(f"jobs auto: a step starts when the GPU's free memory covers its peak, up to {jobs} at once")

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
        same = _same_command(_recorded(state_dir, step), step)
        fresh_inputs = any(need in ran for need in step.needs)
        if not force and not fresh_inputs and same and step.is_done():
            results[step.name] = StepResult("done")
            echo(f"{label}: skip (done)")
            return True
        if dry_run:
            results[step.name] = StepResult("planned")
            ran.add(step.name)  # its dependents would run again too
            echo(f"{label}: would run {command_line(step)}")
            return True
        why = ("" if force or not step.done.exists() else " (inputs changed)" if fresh_inputs
               else " (command changed)" if not same
               else " (its registry entry does not describe the file)")
        if step.recipe is not None:
            try:  # its recipe file: the model's recipe with the study's keys, as the step will read it
                step.recipe.write()
            except QalignError as exc:
                results[step.name] = StepResult("failed", str(exc))
                echo(f"{label}: cannot run: {exc}")
                return True
        starting[step.name] = f"{label}: running{why} ..."  # printed when it starts (it may wait for memory)
        return False

    def need_of(step: Step) -> int:
        if step.name in raised:
            return raised[step.name]
        return budget.need(step.peak_argv(), read_peak(state_dir / f"{slug(step.name)}.json")) if budget else 0

    def start(index: int, step: Step, need: int) -> None:
        echo(starting.pop(step.name))
        overlapped.discard(step.name)  # company counts per run: an earlier run's is not this one's
        if running:
            overlapped.update(other.step.name for other in running.values())
            overlapped.add(step.name)
        log = logs / f"{index:02d}-{slug(step.name)}.log"
        running[pool.submit(_execute, step, log)] = _Running(index, step, log, time.time(), need)

    def launch() -> None:
        """Start what may start: a re-queued step alone on an idle GPU (nothing beside it), else ready steps,
        heaviest chain first, while their memory is free."""
        if any(run.step.name in retried for run in running.values()):
            return  # a re-queued step runs alone
        if requeued:  # nothing new starts until the GPU is idle for it
            if not running:
                index, step = requeued.pop(0)
                start(index, step, need_of(step))
            return
        for index, step in sorted(ready, key=lambda item: (-chain[item[1].name], item[0])):
            need = need_of(step)
            committed = sum(run.need for run in running.values())
            idle = not any(run.need for run in running.values())
            if budget is None or budget.fits(need, committed, idle):
                ready.remove((index, step))
                start(index, step, need)
            elif step.name not in waiting_said:
                waiting_said.add(step.name)
                free = "?" if budget.last_room is None else f"{budget.last_room / GIB:.1f}"
                echo(f"[{index}/{total}] {step.name}: waiting for GPU memory (needs {need / GIB:.1f} GiB, "
                     f"{free} GiB free)")

    def finish(run: _Running, code: int) -> None:
        step, log = run.step, run.log
        label = f"[{run.index}/{total}] {step.name}"
        seconds = time.time() - run.start
        peak = read_peak(_peak_file(log))
        allocated = read_peak(_peak_file(log), "peak_allocated_bytes")  # recorded beside it: what tensors used
        _peak_file(log).unlink(missing_ok=True)
        if budget:
            budget.learn(step.peak_argv(), peak)  # an out-of-memory peak too: a lower bound of what the step needs
        company = step.name in overlapped or (budget is not None and budget.busy())  # ours, or others' processes
        if code != 0 and company and step.name not in retried and _out_of_memory(log):
            kept = log.with_suffix(".oom.log")
            log.replace(kept)
            if step.name not in raised:  # first time: wait for more room, but keep company
                raised[step.name] = int(RAISE * max(run.need, peak or 0))
                ready.insert(0, (run.index, step))
                starting[step.name] = f"{label}: running again (re-queued after running out of GPU memory) ..."
                echo(f"{label}: out of GPU memory beside other steps after {seconds:.0f} s; re-queued, now needing "
                     f"{raised[step.name] / GIB:.1f} GiB (log {kept})")
                return
            retried.add(step.name)
            requeued.append((run.index, step))
            starting[step.name] = f"{label}: running alone (re-queued after running out of GPU memory) ..."
            echo(f"{label}: out of GPU memory beside other steps after {seconds:.0f} s; re-queued to run alone "
                 f"when the GPU is idle (log {kept})")
            return
        if code != 0 or not step.done.exists():
            detail = f"exit {code}" if code else f"finished without writing {step.done}"
            error = _error_line(log)
            reason = f"{step.name} failed ({detail}{': ' + error if error else ''}; log {log})"
            results[step.name] = StepResult("failed", reason, seconds, log, step.name in retried or step.name in raised)
            echo(f"{label}: FAILED in {seconds:.0f} s: {reason}")
            return
        record = {"argv": step.argv, "seconds": round(seconds, 1)}
        if step.recipe is not None:
            record["recipe"] = step.recipe.record()
        if peak is not None:
            record["peak_gpu_bytes"] = peak
        if allocated is not None:
            record["peak_allocated_bytes"] = allocated
        again = step.name in retried or step.name in raised
        if again:
            record["requeued"] = True
        atomic_write_json(state_dir / f"{slug(step.name)}.json", record)
        results[step.name] = StepResult("ran", "", seconds, log, again)
        ran.add(step.name)
        echo(f"{label}: ok ({seconds:.0f} s)")

    def take_ready() -> None:
        eligible.extend(by_name[name] for name in sorter.get_ready())
        eligible.sort(key=lambda item: item[0])

    def settle_pass() -> bool:
        """Settle eligible steps in plan order while a slot is free (a step that needs no run frees its dependants
        at once: those later in the plan come in this pass, earlier ones in the next); whether any was settled."""
        position, progress = 0, False
        while len(running) + len(ready) < jobs:
            item = next((item for item in eligible if item[0] > position), None)
            if item is None:
                break
            eligible.remove(item)
            position, progress = item[0], True
            if settle(*item):
                sorter.done(item[1].name)
                take_ready()
            else:
                ready.append(item)
                if budget is None:
                    launch()  # at once when it may: the lines come in the order they always did
        return progress

    global _warm
    warm = None if cold or dry_run or env_flag(COLD_ENV) else WarmPool(logs / "workers")
    if warm is not None and budget is not None:
        budget.ours = warm.pids  # an idle worker's CUDA context is not someone else's job
    outer, _warm = _warm, warm
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            take_ready()
            while sorter.is_active():
                while settle_pass():
                    pass
                launch()
                if not running:  # launch starts a step whenever none runs, so nothing is ready or re-queued
                    break
                timeout = poll if ready and not requeued else None  # memory may free up outside our steps
                finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    run = running.pop(future)
                    finish(run, future.result())
                    if run.step.name in results:  # finished (not re-queued after running out of memory)
                        sorter.done(run.step.name)
                        take_ready()
    finally:
        _warm = outer
        if warm is not None:
            warm.close()
    return results
