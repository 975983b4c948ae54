"""Issue 23, Done when: a study SIGKILLed at random points (10 trials) always finishes on rerun with the same report,
scores and registry as an uninterrupted run. Cheap steps (the study's own data steps, `qalign eval` of fixed
predictions, `qalign report`); 4 of the kills land inside convert's register/rename/sidecar windows, which a
start-up hook (`sitecustomize.py`, test only) holds open until the kill."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import REPO

TRIALS = 10
WINDOWS = [("registered", "k_test"), ("sidecar", "k_test"), ("registered", "k_train"), ("sidecar", "k_train")]

RUNNER = textwrap.dedent(f"""
    from pathlib import Path
    from qalign.study.config import build_config
    from qalign.study.plan import Step, build_plan
    from qalign.study.runner import run_steps

    cfg = build_config({{"name": "k", "model": "m", "template": "smollm2",
                        "recipes": {str(REPO / 'recipes/smollm2-135m')!r}, "train": "raw/train.jsonl",
                        "test": "raw/test.jsonl", "methods": ["sft"], "output": "out"}})
    steps = [s for s in build_plan(cfg) if s.name.startswith("data ")]
    runs = {{}}
    for run in ("base", "sft"):
        runs[run] = f"out/runs/{{run}}/eval"
        steps.append(Step(f"eval {{run}}", ["eval", "--predictions", f"preds/{{run}}.jsonl",
                                          "--gold", "data/k_test.json", "--output", runs[run]],
                          Path(runs[run]) / "summary.json", ("data test",)))
    steps.append(Step("report", ["report", *[a for r, d in runs.items() for a in ("--run", f"{{r}}={{d}}")],
                                 "--output", "out/report.md"], Path("out/report.md"), ("eval base", "eval sft")))
    results = run_steps(steps, Path("out"), echo=lambda line: print(line, flush=True))
    print("RESULTS", {{name: r.state for name, r in results.items()}}, flush=True)
""")

# Holds a convert open inside one window once QALIGN_TEST_PAUSE=point:dataset is set: `registered` (entry written,
# data file not yet renamed into place) or `sidecar` (the data file in place, its .qkeys not yet written; before
# this fix, also before the entry was written).
HOOK = textwrap.dedent("""
    import os
    if os.environ.get("QALIGN_TEST_PAUSE"):
        import sys, time
        from pathlib import Path
        point, dataset = os.environ["QALIGN_TEST_PAUSE"].split(":")
        if "--dataset" in sys.argv and sys.argv[sys.argv.index("--dataset") + 1] == dataset:
            from qalign.converters import registry

            def pause(where, function):
                def wrapper(*args, **kwargs):
                    if where == "sidecar":
                        Path("PAUSED").write_text(where); time.sleep(120)
                    result = function(*args, **kwargs)
                    if where == "registered":
                        Path("PAUSED").write_text(where); time.sleep(120)
                    return result
                return wrapper

            name = {"registered": "_write_info", "sidecar": "write_sidecar"}[point]
            setattr(registry, name, pause(point, getattr(registry, name)))
""")


def _template(folder: Path) -> None:
    (folder / "raw").mkdir(parents=True)
    (folder / "preds").mkdir()
    passages = [{"title": f"T{j}", "text": "filler passage text " * 30} for j in range(5)]
    for split, n in (("train", 400), ("test", 120)):
        (folder / f"raw/{split}.jsonl").write_text("".join(
            json.dumps({"id": f"{split}{i}", "question": f"{split} question {i}?", "answers": [f"answer {i}"],
                        "ctxs": passages}) + "\n" for i in range(n)))
    for run, right in (("base", 3), ("sft", 2)):  # every 3rd / 2nd prediction right
        (folder / f"preds/{run}.jsonl").write_text("".join(
            json.dumps({"id": f"test{i}", "prediction": f"answer {i}" if i % right == 0 else "wrong"}) + "\n"
            for i in range(120)))


def _start(folder: Path, hook: Path, pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{REPO}"}
    env.pop("QALIGN_TEST_PAUSE", None)
    if pause:
        env["QALIGN_TEST_PAUSE"] = pause
    return subprocess.Popen([sys.executable, "-c", RUNNER], cwd=folder, stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _finish(folder: Path, hook: Path) -> str:
    proc = _start(folder, hook)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "'failed'" not in stdout and "'blocked'" not in stdout, stdout
    return stdout


def _outcome(folder: Path) -> dict[str, object]:
    """The report, the runs' summary numbers and the registry as the study's users see them."""
    from qalign.converters.registry import describes_file, read_dataset_info

    info = read_dataset_info(folder)
    for name, entry in info.items():
        assert describes_file(folder, name, entry["qalign"]["kind"]), name  # every entry describes its file
        entry["qalign"].pop("replaces_sha256", None)  # which file a rerun replaced: not part of the outcome
    return {"report": (folder / "out/report.md").read_text(), "registry": info,
            **{run: json.loads((folder / f"out/runs/{run}/eval/summary.json").read_text()) for run in ("base", "sft")}}


def test_random_kills_always_finish_with_the_uninterrupted_report(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    _template(tmp_path / "template")
    reference = tmp_path / "reference"
    shutil.copytree(tmp_path / "template", reference)
    start = time.monotonic()
    _finish(reference, hook)
    total = time.monotonic() - start
    expected = _outcome(reference)
    assert "| sft |" in expected["report"] and expected["base"]["n"] == 120

    rng = random.Random(23)
    for trial in range(TRIALS):
        folder = tmp_path / f"trial{trial}"
        shutil.copytree(tmp_path / "template", folder)
        if trial < len(WINDOWS):
            point, dataset = WINDOWS[trial]
            proc = _start(folder, hook, f"{point}:{dataset}")
            deadline = time.monotonic() + 120
            while not (folder / "PAUSED").exists():
                assert proc.poll() is None and time.monotonic() < deadline, f"trial {trial}: never paused"
                time.sleep(0.02)
        else:
            proc = _start(folder, hook)
            time.sleep(rng.uniform(0.0, total))
        os.killpg(proc.pid, signal.SIGKILL)  # the study and the step it runs, as `kill -9` on the group would
        proc.wait(30)
        stdout = _finish(folder, hook)
        if trial < len(WINDOWS) and point == "registered":  # registered, not in place: that step runs again
            assert f"data {dataset[2:]}: running" in stdout, stdout
        assert _outcome(folder) == expected, f"trial {trial}"
