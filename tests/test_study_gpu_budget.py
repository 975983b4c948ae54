"""`--jobs auto` on a faked GPU: admission by free memory, measured peaks, and the out-of-memory re-queue."""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import pytest

import qalign.study.gpu_budget as gpu_budget
import qalign.study.runner as runner
from qalign.study.gpu_budget import GIB, GpuBudget, step_kind
from qalign.study.plan import Step
from qalign.study.runner import add_run_options, run_steps

OOM_LINE = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.70 GiB."
TRAIN = ["train", "recipes/mine/custom.yaml"]  # unmeasured, no default of its own: 32 GiB ("train") -> 36.2


def _fake(monkeypatch, oom: dict[str, int] | None = None, peak: int | None = None, seconds: float = 0.25):
    """A fake `_execute`: sleeps, writes its log (an OOM line while oom[name] > 0) and its peak file; records spans."""
    spans: dict[str, list[tuple[float, float]]] = {}
    lock = threading.Lock()
    oom = dict(oom or {})

    def execute(step: Step, log: Path) -> int:
        start = time.monotonic()
        time.sleep(seconds)
        log.parent.mkdir(parents=True, exist_ok=True)
        with lock:
            spans.setdefault(step.name, []).append((start, time.monotonic()))
            failing = oom.get(step.name, 0) > 0
            oom[step.name] = oom.get(step.name, 0) - 1
        if peak is not None:
            runner._peak_file(log).write_text(json.dumps({"peak_gpu_bytes": peak}))
        if failing:
            log.write_text(f"$ qalign {' '.join(step.argv)}\n{OOM_LINE}\n")
            return 1
        log.write_text("ok\n")
        step.done.parent.mkdir(parents=True, exist_ok=True)
        step.done.write_text("done")
        return 0

    monkeypatch.setattr(runner, "_execute", execute)
    return spans


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_kinds_and_the_need_of_a_step() -> None:
    assert [step_kind(argv) for argv in (TRAIN, ["convert", "preference", "--input", "x"], ["convert", "eval"],
                                         ["predict", "p.yaml"], ["eval", "--predictions"], ["teach"])] == \
        ["train", "mine", "convert", "predict", "eval", "teach"]
    budget = GpuBudget(free=lambda: 40 * GIB, slots=2)
    assert budget.need(TRAIN, None) == int(32 * GIB * 1.1) + GIB  # default + 10% + the CUDA context
    assert budget.need(["train", "recipes/smollm2-135m/dpo.yaml"], None) == int(53 * GIB * 1.1) + GIB  # its recipe's
    assert budget.need(["eval", "--predictions", "p"], None) == 0 and budget.need(TRAIN, 0) == 0
    budget.learn(["train", "other/custom.yaml"], 2 * GIB)  # the same recipe name: the same kind of peak
    assert budget.need(TRAIN, None) == int(2 * GIB * 1.1) + GIB
    assert budget.need(TRAIN, 4 * GIB) == int(4 * GIB * 1.1) + GIB  # the step's own record wins


def test_auto_without_a_gpu_runs_one_step_at_a_time(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gpu_budget, "nvidia_smi_free", lambda: None)
    spans = _fake(monkeypatch, seconds=0.1)
    steps = [Step(name, TRAIN, tmp_path / "done" / name) for name in "abc"]
    lines: list[str] = []
    results = run_steps(steps, tmp_path / "out", jobs="auto", echo=lines.append)
    assert [r.state for r in results.values()] == ["ran"] * 3
    ordered = sorted(span for runs in spans.values() for span in runs)
    assert not any(_overlap(x, y) for x, y in zip(ordered, ordered[1:], strict=False))
    assert lines[0] == "[1/3] a: running ..." and not any("jobs auto" in line for line in lines)
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    assert parser.parse_args([]).jobs == "auto" and parser.parse_args(["--jobs", "3"]).jobs == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--jobs", "0"])


def test_admission_waits_for_memory_and_learns_measured_peaks(monkeypatch, tmp_path: Path) -> None:
    spans = _fake(monkeypatch, peak=2 * GIB)
    done = tmp_path / "done"
    # 40 GiB free: one unmeasured train step (36.2 GiB) at a time; the eval step (no GPU) runs beside it
    steps = [Step("a", TRAIN, done / "a"), Step("b", TRAIN, done / "b"), Step("e", ["eval", "x"], done / "e")]
    lines: list[str] = []
    results = run_steps(steps, tmp_path / "out", jobs="auto", echo=lines.append,
                        gpu=GpuBudget(free=lambda: 40 * GIB, slots=4), poll=0.02)
    assert [results[n].state for n in "abe"] == ["ran"] * 3
    (a,), (b,), (e,) = spans["a"], spans["b"], spans["e"]
    assert not _overlap(a, b) and _overlap(a, e), spans
    assert lines[:4] == ["jobs auto: a step starts when the GPU's free memory covers its peak, up to 4 at once",
                         "[1/3] a: running ...", "[2/3] b: waiting for GPU memory (needs 36.2 GiB, 3.8 GiB free)",
                         "[3/3] e: running ..."], lines
    record = json.loads((tmp_path / "out" / "steps" / "a.json").read_text())
    assert record == {"argv": TRAIN, "seconds": record["seconds"], "peak_gpu_bytes": 2 * GIB}
    assert not list((tmp_path / "out" / "logs").glob("*.peak.json"))  # read into the record, then removed
    # a rerun knows the measured peaks (3.2 GiB each): both train steps fit side by side now
    spans.clear()
    run_steps(steps, tmp_path / "out", jobs="auto", force=True, echo=lambda _: None,
              gpu=GpuBudget(free=lambda: 40 * GIB, slots=4), poll=0.02)
    assert _overlap(spans["a"][0], spans["b"][0]), spans


