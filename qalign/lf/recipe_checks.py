"""Checks of `qalign train RECIPE key=value ...` before anything heavy runs.

Three passes, all before a model or dataset is loaded:

1. `check_recipe_argv` (no heavy import, milliseconds): the recipe is an existing YAML/JSON file that parses, every
   override is `key=value` with a value that parses (LLaMA-Factory merges them with OmegaConf, and so do we).
2. `check_train_keys` (before the imports once qalign.lf.train_fields has cached the field table): every key is one
   LLaMA-Factory (or, under `stage: grpo`, qalign's GRPO stage) knows, every value has its field's type, local
   paths exist (offline, a model that is neither on disk nor cached is an error), datasets are registered in
   `dataset_dir/dataset_info.json`.
3. `check_grpo_values` (after the imports, it needs TRL): under `stage: grpo`, what qalign's GRPO parser says.

LLaMA-Factory's `dataset_dir` defaults to `data/`; qalign keeps the registry at the top level, so a recipe without
`dataset_dir` gets `dataset_dir=.` when `data/dataset_info.json` does not exist.
"""

from __future__ import annotations

import difflib
import enum
import json
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from qalign.env import env_flag
from qalign.errors import QalignError
from qalign.hub import check_local_or_hub
from qalign.lf.train_fields import grpo_fields as grpo_fields
from qalign.lf.train_fields import llamafactory_fields as llamafactory_fields
from qalign.lf.train_fields import train_fields
from qalign.overrides import read_recipe

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
RECIPE_COMMANDS = ("train", "chat", "export", "api", "webchat")  # LLaMA-Factory commands that read a recipe
_BOOL_TEXT = {"true", "false", "yes", "no", "1", "0"}
_PATH_KEYS = ("model_name_or_path", "adapter_name_or_path", "resume_from_checkpoint", "deepspeed")
_DATASET_KEYS = ("dataset", "eval_dataset")
TRAIN_USAGE = ("qalign train RECIPE.yaml [key=value ...], e.g. `qalign train recipes/smollm2-135m/sft.yaml "
               "max_steps=20` (recipes: recipes/<model>/{sft,dpo,orpo,kto,grpo}.yaml)")


def check_train_usage(args: list[str]) -> None:
    """`qalign train` with nothing, or with LLaMA-Factory's `--key value` form: the usage, not LLaMA-Factory's
    traceback (`-h` still shows LLaMA-Factory's options)."""
    if not args:
        raise QalignError(f"train needs a recipe: {TRAIN_USAGE}.")
    if args[0].startswith("-") and args[0] not in ("-h", "--help"):
        raise QalignError(f"train takes a recipe file first, then key=value overrides, not --flags (got {args[0]}): "
                          f"{TRAIN_USAGE}. Write each flag as key=value after the recipe (--max_steps 20 -> "
                          "max_steps=20).")


def _not_a_recipe(recipe: Path, command: str) -> QalignError:
    if command == "train":
        return QalignError(f"{recipe}: not a recipe file; pass a .yaml recipe first, e.g. "
                           "`qalign train recipes/smollm2-135m/sft.yaml max_steps=20`.")
    # chat, api, webchat, export: LLaMA-Factory reads a YAML (+ key=value after it) or --flags only
    return QalignError(f"{recipe}: not a recipe file. `qalign {command}` takes a .yaml file first (with "
                       f"model_name_or_path and template, e.g. `qalign {command} chat.yaml`), then key=value "
                       "overrides; "
                       f"or only --flags: `qalign {command} --model_name_or_path models/smollm2-135m-instruct "
                       "--template smollm2`.")


