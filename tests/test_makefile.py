"""The Makefile: `make help` lists every target and `?=` variable, and the step targets take their sizes from the
study file (explicit variables go over it), checked with `make -n` (a dry run)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from qalign.study.config import load_study
from tests.conftest import REPO

MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _make(*args: str) -> str:
    """`make ARGS` in the repo, its python = this interpreter (VENV=sys.prefix) importing this checkout's qalign."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(["make", "--no-print-directory", f"VENV={sys.prefix}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"make {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def _targets() -> list[str]:
    """Every rule's target names (`dpo orpo kto:` gives three), in file order."""
    rules = re.findall(r"^([a-z][a-z0-9 _-]*):(?!=)", MAKEFILE, re.MULTILINE)
    return [name for rule in rules for name in rule.split()]


def _variables() -> dict[str, str]:
    """Every `NAME ?= default` of the Makefile."""
    return {name: value.strip() for name, value in re.findall(r"^([A-Z_][A-Z0-9_]*)\s*\?=(.*)$", MAKEFILE,
                                                               re.MULTILINE)}


def test_make_help_lists_every_target_and_variable_with_its_default() -> None:
    text = _make("help")
    targets_part, variables_part = text.split("\nvariables", 1)
    listed = {name for line in targets_part.splitlines()[2:]
              for name in line.split("  ", 2)[1].split() if line.startswith("  ")}
    missing_targets = [target for target in _targets() if target not in listed]
    assert not missing_targets, f"`make help` does not list target(s) {missing_targets}: end their rule line with " \
                                f"`## what it does`"
    described = dict(re.findall(r"^  ([A-Z_][A-Z0-9_]*) \?= (.*?)\s+# \S", variables_part, re.MULTILINE))
    missing = [name for name in _variables() if name not in described]
    assert not missing, f"`make help` does not list variable(s) {missing}: put a `## what it does` line right " \
                        f"above each"
    wrong = {name: (described[name], value) for name, value in _variables().items() if described[name] != value}
    assert not wrong, f"`make help` shows other defaults than the Makefile's: {wrong}"
    phony = set(re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.MULTILINE).group(1).split())
    assert phony == set(_targets()), f".PHONY and the rules differ: {phony ^ set(_targets())}"


def _command(output: str, word: str) -> list[str]:
    """The dry run's one command line containing `word` (continuation lines joined)."""
    lines = [shlex.split(line) for line in output.replace("\\\n", " ").splitlines() if word in line]
    assert len(lines) == 1, f"expected one line with {word!r} in:\n{output}"
    return lines[0]


def _keys(argv: list[str]) -> dict[str, str]:
    pairs = [arg.split("=", 1) for arg in argv if "=" in arg and not arg.startswith("-")]
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key is passed twice: {argv}"
    return dict(pairs)


def test_step_targets_take_their_sizes_from_the_study_file() -> None:
    study = load_study(REPO / "recipes" / "smollm2-135m" / "study.yaml", [])
    grpo = _keys(_command(_make("-n", "grpo"), " train "))
    assert grpo["max_steps"] == str(study.overrides["grpo"]["max_steps"])
    assert grpo["per_device_train_batch_size"] == str(study.overrides["grpo"]["per_device_train_batch_size"])
    assert grpo["template"] == study.template and grpo["dataset"] == "nq_grpo"  # grpo.yaml's dataset
    sft = _keys(_command(_make("-n", "sft"), " train "))
    assert sft["max_steps"] == str(study.overrides["sft"]["max_steps"]) and "per_device_train_batch_size" not in sft
    mining = _command(_make("-n", "pref-data"), "convert preference")
    assert mining[mining.index("--num-samples") + 1] == str(study.mining_args["num_samples"])
    assert mining[mining.index("--top-k") + 1] == str(study.top_k) and "--limit" not in mining  # train_limit: null


def test_variables_set_on_the_command_line_go_over_the_study_file() -> None:
    grpo = _keys(_command(_make("-n", "grpo", "MAX_STEPS=3", "BATCH=2", "TRAIN_ARGS=bf16=true"), " train "))
    assert (grpo["max_steps"], grpo["per_device_train_batch_size"], grpo["bf16"]) == ("3", "2", "true")
    pipeline = load_study(REPO / "recipes" / "smollm2-135m" / "pipeline.yaml", [])
    smoke = _keys(_command(_make("-n", "grpo", "STUDY=recipes/smollm2-135m/pipeline.yaml"), " train "))
    assert smoke["num_generations"] == str(pipeline.overrides["grpo"]["num_generations"])
    data = _make("-n", "data", "NQ=other.train.jsonl", "TRAIN_LIMIT=7", "TOP_K=2")
    alpaca, test = _command(data, "convert alpaca"), _command(data, "convert eval")
    assert alpaca[alpaca.index("--input") + 1] == "other.train.jsonl" and "7" in alpaca and "2" in alpaca
    assert test[test.index("--input") + 1] == "other.dev.jsonl"  # NQ_DEV: "train" -> "dev"
