"""A warm `qalign predict`: one process that imported torch, transformers and LLaMA-Factory once runs predict
recipes one after another (the study's predict steps: qalign/study/warm.py starts and feeds it).

`python -m qalign.generate.predict_worker` reads one JSON job per line on stdin:
  {"recipe": PATH, "log": PATH, "peak_file": PATH | null, "overrides": [KEY=VALUE, ...] (optional)}
and answers each with one JSON line on the stdout it started with: {"rc": N}, plus "retire": true when it could not
give its GPU memory back (it then exits, and the runner starts a new worker next time). During a job, file
descriptors 1 and 2 point at the job's log (appended to: the runner wrote its header line), so the log reads as a
cold `qalign predict` step's, error lines included (the runner's out-of-memory re-queue reads them); between jobs
both go to the worker's stderr. After each job the model is freed and the peaks reset, so `nvidia-smi`'s free
memory (the study's GPU budget) is true again. EOF on stdin ends the worker: a killed runner leaves none behind
once the job in hand ends.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from qalign.errors import QalignError
from qalign.procs import ALLOC_CONF, PEAK_FILE_ENV, write_peak

# tensor memory still allocated after a job's cleanup above this: something kept the model (the worker retires,
# since its memory would stay out of the study's budget)
LEFT_OVER_BYTES = 64 << 20
# loggers' lru_cache'd "once" methods (module, name): a cold process would print their warnings again
ONCE_PER_PROCESS = (("llamafactory.extras.logging", "warning_rank0_once"),
                    ("transformers.utils.logging", "warning_once"), ("transformers.utils.logging", "info_once"))


def prepare() -> None:
    """What a cold `qalign predict` has by the time it predicts: its environment, qalign's patches, the imports."""
    os.environ.setdefault(*ALLOC_CONF)  # as qalign.procs sets it for a cold step, before torch starts CUDA
    os.environ.pop(PEAK_FILE_ENV, None)  # the peaks go per job to the job's file, never at exit
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")  # what `qalign predict` sets, before LF's loggers exist
    from qalign.lf.register import register_all

    register_all()  # as the start-up hook and qalign.cli do: before LLaMA-Factory is imported
    import llamafactory.data  # noqa: F401 - the seconds of imports a warm job skips
    import llamafactory.hparams  # noqa: F401
    import llamafactory.model  # noqa: F401

    import qalign.generate.predict  # noqa: F401


def parse_job(line: str) -> dict[str, Any]:
    """A job line as a dict with recipe, log, peak_file and overrides; ValueError naming what is wrong."""
    job = json.loads(line)
    if not isinstance(job, dict) or not isinstance(job.get("recipe"), str) or not isinstance(job.get("log"), str):
        raise ValueError(f"a job is {{\"recipe\": PATH, \"log\": PATH, \"peak_file\": PATH|null}}, got {line!r}")
    overrides = job.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
        raise ValueError(f"overrides must be a list of KEY=VALUE strings, got {overrides!r}")
    return {"recipe": job["recipe"], "log": job["log"], "peak_file": job.get("peak_file"), "overrides": overrides}


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 (and so print, logging handlers, tqdm and C libraries) at LOG, appending."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (target, *saved):
            os.close(fd)


def predict(recipe: str, overrides: list[str]) -> int:
    """`qalign predict RECIPE OVERRIDES` with qalign.cli's exit codes and messages: 2 and `qalign: error: ...` for a
    QalignError, 1 and the traceback for anything else (a CUDA out-of-memory error prints as a cold process's)."""
    from qalign.generate.predict import predict_command

    try:
        return predict_command(recipe, overrides)
    except QalignError as exc:
        print(f"qalign: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # as the interpreter reads an exit code
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - every failure is this job's, and the worker serves the next
        traceback.print_exc()
        traceback.clear_frames(exc.__traceback__)  # its frames hold the model: free it with them
        return 1


def reset_state() -> None:
    """Forget what a job leaves in module globals that a cold process would start without."""
    accelerate_state = sys.modules.get("accelerate.state")
    if accelerate_state is not None:  # TrainingArguments set it up for this job's device; the next sets its own
        accelerate_state.AcceleratorState._reset_state(reset_partial_state=True)  # noqa: SLF001
    for module, name in ONCE_PER_PROCESS:  # the next job's log gets its once-per-process warnings too
        once = getattr(sys.modules.get(module), name, None)
        if hasattr(once, "cache_clear"):
            once.cache_clear()


def release() -> bool:
    """Free what the job left (the model, cached GPU blocks) and reset the peaks; whether the worker may go on."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return True
    try:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # noqa: SLF001
        if clear_workspaces is not None:  # cuBLAS keeps its workspace in the caching allocator past empty_cache
            clear_workspaces()
            torch.cuda.empty_cache()
        left = max(torch.cuda.memory_allocated(device) for device in range(torch.cuda.device_count()))
        for device in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(device)
    except RuntimeError as exc:  # a CUDA error (a device-side assert) leaves the context unusable
        print(f"qalign predict worker: CUDA is unusable after the job ({exc}); retiring", file=sys.stderr)
        return False
    if left > LEFT_OVER_BYTES:
        print(f"qalign predict worker: {left / (1 << 20):.0f} MiB still allocated after the job; retiring",
              file=sys.stderr)
        return False
    return True


def run_job(job: dict[str, Any]) -> tuple[int, bool]:
    """Run one job into its log and write its peak file; (exit code, whether the worker may take another)."""
    log = Path(job["log"])
    with output_to(log):
        code = predict(job["recipe"], job["overrides"])
    if job["peak_file"]:
        write_peak(job["peak_file"])  # the peaks since the last job's reset: this job's
    reset_state()
    return code, release()


def serve(jobs: TextIO, replies: TextIO) -> int:
    """Answer each job line of JOBS on REPLIES until EOF (or a retirement)."""
    for line in jobs:
        if not line.strip():
            continue
        try:
            job = parse_job(line)
        except ValueError as exc:
            print(f"qalign predict worker: {exc}", file=sys.stderr)
            replies.write(json.dumps({"rc": 2}) + "\n")
            replies.flush()
            continue
        code, healthy = run_job(job)
        replies.write(json.dumps({"rc": code, **({} if healthy else {"retire": True})}) + "\n")
        replies.flush()
        if not healthy:
            return 0
    return 0


def main() -> int:
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a stray print between jobs goes to the worker's stderr, never into the replies
    prepare()
    return serve(sys.stdin, replies)


if __name__ == "__main__":
    sys.exit(main())
