"""Issue 23 items 7-8: CLI messages that said the wrong thing, and mistyped paths taken for Hub ids.

- `qalign study FILE --dry-run key=value` (the order of study.yaml's own header) parses;
- `qalign train` without a recipe, or in `--flag` form, says what to pass (no LLaMA-Factory traceback);
- key and type errors of `qalign train` arrive before the heavy imports (the field table is cached);
- `qalign api key=value` is told what `qalign api` takes; a duplicate id's reason fits training sets too;
- offline (HF_*_OFFLINE, or no connection to the Hub), a path that does not exist fails at once, naming it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qalign.cli import build_parser, main, parse_args
from qalign.errors import QalignError
from qalign.lf.recipe_checks import accepts, check_recipe_argv, check_train_keys, type_name
from qalign.records import load_records
from qalign.study.validate import check_study
from tests.test_study_validate import STUDY, _study

REPO = Path(__file__).resolve().parents[1]
SFT = str(REPO / "recipes/smollm2-135m/sft.yaml")
DEAD_HUB = "http://127.0.0.1:9"  # nothing listens there: "no network", whatever this machine has


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _qalign(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "qalign.cli", *args], cwd=cwd, capture_output=True, text=True,
                         env=_env(**env), timeout=300)
    return out, time.perf_counter() - start


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """No offline variable set, and the Hub endpoint refuses connections: offline by the probe alone."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", DEAD_HUB)


# ---- item 7 -------------------------------------------------------------------------------------------------------

def test_study_takes_assignments_after_options(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse_args(build_parser(), ["study", "s.yaml", "top_k=1", "--dry-run", "top_k=3", "--jobs", "2", "x=y"])
    assert (args.study, args.assignments, args.dry_run, args.jobs) == ("s.yaml", ["top_k=1", "top_k=3", "x=y"], True, 2)
    monkeypatch.chdir(tmp_path)
    rc = main(["study", str(STUDY), "--dry-run", "test=missing.jsonl"])  # the header's order
    assert rc == 2 and "test: missing.jsonl is not a file" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "qalign: error: train needs a recipe: qalign train RECIPE.yaml [key=value ...]"),
    (["--stage", "sft"], "qalign: error: train takes a recipe file first, then key=value overrides, not --flags "
                         "(got --stage)"),
])
def test_train_without_a_recipe_says_what_to_pass(args: list[str], message: str, tmp_path: Path) -> None:
    out, seconds = _qalign(["train", *args], tmp_path)
    assert out.returncode == 2 and out.stderr.startswith(message), out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "recipes/smollm2-135m/sft.yaml max_steps=20" in out.stderr
    assert seconds < 3, f"{seconds:.1f} s"


def test_train_type_and_key_errors_come_before_the_imports(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    warm, _ = _qalign(["train", SFT, "max_steps=abc", f"model_name_or_path={tmp_path}"], tmp_path,
                      XDG_CACHE_HOME=str(cache))  # the first run reads LLaMA-Factory's classes and caches the table
    assert warm.returncode == 2 and "max_steps='abc' is not of type int" in warm.stderr, warm.stderr[-2000:]
    assert len(list((cache / "qalign").glob("train-fields-*.json"))) == 1
    for override, message in (("max_steps=abc", "max_steps='abc' is not of type int"),
                              ("max_stpes=5", "unknown key 'max_stpes' (did you mean 'max_steps'?)"),
                              ("finetuning_type=lorra", "finetuning_type='lorra' is not of type Literal"),
                              ("stage=grpo num_generations=abc", "num_generations='abc' is not of type int")):
        code = ("import sys; from qalign.cli import main; rc = main(sys.argv[1:]); "
                "print(rc, sorted(m for m in ('torch', 'transformers', 'llamafactory', 'trl') if m in sys.modules))")
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, "train", SFT, *override.split(),
                              f"model_name_or_path={tmp_path}"], cwd=tmp_path, capture_output=True, text=True,
                             env=_env(XDG_CACHE_HOME=str(cache)), timeout=300)
        seconds = time.perf_counter() - start
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert out.stdout.strip() == "2 []", out.stdout  # nothing heavy imported
        assert seconds < 3, f"{override}: {seconds:.1f} s"