def test_out_of_memory_beside_others_is_requeued_with_a_raised_need(monkeypatch, tmp_path: Path) -> None:
    spans = _fake(monkeypatch, oom={"b": 1}, peak=30 * GIB)
    done = tmp_path / "done"
    steps = [Step("a", TRAIN, done / "a"), Step("b", TRAIN, done / "b"), Step("c", TRAIN, done / "c"),
             Step("d", TRAIN, done / "d", needs=("b",)), Step("f", TRAIN, done / "f", needs=("a",))]
    lines: list[str] = []
    out = tmp_path / "out"
    results = run_steps(steps, out, jobs="auto", echo=lines.append, gpu=GpuBudget(free=lambda: 100 * GIB, slots=3),
                        poll=0.02)
    assert {n: (r.state, r.requeued) for n, r in results.items()} == {
        "a": ("ran", False), "b": ("ran", True), "c": ("ran", False), "d": ("ran", False), "f": ("ran", False)}
    first, _again = spans["b"]
    assert _overlap(first, spans["a"][0]), "b's first run had company"
    kept = out / "logs" / "02-b.oom.log"
    assert OOM_LINE in kept.read_text() and (out / "logs" / "02-b.log").read_text() == "ok\n"
    # its need: 1.5 x the larger of what it was given (36.2 GiB) and the peak it reached (30 GiB) = 54.3 GiB
    assert f"[2/5] b: out of GPU memory beside other steps after 0 s; re-queued, now needing 54.3 GiB " \
           f"(log {kept})" in lines
    assert "[2/5] b: running again (re-queued after running out of GPU memory) ..." in lines
    assert not any("FAILED" in line or "alone" in line for line in lines)
    assert json.loads((out / "steps" / "b.json").read_text())["requeued"] is True


def _five_steps(done: Path) -> list[Step]:
    """b and four more, three slots: b's second run has company again (it starts before e and g)."""
    return [Step(name, TRAIN, done / name) for name in "abceg"]


def test_a_second_out_of_memory_beside_others_runs_the_step_alone(monkeypatch, tmp_path: Path) -> None:
    spans = _fake(monkeypatch, oom={"b": 2}, seconds=0.2)
    lines: list[str] = []
    results = run_steps(_five_steps(tmp_path / "done"), tmp_path / "out", jobs="auto", echo=lines.append,
                        gpu=GpuBudget(free=lambda: 200 * GIB, slots=3), poll=0.02)
    assert (results["b"].state, results["b"].requeued) == ("ran", True)
    first, second, alone = spans["b"]
    others = [span for name, runs in spans.items() if name != "b" for span in runs]
    assert any(_overlap(second, span) for span in others), "the raised-need run had company"
    assert not any(_overlap(alone, span) for span in others), "the last run was not alone"
    assert any("re-queued to run alone when the GPU is idle" in line for line in lines)
    assert "[2/5] b: running alone (re-queued after running out of GPU memory) ..." in lines


def test_out_of_memory_alone_and_one_with_fixed_jobs_1_fail(monkeypatch, tmp_path: Path) -> None:
    _fake(monkeypatch, oom={"b": 3}, seconds=0.2)
    steps = [*_five_steps(tmp_path / "done"), Step("d", TRAIN, tmp_path / "done" / "d", needs=("b",))]
    results = run_steps(steps, tmp_path / "o1", jobs="auto", echo=lambda _: None,
                        gpu=GpuBudget(free=lambda: 200 * GIB, slots=3), poll=0.02)
    assert (results["b"].state, results["b"].requeued, results["d"].state) == ("failed", True, "blocked")
    assert "CUDA out of memory" in results["b"].reason
    _fake(monkeypatch, oom={"b": 1}, seconds=0.05)  # --jobs 1: every step ran alone, so an OOM fails as before
    lines: list[str] = []
    results = run_steps(steps, tmp_path / "o2", jobs=1, echo=lines.append)
    assert (results["b"].state, results["b"].requeued) == ("failed", False)
    assert not any("re-queued" in line for line in lines)


def test_a_qalign_process_writes_its_peak_at_exit(tmp_path: Path) -> None:
    from qalign.procs import run_in_subprocess

    peak = tmp_path / "peak.json"
    peak.write_text('{"peak_gpu_bytes": 99}')  # stale: removed before the run
    code = run_in_subprocess(["eval", "--help"], tmp_path / "log.txt", peak_file=peak)
    assert code == 0 and json.loads(peak.read_text()) == {"peak_gpu_bytes": 0, "peak_allocated_bytes": 0}  # no CUDA


