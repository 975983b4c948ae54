"""Issue 15, data loss: the registry update is locked, the data file is written after the registry check, and
replacing an entry qalign did not write (or of another kind) needs --force."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qalign.converters import registry
from qalign.converters.alpaca import convert_alpaca
from qalign.converters.eval_set import convert_eval
from qalign.converters.job import ConvertJob
from qalign.converters.registry import read_dataset_info, register_dataset
from qalign.errors import QalignError

REPO = Path(__file__).resolve().parents[1]
WORKERS = 8


def _records(path: Path, n: int = 3, prefix: str = "q") -> Path:
    path.write_text("".join(json.dumps({"question": f"{prefix} {i}", "answers": [f"a{i}"]}) + "\n" for i in range(n)))
    return path


def _slow_reads(monkeypatch: pytest.MonkeyPatch, delay: float = 0.05) -> None:
    """Widen the read-modify-write window so that, without the lock, concurrent converts must collide."""
    original = registry.read_dataset_info

    def slow(dataset_dir):
        info = original(dataset_dir)
        time.sleep(delay)
        return info

    monkeypatch.setattr(registry, "read_dataset_info", slow)


def _convert(source: str, name: str, dataset_dir: str, barrier) -> None:
    barrier.wait()
    convert_alpaca(ConvertJob(source, name, dataset_dir=dataset_dir))


def _run_concurrently(tmp_path: Path, names: list[str]) -> list[int]:
    source = str(_records(tmp_path / "raw.jsonl"))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(names))
    procs = [ctx.Process(target=_convert, args=(source, name, str(tmp_path), barrier)) for name in names]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    return [proc.exitcode for proc in procs]


def test_concurrent_converts_lose_no_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _slow_reads(monkeypatch)
    names = [f"d{i}" for i in range(WORKERS)]
    assert _run_concurrently(tmp_path, names) == [0] * WORKERS
    info = read_dataset_info(tmp_path)
    assert sorted(info) == names
    assert all((tmp_path / info[n]["file_name"]).is_file() for n in names)
    assert not list(tmp_path.rglob("*.tmp"))


def test_without_the_lock_the_same_race_loses_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the race above is real, so the lock (not luck) is what keeps every entry."""
    _slow_reads(monkeypatch)
    monkeypatch.setattr(registry, "registry_lock", lambda *a, **k: contextlib.nullcontext())
    names = [f"d{i}" for i in range(WORKERS)]
    assert _run_concurrently(tmp_path, names) == [0] * WORKERS
    assert len(read_dataset_info(tmp_path)) < WORKERS


