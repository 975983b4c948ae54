"""Warm predict workers: the study's predict steps reuse a process that has imported everything already.

A cold step is a fresh `qalign ...` process; a 300-question predict on the H200 spent 23 of its 30 s outside
generation (imports, CUDA start, model and data load; bench/RESULTS.md). A predict step instead borrows an idle
worker (`python -m qalign.generate.predict_worker`, started when none is idle), sends it the step's recipe and log,
and waits for its exit code; the log gets the same header line and reads as a cold step's. A worker that dies
mid-job fails that step (its log says so after what the worker had written) and the next predict step gets a new
one. Other step kinds stay cold. `qalign study --cold` (or QALIGN_COLD_STEPS=1) runs every step cold, for A/B
measurement. Each worker's own output between jobs (import warnings, a crash) goes to LOGS/workers/predict-N.log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from qalign.procs import PEAK_FILE_ENV, child_env

WORKER_MODULE = "qalign.generate.predict_worker"
COLD_ENV = "QALIGN_COLD_STEPS"  # 1: every study step is a fresh process (qalign.env.env_flag spellings)
CLOSE_SECONDS = 30.0  # a worker told to stop (EOF) gets this long before it is killed


def takes(argv: list[str]) -> bool:
    """Whether a step's argv is one a warm worker runs: `predict RECIPE [key=value ...]`."""
    return len(argv) >= 2 and argv[0] == "predict" and not any(arg.startswith("-") for arg in argv[1:])


class PredictWorker:
    """One `qalign.generate.predict_worker` process and its pipes."""

    def __init__(self, stderr_log: Path) -> None:
        env = child_env()  # what a cold step gets (qalign.procs.run_in_subprocess)
        env.pop(PEAK_FILE_ENV, None)  # peaks come per job, in the job's peak_file
        stderr_log.parent.mkdir(parents=True, exist_ok=True)
        with stderr_log.open("w", encoding="utf-8") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=stderr, text=True, encoding="utf-8", env=env)
        self.stderr_log = stderr_log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, argv: list[str], log: Path, peak_file: Path | None) -> tuple[int, bool]:
        """Run `qalign predict` ARGV[1:] into LOG (its header already written); (exit code, worker still usable)."""
        job = {"recipe": argv[1], "overrides": argv[2:], "log": str(log.resolve()),
               "peak_file": None if peak_file is None else str(peak_file.resolve())}
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:  # the pipe broke: the worker is gone
            line = ""
        try:
            reply = json.loads(line) if line else None
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("rc"), int):
            return self._died(log, line), False
        return reply["rc"], not reply.get("retire")

    def _died(self, log: Path, line: str) -> int:
        """Kill what is left of the worker, say so at the end of LOG; a non-zero exit code for the step."""
        if self.proc.poll() is None:  # it answered nonsense: it cannot be trusted with another job
            self.proc.kill()
        code = self.proc.wait()
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"\nqalign: the warm predict worker (pid {self.pid}) died during this step ({how}"
                         + (f"; it answered {line.strip()[:200]!r}" if line else "")
                         + f"; its own output: {self.stderr_log}); the next predict step starts a new one\n")
        return code or 1  # a signal reads as a cold step's: -9 for SIGKILL

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """EOF on its stdin ends it; killed if it does not end within TIMEOUT."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class WarmPool:
    """Idle predict workers, borrowed by the runner's threads one step at a time; workers start when needed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # the workers' own logs
        self._lock = threading.Lock()
        self._idle: list[PredictWorker] = []
        self._all: list[PredictWorker] = []
        self._started = 0
        self._closed = False

    def pids(self) -> frozenset[int]:
        """The live workers' process ids (the GPU budget does not count them as someone else's job)."""
        with self._lock:
            return frozenset(worker.pid for worker in self._all)

    def _borrow(self) -> PredictWorker:
        dead: list[PredictWorker] = []
        chosen = None
        with self._lock:
            if self._closed:
                raise RuntimeError("the warm pool is closed")
            while self._idle and chosen is None:
                worker = self._idle.pop()
                if worker.proc.poll() is None:
                    chosen = worker
                else:  # died while idle: replaced by a new one
                    self._all.remove(worker)
                    dead.append(worker)
            if chosen is None:
                self._started += 1
                number = self._started
        for worker in dead:
            worker.close()
        if chosen is not None:
            return chosen
        worker = PredictWorker(self.folder / f"predict-{number}.log")
        with self._lock:
            self._all.append(worker)
        return worker

    def _give_back(self, worker: PredictWorker, usable: bool) -> None:
        if usable and worker.proc.poll() is None:
            with self._lock:
                if not self._closed:
                    self._idle.append(worker)
                    return
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
        worker.close()

    def run(self, argv: list[str], log: Path, header: str = "", peak_file: Path | None = None) -> int:
        """What qalign.procs.run_in_subprocess does for `qalign ARGV`, in a warm worker: the exit code."""
        log.parent.mkdir(parents=True, exist_ok=True)
        if peak_file is not None:
            peak_file.unlink(missing_ok=True)  # a stale file from an earlier run is not this run's measurement
        with log.open("w", encoding="utf-8") as handle:
            if header:
                handle.write(header + "\n")
        worker = self._borrow()
        usable = False
        try:
            code, usable = worker.run(argv, log, peak_file)
        finally:
            self._give_back(worker, usable)
        return code

    def close(self) -> None:
        """Stop every worker (EOF, then a kill after CLOSE_SECONDS); the pool takes no more steps."""
        with self._lock:
            self._closed = True
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.close()
