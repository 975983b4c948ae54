"""Everything a study run needs, checked before its first step (and by `--dry-run`): input files, model and
recipe folders, prompts, the teacher file, and every LLaMA-Factory key of train_args / predict_args / overrides
(known key, right type) and of mining_args. A real run then cannot mine and train for hours and fail at scoring."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_type_hints

from qalign.errors import QalignError
from qalign.study.config import StudyConfig


def _path_problems(cfg: StudyConfig) -> list[str]:
    from qalign.hub import check_local_or_hub
    from qalign.lf.recipe_checks import looks_local
    from qalign.records import looks_like_hf_id

    problems = []
    for key in ("train",) if cfg.val_limit else ("train", "test"):  # val_limit: scored on the train file
        value = cfg.retrieve[key] if cfg.retrieve else getattr(cfg, key)  # retrieved: the raw questions must exist
        if not Path(value).is_file() and not looks_like_hf_id(value):
            problems.append(f"{key}: {value} is not a file (nor a Hub id owner/name)")
        elif not Path(value).is_file():  # owner/name-shaped: offline, only a cached Hub dataset can be read
            try:
                check_local_or_hub(key, value, "dataset", "fix the path to the raw QA file")
            except QalignError as exc:
                problems.append(str(exc))
    if cfg.retrieve and not Path(cfg.retrieve["corpus"]).is_file():
        problems.append(f"retrieve.corpus: {cfg.retrieve['corpus']} is not a file (.jsonl(.gz) or .tsv(.gz) passages)")
    if looks_local(cfg.model) and not Path(cfg.model).exists():
        problems.append(f"model: {cfg.model} does not exist (build it with `qalign model` or fix the path)")
    else:
        try:
            check_local_or_hub("model", cfg.model, "model", "build it with `qalign model` or fix the path")
        except QalignError as exc:
            problems.append(str(exc))
    if not cfg.recipes.is_dir():
        problems.append(f"recipes: {cfg.recipes} is not a folder of recipes (e.g. recipes/smollm2-135m)")
    if cfg.runs_cot and cfg.teacher_kind == "file" and not Path(str(cfg.cot_teacher)).is_file():
        problems.append(f"cot_teacher: {cfg.cot_teacher} is not a file")
    return problems


def _prompt_problems(cfg: StudyConfig) -> list[str]:
    from qalign.converters.prompts import load_prompt

    problems = []
    for key in ("prompt", "cot_prompt"):
        try:
            load_prompt(getattr(cfg, key))
        except QalignError as exc:
            problems.append(f"{key}: {exc}")
    return problems


def _key_problems(where: str, values: dict[str, Any], fields: dict[str, Any]) -> list[str]:
    from qalign.converters.kto_weights import WEIGHT_KEYS
    from qalign.lf.recipe_checks import accepts, type_name

    problems = []
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            problems.append(f"{where}.{key}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif not accepts(fields[key], value) and not (key in WEIGHT_KEYS and value == "auto"):  # resolved at train
            problems.append(f"{where}.{key}={value!r} is not of type {type_name(fields[key])}")
    return problems


def _llamafactory_problems(cfg: StudyConfig) -> list[str]:
    from qalign.lf.train_fields import train_fields

    fields, grpo_only = train_fields()  # cached per stack: no LLaMA-Factory import once a train has run
    grpo = {**fields, **grpo_only}
    problems = _key_problems("train_args", cfg.train_args, fields)
    from qalign.generate.predict import ENGINE_FIELDS

    predict_fields = {**fields, **ENGINE_FIELDS}  # predict steps run `qalign predict`, which adds the engine keys
    problems += _key_problems("predict_args", cfg.predict_args, predict_fields)
    for method, values in cfg.overrides.items():
        predict = values.get("predict")
        if predict is not None and not isinstance(predict, dict):
            problems.append(f"overrides.{method}.predict must be a mapping, e.g. predict: {{max_new_tokens: 64}}")
        elif predict:
            problems += _key_problems(f"overrides.{method}.predict", predict, predict_fields)
        train = {k: v for k, v in values.items() if k != "predict"}
        problems += _key_problems(f"overrides.{method}", train, grpo if method == "grpo" else fields)
    return problems


def _mining_problems(cfg: StudyConfig) -> list[str]:
    from qalign.generate.sampling import SamplingConfig
    from qalign.lf.recipe_checks import accepts
    from qalign.study.plan import _MINING_KEYS, TEACH_KEYS

    hints = get_type_hints(SamplingConfig)
    problems = []
    for key, value in cfg.mining_args.items():
        if key not in _MINING_KEYS:
            close = difflib.get_close_matches(key, _MINING_KEYS, n=1)
            problems.append(f"mining_args.{key}: unknown key (known: {', '.join(_MINING_KEYS)})"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
        elif key in hints and not accepts(hints[key], value):
            problems.append(f"mining_args.{key}={value!r} is not of type {hints[key].__name__}")
    for key in cfg.teach_args:
        if key not in TEACH_KEYS:
            close = difflib.get_close_matches(key, TEACH_KEYS, n=1)
            problems.append(f"teach_args.{key}: unknown key (known: {', '.join(TEACH_KEYS)})"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
    return problems


def check_study(cfg: StudyConfig) -> None:
    """Raise one QalignError listing every problem a run of `cfg` would meet, each with its key and fix."""
    problems = _path_problems(cfg) + _prompt_problems(cfg) + _mining_problems(cfg) + _llamafactory_problems(cfg)
    if problems:
        where = cfg.source or "study"
        raise QalignError(f"{where}: {len(problems)} problem(s) before any step runs:\n  - " + "\n  - ".join(problems))
