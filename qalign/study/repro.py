"""The report's reproducibility section: package versions, device, recipe files with their sha1, seeds, commands."""

from __future__ import annotations

import hashlib
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from qalign.study.config import RECIPE_FILE, StudyConfig
from qalign.study.plan import Step
from qalign.study.runner import StepResult, command_line

PACKAGES = ("qalign", "llamafactory", "transformers", "trl", "peft", "datasets", "accelerate", "torch",
            "tokenizers", "autoawq", "numpy", "matplotlib")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """{package: installed version or 'not installed'}."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_line() -> str:
    """Python, OS and (when torch sees one) the GPU the report was written on."""
    line = f"Python {platform.python_version()} on {platform.platform()}"
    if "torch" in sys.modules or _importable("torch"):
        try:
            import torch

            if torch.cuda.is_available():
                line += f"; GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
            else:
                line += "; no GPU visible to torch"
        except Exception:  # noqa: BLE001 (a broken CUDA setup must not stop the report)
            pass
    return line


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def used_files(cfg: StudyConfig) -> list[Path]:
    """The study file, the recipes the study uses (those that exist) and the prompt templates."""
    from qalign.converters.prompts import resolve_prompt
    from qalign.errors import QalignError

    files = [cfg.source] if cfg.source else []
    methods = [m for m in cfg.row_methods if m != "cot" or cfg.runs_cot]
    for name in dict.fromkeys(RECIPE_FILE[m] for m in ("predict", *methods)):
        files.append(cfg.recipes / name)
    for prompt in dict.fromkeys([cfg.prompt, *([cfg.cot_prompt] if cfg.runs_cot else [])]):
        try:
            files.append(resolve_prompt(prompt))
        except QalignError:
            pass
    return [path for path in files if path and path.is_file()]


def reproducibility(cfg: StudyConfig, steps: list[Step], results: dict[str, StepResult], argv: list[str]) -> str:
    """The markdown section: command, seeds, versions, device, files with sha1, the resolved study, every step."""
    import yaml

    from qalign.generate.sampling import SamplingConfig

    mining_seed = cfg.mining_args.get("seed", SamplingConfig.seed)
    lines = ["## Reproducibility", "", f"Command: `qalign study {shlex.join(argv)}`", "",
             f"Seeds: training {', '.join(map(str, cfg.seeds))}; bootstrap seed {cfg.bootstrap_seed} "
             f"({cfg.bootstrap_samples} resamples, numpy default_rng); preference/KTO sampling seed {mining_seed}; "
             "predictions are greedy.", "", f"Device: {device_line()}", "",
             "| package | version |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in package_versions().items()]
    lines += ["", "| file | sha1 |", "|---|---|"]
    lines += [f"| {path} | `{sha1(path)}` |" for path in used_files(cfg)]
    resolved = dict(cfg.raw, seeds=cfg.seeds, methods=cfg.methods, output=str(cfg.output), recipes=str(cfg.recipes))
    first = ("name", "model", "template", "recipes", "train", "test")
    resolved = {**{k: resolved[k] for k in first if k in resolved}, **resolved}
    lines += ["", "Resolved study (after command-line overrides):", "", "```yaml",
              yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).rstrip(), "```", "",
              "<details><summary>Every step and its command</summary>", "", "| # | step | state | command |",
              "|---:|---|---|---|"]
    for index, step in enumerate(steps, start=1):
        result = results.get(step.name)
        state = result.state if result else "—"
        if result and result.seconds:
            state += f" ({result.seconds:.0f} s)"
        cells = [str(index), step.name, state, f"`{command_line(step)}`"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)