def test_an_out_of_memory_beside_another_runners_processes_is_requeued_too(monkeypatch, tmp_path: Path) -> None:
    """Our runner ran the step alone, but the GPU had other processes (a second study, someone's job): company."""
    spans = _fake(monkeypatch, oom={"b": 1}, seconds=0.05)
    steps = [Step("a", TRAIN, tmp_path / "done" / "a"), Step("b", TRAIN, tmp_path / "done" / "b", needs=("a",))]
    lines: list[str] = []
    results = run_steps(steps, tmp_path / "out", jobs="auto", echo=lines.append, poll=0.02,
                        gpu=GpuBudget(free=lambda: 100 * GIB, slots=2, busy=lambda: True))
    assert (results["b"].state, results["b"].requeued, len(spans["b"])) == ("ran", True, 2)
    assert any(line.startswith("[2/2] b: out of GPU memory beside other steps") for line in lines)
    _fake(monkeypatch, oom={"b": 1}, seconds=0.05)  # a quiet GPU: alone means alone, and the OOM is a failure
    steps = [Step(step.name, TRAIN, tmp_path / "quiet-done" / step.name, step.needs) for step in steps]
    results = run_steps(steps, tmp_path / "quiet", jobs="auto", echo=lambda _: None, poll=0.02,
                        gpu=GpuBudget(free=lambda: 100 * GIB, slots=2, busy=lambda: False))
    assert (results["b"].state, results["b"].requeued) == ("failed", False)


def test_a_recovered_engine_oom_does_not_make_a_later_failure_an_oom(monkeypatch, tmp_path: Path) -> None:
    def execute(step: Step, log: Path) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("engine: CUDA out of memory at 512 rows; split the batch and went on\n"
                       "ValueError: dataset nope not registered\n")
        return 1

    monkeypatch.setattr(runner, "_execute", execute)
    steps = [Step("a", TRAIN, tmp_path / "done" / "a")]
    results = run_steps(steps, tmp_path / "out", jobs="auto", echo=lambda _: None, poll=0.02,
                        gpu=GpuBudget(free=lambda: 100 * GIB, slots=2, busy=lambda: True))
    assert (results["a"].state, results["a"].requeued) == ("failed", False)
    assert "dataset nope not registered" in results["a"].reason


def test_steps_get_expandable_segments_unless_the_user_chose(monkeypatch, tmp_path: Path) -> None:
    """Reserved memory (what the budget reads) stays near what a step uses; a user's allocator setting wins."""
    import subprocess

    from qalign import procs

    seen: list[str | None] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, env=None, **k: seen.append(env.get("PYTORCH_CUDA_ALLOC_CONF"))
                        or subprocess.CompletedProcess(a, 0))
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    procs.run_in_subprocess(["eval", "--help"], tmp_path / "a.log")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    procs.run_in_subprocess(["eval", "--help"], tmp_path / "b.log")
    assert seen == ["expandable_segments:True", "max_split_size_mb:128"]


def test_the_step_with_the_heaviest_chain_below_starts_first(monkeypatch, tmp_path: Path) -> None:
    """Room for one GPU step at a time: the mining step (a DPO run waits on it) goes before the earlier predict."""
    spans = _fake(monkeypatch, peak=30 * GIB, seconds=0.05)
    done = tmp_path / "done"
    predict, mine = ["predict", "p.yaml"], ["convert", "preference", "--input", "x"]
    steps = [Step("sft", TRAIN, done / "sft"), Step("predict sft", predict, done / "p", needs=("sft",)),
             Step("mine", mine, done / "m", needs=("sft",)), Step("dpo", TRAIN, done / "d", needs=("mine",))]
    assert runner.heavy_chains(steps) == {"sft": 3, "predict sft": 0, "mine": 2, "dpo": 1}
    results = run_steps(steps, tmp_path / "out", jobs="auto", echo=lambda _: None,
                        gpu=GpuBudget(free=lambda: 40 * GIB, slots=4), poll=0.02)
    assert all(r.state == "ran" for r in results.values())
    assert spans["mine"][0][0] < spans["predict sft"][0][0], spans


def test_our_warm_workers_are_not_someone_elses_gpu_job(monkeypatch) -> None:
    """An idle warm predict worker keeps a CUDA context: nvidia-smi lists it, but it is not another job's process."""
    import subprocess

    listed = {"pids": ""}
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=listed["pids"]))
    budget = GpuBudget(free=lambda: 10 * GIB, slots=1)
    budget.ours = lambda: frozenset({101})
    assert not budget.busy()
    listed["pids"] = "101\n"
    assert not budget.busy()
    listed["pids"] = "101\n202\n"
    assert budget.busy()
    listed["pids"] = "[N/A]\n"  # a process nvidia-smi cannot name is someone's
    assert budget.busy()