def test_concurrent_cli_processes(tmp_path: Path) -> None:
    """8 real `qalign convert` processes (eval and alpaca mixed) into one folder: every registration survives."""
    source = _records(tmp_path / "raw.jsonl", n=50)
    procs = [subprocess.Popen([sys.executable, "-m", "qalign.cli", "convert", "eval" if i % 2 else "alpaca",
                               "--input", str(source), "--dataset", f"c{i}", "--dataset-dir", str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(WORKERS)]
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * WORKERS, outs
    assert sorted(read_dataset_info(tmp_path)) == [f"c{i}" for i in range(WORKERS)]


def test_foreign_entry_needs_force(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    theirs = tmp_path / "data/chat.json"
    theirs.write_text('[{"conversations": []}]')
    register_dataset(tmp_path, "chat", "data/chat.json", {"formatting": "sharegpt"})
    source = str(_records(tmp_path / "raw.jsonl"))
    with pytest.raises(QalignError, match=r"dataset_info.json: dataset 'chat' is already registered and was not "
                                          r"written by qalign .*--force"):
        convert_alpaca(ConvertJob(source, "chat", dataset_dir=tmp_path))
    assert theirs.read_text() == '[{"conversations": []}]'  # untouched
    assert read_dataset_info(tmp_path)["chat"]["formatting"] == "sharegpt"
    convert_alpaca(ConvertJob(source, "chat", dataset_dir=tmp_path, force=True))
    assert read_dataset_info(tmp_path)["chat"]["qalign"]["kind"] == "sft"


def test_other_kind_needs_force_and_same_kind_replaces(tmp_path: Path) -> None:
    source = str(_records(tmp_path / "raw.jsonl"))
    convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path))
    before = (tmp_path / "data/dev.json").read_text()
    with pytest.raises(QalignError, match="dataset 'dev' has kind eval; writing kind sft"):
        convert_alpaca(ConvertJob(source, "dev", dataset_dir=tmp_path))
    assert (tmp_path / "data/dev.json").read_text() == before
    convert_eval(ConvertJob(source, "dev", dataset_dir=tmp_path, top_k=1))  # same kind: a re-run replaces it
    assert read_dataset_info(tmp_path)["dev"]["qalign"]["top_k"] == 1


def test_another_entrys_file_is_not_overwritten(tmp_path: Path) -> None:
    register_dataset(tmp_path, "old", "data/new.json", {"formatting": "alpaca"})
    with pytest.raises(QalignError, match="data/new.json is the file of dataset 'old'"):
        convert_alpaca(ConvertJob(str(_records(tmp_path / "raw.jsonl")), "new", dataset_dir=tmp_path))


def test_cli_checks_before_reading_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The CLI knows the kind from the format: a refused name fails before the (here: missing) input is read."""
    from qalign.cli import main

    source = str(_records(tmp_path / "raw.jsonl"))
    assert main(["convert", "eval", "--input", source, "--dataset", "x", "--dataset-dir", str(tmp_path)]) == 0
    rc = main(["convert", "alpaca", "--input", str(tmp_path / "missing.jsonl"), "--dataset", "x",
               "--dataset-dir", str(tmp_path)])
    assert rc == 2 and "has kind eval" in capsys.readouterr().err
    assert main(["convert", "alpaca", "--input", source, "--dataset", "x", "--dataset-dir", str(tmp_path),
                 "--force"]) == 0


def test_malformed_registry_leaves_data_file_alone(tmp_path: Path) -> None:
    source = str(_records(tmp_path / "raw.jsonl"))
    convert_alpaca(ConvertJob(source, "x", dataset_dir=tmp_path))
    before = (tmp_path / "data/x.json").read_bytes()
    (tmp_path / "dataset_info.json").write_text('{"x": ')
    other = str(_records(tmp_path / "other.jsonl", prefix="other"))
    with pytest.raises(QalignError, match=r"dataset_info.json:1: malformed JSON"):
        convert_alpaca(ConvertJob(other, "x", dataset_dir=tmp_path))
    # the write-time check holds too, when the registry breaks after the early check
    with pytest.raises(QalignError, match="malformed JSON"):
        registry.write_dataset(tmp_path, "x", [{"question": "z"}], {"qalign": {"kind": "sft"}},
                               registry.LoadStats(source=other))
    assert (tmp_path / "data/x.json").read_bytes() == before


def test_lock_timeout_is_an_error(tmp_path: Path) -> None:
    from filelock import FileLock

    with FileLock(str(tmp_path / registry.LOCK_FILE)):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()

        def try_lock() -> None:
            try:
                with registry.registry_lock(tmp_path, timeout=0.2):
                    queue.put("got it")
            except QalignError as exc:
                queue.put(str(exc))

        proc = ctx.Process(target=try_lock)
        proc.start()
        proc.join(30)
        assert "another qalign process has held the registry lock" in queue.get(timeout=5)


def test_overlap_check_reads_sidecars_not_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 16: the overlap warning reads each registered dataset's question hashes, not the whole dataset."""
    from qalign.converters import overlap

    train = _records(tmp_path / "train.jsonl", n=2000, prefix="shared question")
    convert_alpaca(ConvertJob(str(train), "tr", dataset_dir=tmp_path))
    assert (tmp_path / "data/tr.json.qkeys").is_file()

    def no_full_read(path):
        raise AssertionError(f"read {path} in full")

    monkeypatch.setattr(overlap, "iter_json_records", no_full_read)
    dev = _records(tmp_path / "dev.jsonl", n=5, prefix="Shared question")
    result = convert_eval(ConvertJob(str(dev), "dv", dataset_dir=tmp_path))
    assert result.overlaps == {"tr": [f"shared question {i}" for i in range(5)]}
    monkeypatch.undo()

    # a data file changed behind qalign's back: the stale sidecar is ignored, the file read and the sidecar renewed
    rows = json.loads((tmp_path / "data/tr.json").read_text())
    (tmp_path / "data/tr.json").write_text(json.dumps(rows[:1]))
    assert registry.overlapping_questions(tmp_path, ["shared question 0", "shared question 1"], "eval") == {
        "tr": ["shared question 0"]}
    assert len((tmp_path / "data/tr.json.qkeys").read_text().split("\n")) == 3  # header, 1 hash, trailing newline
