"""bench/study_bench.py --report-only on a hand-made study folder: kinds, seconds, failures, re-queues, peaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.study_bench import collect, table
from tests.conftest import REPO

GIB = 1 << 30


def _folder(root: Path) -> Path:
    out = root / "study"
    (out / "steps").mkdir(parents=True)
    (out / "logs").mkdir()
    steps = [  # name, argv, seconds, peak, requeued, end time
        ("data-test", ["convert", "eval", "--input", "t.jsonl"], 2.0, 0, False, 1000.0),
        ("data-pref", ["convert", "preference", "--input", "t.jsonl"], 20.0, 4 * GIB, False, 1030.0),
        ("train-sft-s1", ["train", "recipes/x/sft.yaml", "seed=1"], 30.0, 3 * GIB, False, 1040.0),
        ("train-dpo-s1", ["train", "recipes/x/dpo.yaml", "seed=1"], 40.0, 5 * GIB, True, 1100.0),
        ("predict-base", ["predict", "recipes/x/predict.yaml"], 10.0, 2 * GIB, False, 1012.0),
        ("eval-base", ["eval", "--predictions", "p.jsonl"], 1.0, None, False, 1013.0),
    ]
    for index, (slug, argv, seconds, peak, requeued, end) in enumerate(steps, start=1):
        record = {"argv": argv, "seconds": seconds, **({"peak_gpu_bytes": peak} if peak is not None else {}),
                  **({"requeued": True} if requeued else {})}
        path = out / "steps" / f"{slug}.json"
        path.write_text(json.dumps(record))
        log = out / "logs" / f"{index:02d}-{slug}.log"
        log.write_text(f"$ qalign {' '.join(argv)}\nok\n")
        os.utime(path, (end, end))
        os.utime(log, (end, end))
    (out / "logs" / "04-train-dpo-s1.oom.log").write_text("torch.OutOfMemoryError: CUDA out of memory.\n")
    failed = out / "logs" / "07-train-kto-s1.log"  # no record: it failed
    failed.write_text("$ qalign train recipes/x/kto.yaml seed=1\nValueError: boom\n")
    os.utime(failed, (1090.0, 1090.0))
    return out


def test_report_only_reads_a_finished_folder(tmp_path: Path) -> None:
    out = _folder(tmp_path)
    summary = collect(out)
    assert summary["wall_seconds"] == 102.0  # from 1000 - 2 (data-test's start) to 1100 (train dpo's end)
    text = table(summary)
    assert text.splitlines()[1] == ("total wall: 102 s (estimated from the logs' and records' times); 7 steps, "
                                    "103 step-seconds")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| kind")]
    assert rows == ["| data | 1 | 2 | 0 | 0 | 0.0 |", "| mine | 1 | 20 | 0 | 0 | 4.0 |",
                    "| train dpo | 1 | 40 | 0 | 1 | 5.0 |", "| train kto | 1 | 0 | 1 | 0 | - |",
                    "| train sft | 1 | 30 | 0 | 0 | 3.0 |", "| predict | 1 | 10 | 0 | 0 | 2.0 |",
                    "| eval | 1 | 1 | 0 | 0 | - |"]
    assert "failed steps: train-kto-s1" in text and "re-queued steps: train-dpo-s1" in text
    assert ("peak GPU memory per step (GiB, largest 8; --per-step: all): train-dpo-s1 5.0, data-pref 4.0, "
            "train-sft-s1 3.0, predict-base 2.0, data-test 0.0") in text
    assert "| train-kto-s1 | train kto | 0 | - |" in table(summary, per_step=True)


def test_report_only_prefers_the_study_lines_and_wall_a_run_kept(tmp_path: Path) -> None:
    out = _folder(tmp_path)
    (out / "bench").mkdir()
    (out / "bench" / "bench.json").write_text(json.dumps({"wall_seconds": 612.3, "command": "qalign study s.yaml"}))
    (out / "bench" / "study.out").write_text(
        "study s: 7 steps; output x\n[4/7] train dpo-s1: out of GPU memory beside other steps after 9 s; re-queued\n"
        "[7/7] train kto-s1: FAILED in 12 s: train kto-s1 failed (exit 1: ValueError: boom; log l)\n")
    result = subprocess.run([sys.executable, str(REPO / "bench" / "study_bench.py"), "--report-only", str(out),
                             "--json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "total wall: 612 s (bench.json); 7 steps, 115 step-seconds" in result.stdout
    assert "failed steps: train kto-s1\n" in result.stdout and "re-queued steps: train dpo-s1\n" in result.stdout
    steps = json.loads((tmp_path / "s.json").read_text())["steps"]
    assert steps["train-kto-s1"]["failed"] and steps["train-kto-s1"]["seconds"] == 12.0
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "study_bench.py"), "--report-only", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no steps/ or logs/ folder" in bad.stderr


def test_a_step_still_running_when_the_runner_log_ends_is_unfinished_not_failed(tmp_path: Path) -> None:
    out = _folder(tmp_path)
    running = out / "logs" / "08-train-orpo-s1.log"  # a log, no record, no FAILED line: the machine went back
    running.write_text("$ qalign train recipes/x/orpo.yaml seed=1\n{'loss': 0.9}\n")
    study_log = tmp_path / "study.log"  # the runner's lines kept outside the folder (bench/gpu_study.sh)
    study_log.write_text("[7/8] train kto-s1: FAILED in 12 s: train kto-s1 failed (exit 1: ValueError: boom)\n"
                         "[8/8] train orpo-s1: running ...\n")
    text = table(collect(out, study_log))
    assert "failed steps: train kto-s1\n" in text
    assert "unfinished steps (running when the runner's lines end): train-orpo-s1" in text
    assert "unfinished" not in table(collect(out))  # without the runner's lines a log with no record is a failure
