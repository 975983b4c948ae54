"""Issue 15 item 8: `qalign train RECIPE key=value` is checked before the heavy imports (recipe, syntax) and before
any model or data is loaded (keys, types, paths, datasets); the shipped recipes pass."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qalign.converters.kto_weights import resolve_auto_weights
from qalign.errors import QalignError
from qalign.lf.recipe_checks import check_recipe_argv, check_train_config

REPO = Path(__file__).resolve().parents[1]
# LLaMA-Factory recipes only: study files (study, study-*, pipeline) and sweep grids (*sweep*) are qalign's own
RECIPES = sorted(p for p in (REPO / "recipes").glob("*/*.yaml")
                 if not (p.stem in ("study", "pipeline") or p.stem.startswith("study-") or "sweep" in p.stem))


@pytest.fixture(autouse=True)
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Qwen/Qwen3-8B-AWQ "downloaded before": offline (the tests run so), a Hub model not in the cache is an error."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub/models--Qwen--Qwen3-8B-AWQ").mkdir(parents=True)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "sft.yaml"
    path.write_text("stage: sft\ndo_train: true\nmodel_name_or_path: Qwen/Qwen3-8B-AWQ\ndataset: nq_train\n"
                    "max_steps: 10\nrun_name: plain\n")
    return path


@pytest.mark.parametrize("argv, message", [
    (["missing.yaml"], "missing.yaml: recipe not found"),
    (["recipes"], "recipes: not a recipe file"),
    (["recipes/smollm2-135m/"], "not a recipe file"),
    (["{recipe}", "x=[1,2"], r"override 'x=\[1,2': the value does not parse"),
    (["{recipe}", "noequals"], "override 'noequals': expected key=value"),
    (["{recipe}", "=3"], "expected key=value"),
])
def test_cheap_checks(argv: list[str], message: str, recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(QalignError, match=message):
        check_recipe_argv([a.format(recipe=recipe) for a in argv])


def test_folder_and_broken_yaml(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(QalignError, match="dir.yaml: is a folder"):
        check_recipe_argv([str(tmp_path / "dir.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: sft\nmax_steps: [1\n")
    with pytest.raises(QalignError, match=r"bad.yaml:\d+: the recipe does not parse"):
        check_recipe_argv([str(bad)])


def test_dataset_dir_defaults_to_top_level_registry(recipe: Path, tmp_path: Path) -> None:
    argv, config = check_recipe_argv([str(recipe)], cwd=tmp_path)
    assert argv[-1] == "dataset_dir=." and config["dataset_dir"] == "."
    (tmp_path / "data").mkdir()
    (tmp_path / "data/dataset_info.json").write_text("{}")
    argv, config = check_recipe_argv([str(recipe)], cwd=tmp_path)  # a LLaMA-Factory layout: left alone
    assert "dataset_dir" not in config and argv == [str(recipe)]


def _registry(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"data/{n}.json", "qalign": {
        "desirable_rows": 3, "undesirable_rows": 6}} for n in names}))  # the counts kto_*_weight: auto reads
    return folder


@pytest.mark.parametrize("override, message", [
    ("max_steps=abc", "max_steps='abc' is not of type int"),
    ("run_name=a: b", r"run_name=\{'a': 'b'\} is not of type .*quote values holding ': '"),
    ("max_stpes=5", "unknown key 'max_stpes' \\(did you mean 'max_steps'\\?\\)"),
    ("finetuning_type=lorra", "finetuning_type='lorra' is not of type Literal"),
    ("do_train=maybe", "do_train='maybe' is not of type bool"),
    ("learning_rate=fast", "learning_rate='fast' is not of type float"),
    ("model_name_or_path=./no/such/model", "model_name_or_path: ./no/such/model does not exist"),
    ("dataset=nq_trian", r"dataset\(s\) nq_trian not registered .*\(registered: nq_train\)"),
    ("num_generations=4", "unknown key 'num_generations'"),  # a GRPO key outside stage: grpo
])
def test_typed_checks(override: str, message: str, recipe: Path, tmp_path: Path) -> None:
    folder = _registry(tmp_path / "reg", "nq_train")
    _, config = check_recipe_argv([str(recipe), f"dataset_dir={folder}", override])
    with pytest.raises(QalignError, match=message):
        check_train_config(config, str(recipe))


def test_valid_overrides_pass(recipe: Path, tmp_path: Path) -> None:
    folder = _registry(tmp_path / "reg", "nq_train", "nq_dev")
    _, config = check_recipe_argv([str(recipe), f"dataset_dir={folder}", "learning_rate=1e-4", "max_steps=20",
                                   'run_name="a: b"', "eval_dataset=nq_dev", "bf16=false", "lora_target=all"])
    check_train_config(config, str(recipe))
    _, config = check_recipe_argv([str(recipe), f"dataset_dir={folder}", "stage=grpo", "num_generations=4",
                                   "reward_funcs=[subem,f1]"])
    check_train_config(config, str(recipe))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_pass(path: Path, tmp_path: Path) -> None:
    _, config = check_recipe_argv([str(path)])
    names = [n.strip() for k in ("dataset", "eval_dataset") for n in str(config.get(k) or "").split(",") if n.strip()]
    folder = _registry(tmp_path / "reg", *names)
    overrides = [f"dataset_dir={folder}", f"model_name_or_path={tmp_path}"]
    if config.get("adapter_name_or_path"):
        overrides.append(f"adapter_name_or_path={tmp_path}")
    argv, config = check_recipe_argv([str(path), *overrides])
    resolve_auto_weights(argv, config)  # as `qalign train` does before LLaMA-Factory's types are checked
    check_train_config(config, str(path))


def test_cli_fails_fast_without_traceback(tmp_path: Path) -> None:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "qalign.cli", "train", "missing.yaml", "max_steps=1"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and out.stderr.startswith("qalign: error: missing.yaml: recipe not found")
    assert "Traceback" not in out.stderr and time.perf_counter() - start < 10


def test_grpo_values_go_through_qalign_grpo_parser(recipe: Path, tmp_path: Path) -> None:
    folder = _registry(tmp_path / "reg", "nq_train")
    _, config = check_recipe_argv([str(recipe), f"dataset_dir={folder}", "stage=grpo", "num_generations=1"])
    with pytest.raises(QalignError, match="num_generations"):
        check_train_config(config, str(recipe))


def test_cli_type_error_comes_before_any_model_load(tmp_path: Path) -> None:
    """`max_steps=abc` used to load the model and the data first; now it fails right after the imports."""
    folder = _registry(tmp_path, "nq_train")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "qalign.cli", "train", str(REPO / "recipes/smollm2-135m/sft.yaml"),
                          "max_steps=abc", f"dataset_dir={folder}", f"model_name_or_path={tmp_path}"],
                         cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "DISABLE_VERSION_CHECK": "1"})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "max_steps='abc' is not of type int" in out.stderr and "Traceback" not in out.stderr
    assert "Loading" not in out.stderr and time.perf_counter() - start < 120


def test_allow_extra_args_is_respected(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _registry(tmp_path / "reg", "nq_train")
    _, config = check_recipe_argv([str(recipe), f"dataset_dir={folder}", "my_key=1"])
    monkeypatch.setenv("ALLOW_EXTRA_ARGS", "1")  # LLaMA-Factory then ignores unknown keys, and so do we
    check_train_config(config, str(recipe))


def test_online_dataset_dir_takes_hub_ids(recipe: Path) -> None:
    _, config = check_recipe_argv([str(recipe), "dataset_dir=ONLINE", "dataset=owner/name"])
    check_train_config(config, str(recipe))