def check_recipe_argv(argv: list[str], cwd: Path | None = None,
                      command: str = "train") -> tuple[list[str], dict[str, Any] | None]:
    """Cheap checks of `RECIPE key=value ...`; returns the argv to run (maybe with dataset_dir=.) and the config.

    An argv that does not start with a recipe (e.g. `--stage sft ...`) is returned unchanged, with config None.
    `command` (train, chat, api, ...) picks the example in the messages.
    """
    if not argv or argv[0].startswith("-"):
        return argv, None
    recipe = Path(argv[0])
    if not recipe.name.endswith(RECIPE_SUFFIXES):
        raise _not_a_recipe(recipe, command)
    if recipe.is_dir():
        raise QalignError(f"{recipe}: is a folder; pass the recipe file inside it (e.g. {recipe / 'sft.yaml'}).")
    if not recipe.is_file():
        near = sorted(p.name for p in recipe.parent.glob("*.yaml")) if recipe.parent.is_dir() else []
        hint = f" Recipes in {recipe.parent}: {', '.join(near)}." if near else ""
        raise QalignError(f"{recipe}: recipe not found.{hint}")
    config = read_recipe(recipe, argv[1:])
    cwd = cwd or Path.cwd()
    if any(config.get(k) for k in _DATASET_KEYS) and "dataset_dir" not in config \
            and not (cwd / "data" / "dataset_info.json").is_file():
        argv = [*argv, "dataset_dir=."]
        config["dataset_dir"] = "."
    return _resolve_resume(argv, config), config


def checkpoint_is_complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last, and not atomically: a kill during that write leaves it empty or
    cut short, so a checkpoint counts only when the file parses."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders that finished saving, by step."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted((p for p in found if checkpoint_is_complete(p)), key=lambda p: int(p.name.split("-")[1]))


def _resolve_resume(argv: list[str], config: dict[str, Any]) -> list[str]:
    """`resume_from_checkpoint=true` -> the last *complete* checkpoint (a kill while saving leaves a partial one,
    which the Trainer's own lookup would pick); an explicit partial checkpoint is an error."""
    value = config.get("resume_from_checkpoint")
    if value in (None, False) or str(value).lower() in ("false", "none", "null", ""):
        return argv
    output_dir = Path(str(config.get("output_dir") or "."))
    complete = complete_checkpoints(output_dir)
    if value is True or str(value).lower() in ("true", "last"):
        if not complete:
            raise QalignError(f"resume_from_checkpoint=true: no complete checkpoint-N (with trainer_state.json) in "
                              f"{output_dir}. Drop resume_from_checkpoint to start afresh, or set save_steps.")
        target = complete[-1]
        print(f"qalign: resuming from {target} (the last complete checkpoint)", file=sys.stderr, flush=True)
        config["resume_from_checkpoint"] = str(target)
        return [*argv, f"resume_from_checkpoint={target}"]
    path = Path(str(value))
    if path.is_dir() and path.name.startswith("checkpoint-") and not checkpoint_is_complete(path):
        last = f"; the last complete one is {complete[-1]}" if complete else ""
        raise QalignError(f"resume_from_checkpoint={path}: this checkpoint is incomplete (no readable "
                          f"trainer_state.json; the run was killed while saving it){last}. Resume from that, or "
                          "pass resume_from_checkpoint=true.")
    return argv


def accepts(tp: Any, value: Any) -> bool:
    """Whether `value` (as OmegaConf parsed it) fits the dataclass field type `tp`; lenient where unsure."""
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(accepts(arg, value) for arg in get_args(tp))
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in get_args(tp)
    if value is None:
        return tp not in (int, float, bool)
    if tp is bool:
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOL_TEXT)
    if tp in (int, float):
        if isinstance(value, bool):
            return False
        try:
            tp(value)
        except (TypeError, ValueError):
            return False
        return tp is float or not isinstance(value, float) or value.is_integer()
    if tp is str:
        return isinstance(value, str | int | float)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, str) and value in {str(member.value) for member in tp}
    if tp in (list, tuple) or origin in (list, tuple):
        return isinstance(value, list | tuple | str)
    if tp is dict or origin is dict:
        return isinstance(value, dict | str)
    return True  # other types (configs, paths): LLaMA-Factory checks them itself


def type_name(tp: Any) -> str:
    """`int`, `int or null`, `Literal['a', 'b']`, ... for messages."""
    args = get_args(tp)
    if type(None) in args and len(args) == 2:  # Optional[X] / X | None
        return f"{type_name(next(a for a in args if a is not type(None)))} or null"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _grpo_problems(config: dict[str, Any]) -> tuple[set[str], list[str]]:
    """The GRPO keys of `config` and what GRPOArguments (qalign's own parser of them) says is wrong."""
    from qalign.grpo.args import parse_grpo_args, split_grpo_args

    _, grpo = split_grpo_args(config)
    try:
        parse_grpo_args(grpo)
    except (TypeError, ValueError) as exc:
        return set(grpo), [str(exc)]
    return set(grpo), []


