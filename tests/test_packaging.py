"""The package stands alone: a built wheel converts with a bundled prompt from outside the repository, and its
start-up hook makes the real `llamafactory-cli` see the GRPO stage (opt-out: QALIGN_NO_AUTOREGISTER=1)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qalign.lf.autoregister import PTH_FILE
from tests.conftest import REPO
from tests.test_grpo import RECIPE, _tiny, _write_dataset

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", PTH_FILE, "qalign")
# the folder holding the pinned stack, and the real console script (run below by another interpreter)
STACK = Path(importlib.util.find_spec("llamafactory").origin).parents[1]  # its .pth files stay unread
LLAMAFACTORY_CLI = next((p for p in (Path(sys.executable).parent / "llamafactory-cli",
                                     STACK.parents[2] / "bin" / "llamafactory-cli",  # <venv>/lib/pythonX.Y/site-...
                                     Path(shutil.which("llamafactory-cli") or "/nonexistent")) if p.is_file()), None)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QALIGN_NO_AUTOREGISTER")}
    return {**env, **extra}


def _copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dest / name)
    return dest


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd, env=_env())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """qalign's wheel, built from a copy of the sources (no build/ or egg-info left in the repository)."""
    work = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(_copy_sources(work / "src")), cwd=work)
    (built,) = (work / "dist").glob("qalign-*.whl")
    return built


def _venv_on_the_stack(folder: Path) -> Path:
    """A bare venv that sees this venv's packages through a path line (their .pth files, e.g. an editable
    qalign of another checkout, are not run); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=folder, env=_env()).stdout.strip())
    (site / "zz-pinned-stack.pth").write_text(f"{STACK}\n")
    return python


def test_wheel_ships_the_prompts_and_the_startup_hook(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"qalign/prompts/answer_only.txt", "qalign/prompts/closed_book.txt",
            "qalign/prompts/think_then_answer.txt", PTH_FILE, "qalign/lf/autoregister.py"} <= names


def test_installed_wheel_converts_with_a_bundled_prompt_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    _pip("install", "--no-deps", "-q", "--target", str(target), str(wheel), cwd=tmp_path)
    record = {"question": "who wrote hamlet", "answers": ["William Shakespeare", "Shakespeare"],
              "ctxs": [{"title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
                       {"title": "Paris", "text": "Paris is the capital of France."}]}
    (work / "raw.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, "question": "q2"}) + "\n")
    env = _env(PYTHONPATH=str(target))
    where = _run([sys.executable, "-c", "import qalign.converters.prompts as p; print(p.__file__, p.PROMPTS_DIR)"],
                 cwd=work, env=env).stdout.split()
    assert all(Path(path).is_relative_to(target) for path in where), where

    _run([sys.executable, "-m", "qalign.cli", "convert", "alpaca", "--input", "raw.jsonl", "--dataset", "tiny",
          "--top-k", "1", "--prompt", "answer_only"], cwd=work, env=env)
    rows = json.loads((work / "data" / "tiny.json").read_text())
    template = zipfile.ZipFile(wheel).read("qalign/prompts/answer_only.txt").decode().strip()
    passages = "Passage 1 (Hamlet): Hamlet is a tragedy by William Shakespeare."
    assert [row["instruction"] for row in rows] == [
        template.replace("{question}", question).replace("{passages}", passages)
        for question in ("who wrote hamlet", "q2")]
    assert rows[0]["output"] in record["answers"]
    info = json.loads((work / "dataset_info.json").read_text())
    assert info["tiny"]["file_name"] == "data/tiny.json"


_PROBE = """
import sys
hooked = 'qalign.lf.autoregister' in sys.modules
heavy = [m for m in ('qalign.lf.register', 'llamafactory') if m in sys.modules]
from llamafactory.extras.constants import TRAINING_STAGES
from llamafactory.hparams.finetuning_args import FinetuningArguments
from llamafactory.webui import interface
print('PROBE', hooked, heavy, TRAINING_STAGES.get('GRPO'), 'grpo' in str(FinetuningArguments.__annotations__['stage']),
      getattr(interface.create_train_tab, '_qalign', False))
"""


def _probe(python: Path, cwd: Path, env: dict[str, str]) -> list[str]:
    out = _run([str(python), "-c", _PROBE], cwd=cwd, env=env).stdout.splitlines()
    return next(line.split()[1:] for line in out if line.startswith("PROBE "))


@pytest.mark.slow  # a fresh venv, three interpreters, a GRPO run
def test_plain_llamafactory_sees_grpo_after_installing_the_wheel(wheel: Path, tiny_qwen3: Path,
                                                                 tmp_path: Path) -> None:
    python = _venv_on_the_stack(tmp_path / "venv")
    _pip("--python", str(python), "install", "--no-deps", "-q", str(wheel), cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    # start-up: the hook is armed, nothing heavy imported; importing llamafactory applies every patch
    assert _probe(python, work, _env()) == ["True", "[]", "grpo", "True", "True"]
    assert _probe(python, work, _env(QALIGN_NO_AUTOREGISTER="1")) == ["False", "[]", "None", "False", "False"]

    # the real llamafactory-cli script, run by that interpreter, trains `stage: grpo`
    assert LLAMAFACTORY_CLI, "llamafactory-cli is neither beside this python nor on PATH: is the stack installed?"
    _write_dataset(work)
    _run([str(python), str(LLAMAFACTORY_CLI), "train", RECIPE, *_tiny(tiny_qwen3, "out/grpo"), "max_steps=2",
          "num_generations=4", "per_device_train_batch_size=4", "max_completion_length=8"], cwd=work, env=_env())
    log = [json.loads(line) for line in (work / "out/grpo/trainer_log.jsonl").open()]
    assert sum("reward" in row for row in log) == 2
    assert (work / "out/grpo/adapter_model.safetensors").exists()


@pytest.mark.parametrize(("opt_out", "expected"), [("", "True grpo"), ("1", "False None")])
def test_armed_hook_registers_when_llamafactory_is_imported(opt_out: str, expected: str, tmp_path: Path) -> None:
    code = ("import sys, qalign.lf.autoregister as hook; hook.arm(); armed = hook.armed(); "
            "assert 'qalign.lf.register' not in sys.modules; "
            "from llamafactory.extras.constants import TRAINING_STAGES; "
            "assert not hook.armed(); print('PROBE', armed, TRAINING_STAGES.get('GRPO'))")
    out = _run([sys.executable, "-c", code], cwd=tmp_path,
               env=_env(PYTHONPATH=str(REPO), QALIGN_NO_AUTOREGISTER=opt_out)).stdout.splitlines()
    assert next(line for line in out if line.startswith("PROBE ")) == f"PROBE {expected}"


def test_editable_install_places_the_startup_hook(tmp_path: Path) -> None:
    python = _venv_on_the_stack(tmp_path / "venv")
    src = _copy_sources(tmp_path / "src")
    _pip("--python", str(python), "install", "--no-deps", "-q", "-e", str(src), cwd=tmp_path)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=_env()).stdout.strip())
    assert (site / PTH_FILE).read_text() == (REPO / PTH_FILE).read_text()
    probe = "import sys, qalign; print(qalign.__file__, 'qalign.lf.autoregister' in sys.modules)"
    path, armed = _run([str(python), "-c", probe], cwd=tmp_path, env=_env()).stdout.split()
    assert Path(path).is_relative_to(src) and armed == "True"
