"""Running `qalign ...` in a fresh process (LLaMA-Factory keeps global state, so each training run gets its own),
and the child's side of the study's GPU budget: its peak memory, written at exit where `QALIGN_PEAK_FILE` says."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path

PEAK_FILE_ENV = "QALIGN_PEAK_FILE"  # where a qalign process writes {"peak_gpu_bytes": N, ...} at exit
# Steps that share one GPU: with expandable segments torch's caching allocator grows one mapping instead of keeping
# a block per tensor size, so what a step reserves (what the study's budget reads) stays near what it uses; the
# batches' varying lengths otherwise left DPO reserving 34-52 GiB (bench/RESULTS.md, 2026-12-04). A value the user
# set wins.
ALLOC_CONF = ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def child_env() -> dict[str, str]:
    """The environment a study step's process gets: ours, with the allocator setting (ALLOC_CONF) unless set."""
    env = {**os.environ}
    env.setdefault(*ALLOC_CONF)
    return env


def run_in_subprocess(args: list[str], log: Path, header: str = "", peak_file: Path | None = None) -> int:
    """Run `qalign ARGS` in a fresh process (LLaMA-Factory state does not leak between runs), output to LOG;
    with `peak_file`, the process writes its peak GPU memory there at exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env()
    if peak_file is not None:
        peak_file.unlink(missing_ok=True)  # a stale file from an earlier run is not this run's measurement
        env[PEAK_FILE_ENV] = str(peak_file)
    with log.open("w", encoding="utf-8") as handle:
        if header:
            handle.write(header + "\n")
            handle.flush()
        return subprocess.run([sys.executable, "-m", "qalign.cli", *args], stdout=handle,
                              stderr=subprocess.STDOUT, check=False, env=env).returncode


def peak_gpu_bytes(allocated: bool = False) -> int:
    """The most GPU memory torch's allocator reserved (or, with `allocated`, handed out to tensors) in this process;
    0 when CUDA was never initialised."""
    torch = sys.modules.get("torch")  # never import torch (or start CUDA) just to say it was not used
    if torch is None or not torch.cuda.is_initialized():
        return 0
    peak = torch.cuda.max_memory_allocated if allocated else torch.cuda.max_memory_reserved
    return max(peak(device) for device in range(torch.cuda.device_count()))


def write_peak(path: str | Path) -> None:
    """Write this process's peak GPU memory (reserved and allocated) to PATH as JSON, atomically."""
    from qalign.io import atomic_write_json

    try:
        atomic_write_json(Path(path), {"peak_gpu_bytes": peak_gpu_bytes(),
                                       "peak_allocated_bytes": peak_gpu_bytes(allocated=True)})
    except Exception as exc:  # noqa: BLE001 - at exit a missing measurement must not turn into a failed step
        print(f"qalign: could not write the peak GPU memory to {path}: {exc}", file=sys.stderr)


def record_peak_at_exit() -> None:
    """When `QALIGN_PEAK_FILE` is set (the study runner sets it per step), write the peak there at exit."""
    path = os.environ.get(PEAK_FILE_ENV)
    if path:
        atexit.register(write_peak, path)