def test_cached_field_table_reads_back_the_same_types() -> None:
    from qalign.lf.train_fields import decode, encode, live_fields

    probes = [None, True, "true", 3, 2.5, "abc", [1], {"a": 1}, "sft", "grpo", "lora", "steps", "cosine", "adamw_torch"]
    for table in live_fields():
        for key, tp in table.items():
            back = decode(json.loads(json.dumps(encode(tp))))
            assert type_name(back) == type_name(tp), key
            assert [accepts(back, v) for v in probes] == [accepts(tp, v) for v in probes], key


def test_api_hint_names_what_api_takes() -> None:
    with pytest.raises(QalignError) as err:
        check_recipe_argv(["model_name_or_path=x"], command="api")
    assert "`qalign api` takes a .yaml file first" in str(err.value) and "qalign train" not in str(err.value)
    assert "qalign api --model_name_or_path models/smollm2-135m-instruct --template smollm2" in str(err.value)


def test_duplicate_id_reason_fits_a_training_set(tmp_path: Path) -> None:
    raw = tmp_path / "train.jsonl"
    raw.write_text('{"id": "7", "question": "q one", "answers": ["a"]}\n{"id": "7", "question": "q two", '
                   '"answers": ["b"]}\n')
    out, _ = _qalign(["convert", "alpaca", "--input", str(raw), "--dataset", "t"], tmp_path)
    assert out.returncode == 2 and "id '7' was already used at" in out.stderr, out.stderr[-2000:]
    assert "join predictions to gold" not in out.stderr and "names one question in the converted set" in out.stderr


# ---- item 8 -------------------------------------------------------------------------------------------------------

MISSING = "it is neither a local file or folder nor, offline ({why}), reachable as a Hugging Face Hub id"


def test_convert_input_mistyped_folder_fails_at_once(tmp_path: Path, no_hub: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(QalignError, match=re.escape("--input: nqdata/nq-dev does not exist: "
                                                    + MISSING.format(why="no connection to 127.0.0.1:9"))):
        load_records("nqdata/nq-dev")
    assert time.perf_counter() - start < 3
    out, seconds = _qalign(["convert", "alpaca", "--input", "nqdata/nq-dev", "--dataset", "t"], tmp_path,
                           HF_ENDPOINT=DEAD_HUB)
    assert out.returncode == 2 and "nqdata/nq-dev does not exist" in out.stderr and seconds < 3, out.stderr[-2000:]
    out, seconds = _qalign(["convert", "alpaca", "--input", "nqdata/nq-dev", "--dataset", "t"], tmp_path,
                           HF_DATASETS_OFFLINE="1")
    assert MISSING.format(why="HF_DATASETS_OFFLINE is set") in out.stderr and seconds < 3, out.stderr[-2000:]


@pytest.mark.parametrize("assignment, message", [
    ("model=nope/nope", "model: nope/nope does not exist: " + MISSING.format(why="HF_HUB_OFFLINE is set")),
    ("train=nqdata/train", "train: nqdata/train does not exist: " + MISSING.format(why="HF_HUB_OFFLINE is set")),
    ("test=nqdata/dev", "test: nqdata/dev does not exist"),
])
def test_study_refuses_missing_paths_offline(assignment: str, message: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(QalignError, match=re.escape(message)):
        check_study(_study(tmp_path, assignment))


def test_study_keeps_hub_ids_online_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub/models--HuggingFaceTB--SmolLM2-135M-Instruct").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    check_study(_study(tmp_path / "a", "model=HuggingFaceTB/SmolLM2-135M-Instruct"))  # offline, downloaded before
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("qalign.hub._hub_answers", lambda endpoint: True)  # online: left to the libraries
    check_study(_study(tmp_path / "b", "model=owner/not-downloaded", "train=owner/some-dataset"))


def test_train_model_offline(tmp_path: Path, no_hub: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "dataset_info.json").write_text('{"nq_train": {"file_name": "data/nq_train.json"}}')
    _, config = check_recipe_argv([SFT, "model_name_or_path=nope/nope", f"dataset_dir={tmp_path}"])
    with pytest.raises(QalignError, match=re.escape("model_name_or_path: nope/nope does not exist: "
                                                    + MISSING.format(why="no connection to 127.0.0.1:9"))):
        check_train_keys(config, SFT)
    (tmp_path / "hub/models--nope--nope").mkdir(parents=True)
    check_train_keys(config, SFT)  # in the Hub cache: loads offline
