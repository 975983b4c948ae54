"""Issue 15 Deliver 4: a `qalign study` run killed (SIGKILL) in the middle of a step reruns that step and the ones
after it, and skips the steps that had finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import REPO

RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from qalign.study.plan import Step
    from qalign.study.runner import run_steps

    out = Path(sys.argv[1])
    def convert(name, source):
        return Step(name, ["convert", "eval", "--input", str(out / source), "--dataset", name,
                           "--dataset-dir", str(out)], out / "data" / f"{name}.json")
    steps = [convert("a", "a.jsonl"), convert("b", "b.jsonl"), convert("c", "a.jsonl")]
    results = run_steps(steps, out, echo=lambda line: print(line, flush=True))
    print("RESULTS", {name: r.state for name, r in results.items()}, flush=True)
""")


def _runner(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_killed_study_reruns_only_the_unfinished_steps(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"question": "q a", "answers": ["x"]}) + "\n")
    os.mkfifo(tmp_path / "b.jsonl")  # step b blocks reading it: killed mid-step
    proc = _runner(tmp_path)
    deadline = time.monotonic() + 120
    while not any(p.name.endswith("-b.log") for p in (tmp_path / "logs").glob("*.log")) \
            or not (tmp_path / "data/a.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    time.sleep(1.0)  # step b's `qalign convert` is now waiting on its input
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its running step, as `kill -9` on the group would
    proc.wait(30)
    first = (tmp_path / "data/a.json").stat().st_mtime_ns
    assert not (tmp_path / "data/b.json").exists() and not (tmp_path / "data/c.json").exists()

    (tmp_path / "b.jsonl").unlink()
    (tmp_path / "b.jsonl").write_text(json.dumps({"question": "q b", "answers": ["y"]}) + "\n")
    proc = _runner(tmp_path)
    stdout, _ = proc.communicate(timeout=120)
    assert "[1/3] a: skip (done)" in stdout
    assert "RESULTS {'a': 'done', 'b': 'ran', 'c': 'ran'}" in stdout, stdout
    assert (tmp_path / "data/a.json").stat().st_mtime_ns == first  # the finished step was not redone
    assert not list(tmp_path.rglob("*.tmp"))