def _check_datasets(config: dict[str, Any], recipe: str) -> None:
    names = [n.strip() for key in _DATASET_KEYS for n in str(config.get(key) or "").split(",") if n.strip()]
    if not names:
        return
    if str(config.get("dataset_dir")) == "ONLINE":  # LLaMA-Factory then reads the names as Hub ids
        return
    folder = Path(str(config.get("dataset_dir") or "data"))
    info_path = folder / "dataset_info.json"
    if not info_path.is_file():
        raise QalignError(f"{recipe}: dataset_dir {folder} has no dataset_info.json. Run `qalign convert ...` there "
                          "first, or set dataset_dir to the folder that holds it.")
    try:
        registered = json.loads(info_path.read_text(encoding="utf-8-sig"))
    except (ValueError, OSError):
        return  # the converters report a broken registry with its line; LLaMA-Factory will fail on it too
    missing = [name for name in names if name not in registered]
    if missing:
        raise QalignError(f"{recipe}: dataset(s) {', '.join(missing)} not registered in {info_path} (registered: "
                          f"{', '.join(sorted(registered)) or 'none'}). Convert them first, or fix the name.")


def looks_local(value: str) -> bool:
    """A path rather than a Hub id: explicit (/, ./, ~), or its first folder exists here (models/x, saves/y)."""
    if value.startswith(("/", "./", "../", "~")):
        return True
    return Path(value.split("/", 1)[0]).is_dir() if "/" in value else False


def _raise(recipe: str, problems: list[str]) -> None:
    if problems:
        raise QalignError(f"{recipe} (with the overrides): " + "; ".join(problems) + ". Fix the recipe or the "
                          "key=value overrides.")


def check_train_keys(config: dict[str, Any], recipe: str) -> None:
    """Known keys, typed values, existing paths and registered datasets; a QalignError names the fix. No heavy
    import once qalign.lf.train_fields has cached the field table."""
    fields, grpo = train_fields()
    grpo = grpo if str(config.get("stage")) == "grpo" else {}
    extra_ok = env_flag("ALLOW_EXTRA_ARGS")  # LLaMA-Factory's own switch
    problems = []
    for key, value in config.items():
        tp = grpo.get(key, fields.get(key))  # under stage: grpo, temperature & co. are the rollouts' (GRPO's)
        if tp is None:
            if extra_ok and key not in grpo:
                continue
            close = difflib.get_close_matches(key, [*fields, *grpo], n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif not accepts(tp, value):
            hint = " (a mapping: quote values holding ': ')" if isinstance(value, dict) else ""
            problems.append(f"{key}={value!r} is not of type {type_name(tp)}{hint}")
    for key in _PATH_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value and looks_local(value):
            for part in value.split(","):
                if not Path(part.strip()).expanduser().exists():
                    problems.append(f"{key}: {part.strip()} does not exist")
    model = config.get("model_name_or_path")
    if isinstance(model, str) and model and not looks_local(model):
        try:  # offline, a Hub-shaped name that is not on disk nor in the Hub cache cannot load
            check_local_or_hub("model_name_or_path", model, fix="point it at a model folder (e.g. "
                               "models/smollm2-135m-instruct) or at a Hub id downloaded before")
        except QalignError as exc:
            problems.append(str(exc).rstrip("."))
    _raise(recipe, problems)
    _check_datasets(config, recipe)


def check_grpo_values(config: dict[str, Any], recipe: str) -> None:
    """Under `stage: grpo`, the values through qalign's GRPO parser (ranges, reward names; imports TRL)."""
    if str(config.get("stage")) == "grpo":
        _raise(recipe, _grpo_problems(config)[1])


def check_train_config(config: dict[str, Any], recipe: str) -> None:
    """Every check of `qalign train`'s config: check_train_keys, then check_grpo_values."""
    check_train_keys(config, recipe)
    check_grpo_values(config, recipe)
