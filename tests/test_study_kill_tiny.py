"""Issue 23, Done when, with a real model: `qalign study` on the tiny Qwen3 (data, base predictions, SFT training,
its predictions, eval, report) SIGKILLed at 10 random points always finishes on rerun with the results an
uninterrupted run reports. CPU training and greedy decoding are deterministic here, so the table must match to the
digit. tests/test_study_kill_random.py holds kills inside convert's write windows; this one kills anywhere."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_study import write_tiny_study

pytestmark = pytest.mark.slow  # 11 studies of 8 steps on the tiny model (5 min 51 s on 2 idle cores)

TRIALS = 10
QALIGN = [sys.executable, "-m", "qalign.cli"]


def _template(folder: Path, model: Path) -> None:
    write_tiny_study(folder, model, "kt", max_steps=3)


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([*QALIGN, "study", "study.yaml"], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(folder: Path) -> str:
    proc = _start(folder)
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "FAILED" not in stdout and "not run" not in stdout, stdout[-4000:]
    return stdout


def _outcome(folder: Path) -> dict[str, object]:
    """The report's results table and every run's scores (the report's date and commands differ by design)."""
    report = (folder / "reports/kt/report.md").read_text()
    table = re.search(r"## Results.*?\n\n(\|.*?)\n\n", report, re.DOTALL)
    assert table, report[:2000]
    runs = folder / "reports/kt/runs"
    return {"table": table.group(1), **{run.name: json.loads((run / "eval/summary.json").read_text())
                                        for run in sorted(runs.iterdir())}}


def test_a_tiny_model_study_killed_anywhere_finishes_with_the_same_results(tiny_qwen3: Path, tmp_path: Path) -> None:
    _template(tmp_path / "template", tiny_qwen3)
    reference = tmp_path / "reference"
    shutil.copytree(tmp_path / "template", reference)
    start = time.monotonic()
    _finish(reference)
    total = time.monotonic() - start
    expected = _outcome(reference)
    assert set(expected) == {"table", "base", "sft-s1"}
    assert re.search(r"^\| sft [^|]*\| 6 \|", expected["table"], re.M), expected["table"]  # the trained run's row

    rng = random.Random(2023)
    for trial in range(TRIALS):
        folder = tmp_path / f"trial{trial}"
        shutil.copytree(tmp_path / "template", folder)
        proc = _start(folder)
        time.sleep(rng.uniform(0.05 * total, 0.95 * total))
        os.killpg(proc.pid, signal.SIGKILL)  # the study and the step it runs, as `kill -9` on the group would
        proc.wait(30)
        _finish(folder)
        assert _outcome(folder) == expected, f"trial {trial}"
