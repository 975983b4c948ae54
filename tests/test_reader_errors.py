"""Issue 15 items 6, 7, 13, 15: every decode failure of the records reader is a `file:line` error with a fix;
output-side failures are errors, not tracebacks; killed writers' temp files are cleaned."""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

import pytest

from qalign.cli import main
from qalign.errors import QalignError
from qalign.io import atomic_write_text, clean_stale_temps, iter_json_records

GOOD = {"question": "who wrote hamlet", "answers": ["Shakespeare"]}
LINE = json.dumps(GOOD)


def _gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


def _records(path: Path) -> list[dict]:
    return [obj for _, obj in iter_json_records(path)]


def _corrupt_gzip(tmp_path: Path) -> Path:
    data = bytearray(gzip.compress(("\n".join([LINE] * 2000) + "\n").encode()))
    data[10:18] = b"\xff" * 8  # right after the gzip header: an invalid deflate block
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(bytes(data))
    return path


def _truncated_gzip(tmp_path: Path) -> Path:
    data = gzip.compress(("\n".join([LINE] * 2000) + "\n").encode())
    path = tmp_path / "truncated.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _file(name: str, content: str | bytes):
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    return make


def _folder(folder: Path) -> Path:
    (folder / "dir.jsonl").mkdir()
    return folder / "dir.jsonl"


DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "9" * 5000
BAD_INPUTS = {
    "corrupt gzip": (_corrupt_gzip, r"corrupt\.jsonl\.gz:1: cannot read: corrupt compressed data .*gzip -t"),
    "truncated gzip": (_truncated_gzip, r"truncated\.jsonl\.gz:\d+: cannot read: the compressed data ends early"),
    "not gzip but .gz": (_file("plain.jsonl.gz", LINE), r"plain\.jsonl\.gz:1: cannot read: corrupt compressed data"),
    "gzip named .jsonl": (_file("packed.jsonl", gzip.compress(LINE.encode())),
                          r"packed\.jsonl:1: not valid UTF-8 .*name it \.gz"),
    "deep jsonl": (_file("deep.jsonl", f"{LINE}\n{DEEP}\n"), r"deep\.jsonl:2: JSON nested too deeply"),
    "deep json": (_file("deep.json", f"[\n{LINE},\n{DEEP}]"), r"deep\.json:3: JSON nested too deeply"),
    "huge int jsonl": (_file("int.jsonl", f'{LINE}\n{{"question": "q", "answers": [{HUGE}]}}'),
                       r"int\.jsonl:2: an integer with more than 4300 digits"),
    "huge int json": (_file("int.json", f'[\n{LINE},\n{{"answers": [{HUGE}]}}]'),
                      r"int\.json:3: an integer with more than 4300 digits"),
    "lone surrogate jsonl": (_file("sur.jsonl", LINE + '\n{"question": "a\\ud800b", "answers": ["x"]}'),
                             r"sur\.jsonl:2: a lone UTF-16 surrogate"),
    "lone surrogate json": (_file("sur.json", f'[{LINE}, {{"question": "q", "answers": ["\\udfff"]}}]'),
                            r"sur\.json:2: a lone UTF-16 surrogate"),
    "latin1": (_file("l1.jsonl", LINE.encode() + b'\n{"question": "caf\xe9"}\n'),
               r"l1\.jsonl:2: not valid UTF-8 \(byte 0xe9\).*iconv"),
    "latin1 json": (_file("l1.json", f"[{LINE},\n{LINE},\n".encode() + b'{"question": "caf\xe9"}]'),
                    r"l1\.json:3: not valid UTF-8 \(byte 0xe9\)"),
    "folder": (_folder, r"dir\.jsonl: is a folder"),
    "unterminated": (_file("u.jsonl", '{"question": "abc'),
                     r"u\.jsonl:1: malformed JSON \(Unterminated string starting at, column 14\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_decode_failures_name_file_line_and_fix(case: str, tmp_path: Path) -> None:
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(QalignError, match=message):
        _records(path)


@pytest.mark.parametrize("case", ["corrupt gzip", "deep jsonl", "huge int json", "lone surrogate jsonl"])
def test_cli_prints_error_not_traceback(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = BAD_INPUTS[case][0](tmp_path)
    for fmt in ("alpaca", "eval"):
        rc = main(["convert", fmt, "--input", str(path), "--dataset", "d", "--dataset-dir", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith(f"qalign: error: {path}:") and "Traceback" not in err
    assert not (tmp_path / "out/data/d.json").exists()


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    bom = "\ufeff"
    (tmp_path / "a.jsonl").write_text(bom + LINE + "\n", encoding="utf-8")
    (tmp_path / "a.json").write_text(bom + f"[{LINE}]", encoding="utf-8")
    _gz(tmp_path / "a.jsonl.gz", bom + LINE)
    for name in ("a.jsonl", "a.json", "a.jsonl.gz"):
        assert _records(tmp_path / name) == [GOOD]


def test_unwritable_outputs_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(LINE + "\n")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    cases = [
        (["convert", "alpaca", "--input", str(source), "--dataset", "d", "--dataset-dir", str(blocker)],
         "--dataset-dir is a file"),
        (["convert", "alpaca", "--input", str(source), "--dataset", "d", "--dataset-dir", str(blocker / "sub")],
         "is a file, not a folder"),
        (["convert", "alpaca", "--input", str(source), "--dataset", "d", "--dataset-dir", "/proc/qalign"],
         "cannot write there"),
        (["convert", "alpaca", "--input", str(tmp_path / "missing.jsonl"), "--dataset", "n" * 250],
         "is 250 characters long; use at most 200"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    with pytest.raises(QalignError, match="is a folder; pass a file name"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(QalignError, match="afile is a file, not a folder"):
        atomic_write_text(blocker / "x.json", "x")


def test_eval_and_report_output_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "1", **GOOD}) + "\n")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "1", "prediction": "Shakespeare"}) + "\n")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["eval", "--predictions", str(preds), "--gold", str(gold), "--output", str(blocker)]) == 2
    assert "afile: --output is a file; pass a folder" in capsys.readouterr().err
    assert main(["eval", "--predictions", str(preds), "--gold", str(gold), "--output", str(tmp_path / "run")]) == 0
    assert main(["report", "--run", f"a={tmp_path / 'run'}", "--output", str(tmp_path)]) == 2
    assert "is a folder; pass a file name" in capsys.readouterr().err


def test_killed_writers_temp_files_are_cleaned(tmp_path: Path) -> None:
    import subprocess

    from qalign.io import _host_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _host_tag()
    other = "0000" if host != "0000" else "ffff"
    stale = tmp_path / f".big.json.{host}-{dead.pid}.abc123.tmp"  # this host, writer gone: removed
    alive = tmp_path / f".big.json.{host}-{os.getppid()}.ghi789.tmp"  # a live writer's: kept
    remote = tmp_path / f".big.json.{other}-{dead.pid}.jkl012.tmp"  # another host's, young: kept
    remote_old = tmp_path / f".big.json.{other}-{dead.pid}.mno345.tmp"  # another host's, two days old: removed
    foreign = tmp_path / ".someone-elses.tmp"  # not ours: kept
    for path in (stale, alive, remote, remote_old, foreign):
        path.write_text("x" * 1000)
    old = time.time() - 2 * 86400
    os.utime(remote_old, (old, old))
    atomic_write_text(tmp_path / "big.json", "[]")  # the next write into the folder cleans up
    assert not stale.exists() and not remote_old.exists()
    assert alive.exists() and remote.exists() and foreign.exists()
    assert clean_stale_temps(tmp_path) == []


def test_sigkilled_convert_leaves_a_temp_file_the_next_run_removes(tmp_path: Path) -> None:
    """A convert killed while writing its data file leaves `.NAME.json.*.tmp`; the next convert removes it."""
    import signal
    import subprocess

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"question": f"q {i}", "answers": ["a"]}) + "\n" for i in range(20)))
    code = ("import os, signal, qalign.io as io\n"
            "real = io.atomic_write_text\n"
            "def killed(path, text):\n"
            "    with io.atomic_target(path) as tmp:\n"
            "        tmp.write_text(text[: len(text) // 2])\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "io.atomic_write_text = killed\n"
            "from qalign.cli import main\n"
            f"main(['convert', 'alpaca', '--input', {str(source)!r}, '--dataset', 'd', '--dataset-dir', "
            f"{str(tmp_path)!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == -signal.SIGKILL
    left = list((tmp_path / "data").glob(".d.json.*.tmp"))
    assert len(left) == 1 and not (tmp_path / "data/d.json").exists()
    assert main(["convert", "alpaca", "--input", str(source), "--dataset", "d", "--dataset-dir", str(tmp_path)]) == 0
    assert not list(tmp_path.rglob("*.tmp")) and len(json.loads((tmp_path / "data/d.json").read_text())) == 20


def test_broken_summary_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "summary.json").write_bytes(b'{"n": "caf\xe9"}')
    assert main(["report", "--run", f"a={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "summary.json: cannot read (UnicodeDecodeError)" in err and "Traceback" not in err
