"""`--jobs auto`: admit a step only when the GPU's free memory covers its peak (measured, else estimated).

A step's peak is what its qalign process reported at exit (qalign.procs, kept in OUTPUT/steps/<step>.json), else
the largest peak measured for that kind of step (a train step: of the same recipe), else a per-kind default; a
margin covers the CUDA context and fragmentation. The free memory is `nvidia-smi`'s reading of the first visible
GPU, so the runner never holds a CUDA context of its own; a budget ledger covers the steps that started but have
not reached their peak yet.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Collection
from pathlib import Path

GIB = 1 << 30
# a step's peak before it was ever measured, by recipe for train steps, else by kind: the largest peaks of the
# SmolLM2-135M study-nq.yaml / sweep-nq.yaml steps on an H200 (2026-12-04, bench/RESULTS.md), rounded up; the
# caching allocator keeps what it took, so these are reserved bytes, not what the step strictly needs
DEFAULT_PEAK_GIB = {"train": 32.0, "train dpo": 53.0, "train kto": 37.0, "train orpo": 37.0, "train grpo": 29.0,
                    "train sft": 31.0, "predict": 21.0, "mine": 36.0, "teach": 36.0, "convert": 0.0, "eval": 0.0,
                    "retrieve": 0.0, "report": 0.0}
MARGIN = 0.10  # of the peak, plus the CUDA context that max_memory_reserved does not count
CONTEXT_BYTES = GIB
MINING_FORMATS = ("preference", "kto")  # the converters that sample from the model


def step_kind(argv: list[str]) -> str:
    """train, predict, mine, teach, convert or eval (else the command) of a step's `qalign ARGV`."""
    command = argv[0] if argv else ""
    if command == "convert":
        return "mine" if len(argv) > 1 and argv[1] in MINING_FORMATS else "convert"
    return command


def peak_key(argv: list[str]) -> str:
    """Steps that peak alike: train steps of one recipe, other steps of one kind."""
    kind = step_kind(argv)
    return f"train {Path(argv[1]).stem}" if kind == "train" and len(argv) > 1 else kind


def read_peak(path: Path, key: str = "peak_gpu_bytes") -> int | None:
    """`peak_gpu_bytes` (reserved; or `peak_allocated_bytes`) of a step record or a peak file; None when absent or
    unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _first_visible_gpu() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return visible or "none"


def nvidia_smi_free() -> int | None:
    """Free bytes of the first visible GPU, from `nvidia-smi`; None without a (visible) GPU."""
    gpu = _first_visible_gpu()
    if gpu in ("none", "-1"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", gpu],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.split()[0]) * (1 << 20)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def nvidia_smi_busy(ignore: Collection[int] = ()) -> bool:
    """Whether some process computes on the first visible GPU now: another runner's steps or someone else's job
    (asked after a step died, so the step itself is gone); IGNORE: our own idle warm workers' process ids."""
    gpu = _first_visible_gpu()
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader", "-i", gpu],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    pids = [line.strip() for line in out.splitlines() if line.strip()]
    return any(not (pid.isdigit() and int(pid) in ignore) for pid in pids)


def cpu_slots() -> int:
    """The most steps side by side under --jobs auto: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class GpuBudget:
    """Which ready step may start now, from free memory and the needs of the steps already running."""

    def __init__(self, free: Callable[[], int | None] = nvidia_smi_free, slots: int | None = None,
                 busy: Callable[[], bool] | None = None) -> None:
        self.free, self.slots = free, slots or cpu_slots()
        self.ours: Callable[[], Collection[int]] = frozenset  # the runner's warm workers (qalign.study.warm)
        self.busy = busy or (lambda: nvidia_smi_busy(self.ours()))
        self.measured: dict[str, int] = {}  # peak_key -> largest peak seen (records and this run)
        self.baseline: int | None = None  # free memory when none of our steps ran
        self.last_room: int | None = None  # what the last `fits` found free (for the runner's waiting line)

    def learn(self, argv: list[str], peak: int | None) -> None:
        if peak is not None:
            key = peak_key(argv)
            self.measured[key] = max(peak, self.measured.get(key, 0))

    def need(self, argv: list[str], recorded: int | None) -> int:
        """Bytes to find free before the step starts: its recorded peak, its kind's, or the default; + margin."""
        peak = recorded if recorded is not None else self.measured.get(peak_key(argv))
        if peak is None:
            default = DEFAULT_PEAK_GIB.get(peak_key(argv), DEFAULT_PEAK_GIB.get(step_kind(argv)))
            peak = int((DEFAULT_PEAK_GIB["train"] if default is None else default) * GIB)
        return 0 if peak == 0 else int(peak * (1 + MARGIN)) + CONTEXT_BYTES

    def available(self, committed: int, idle: bool) -> int | None:
        """Bytes a new step may take: the smaller of nvidia-smi's reading and the ledger (free when idle minus the
        needs of the running steps, which may not have reached their peak yet); None when unknown."""
        now = self.free()
        if idle and now is not None:
            self.baseline = now
        ledger = None if self.baseline is None else self.baseline - committed
        known = [value for value in (now, ledger) if value is not None]
        return min(known) if known else None

    def fits(self, need: int, committed: int, idle: bool) -> bool:
        """Whether a step needing `need` bytes may start; an idle GPU always takes the next step."""
        if need == 0:
            return True
        room = self.last_room = self.available(committed, idle)  # read even when idle: it refreshes the baseline
        return idle or room is None or need <= room


def detect() -> GpuBudget | None:
    """A budget when a GPU is visible (--jobs auto), else None (then auto means one step at a time)."""
    return GpuBudget() if nvidia_smi_free() is not None else None
