"""The one place qalign patches LLaMA-Factory 0.9.5: `register_all()` adds the `grpo` stage wherever stages live.

Each patch is applied when its module is imported (or at once if it already is), so `qalign train` does not pay
for importing the web UI. Patch points:

1. `hparams.finetuning_args`: `FinetuningArguments.stage`'s Literal gains "grpo" (argparse choices for `--stage`).
2. `train.tuner._training_function`: wrapped; stage grpo -> `qalign.grpo.train_grpo`, any other stage -> the
   original, untouched (so an unknown stage still gets LLaMA-Factory's own error).
3. `extras.constants.TRAINING_STAGES`: gains "GRPO" in place; the web UI modules share that dict object.
4. `launcher.__file__`: what `FORCE_TORCHRUN=1` hands torchrun; becomes `-m qalign.worker` (register, then
   run_exp) so every worker knows the stage. `-m` keeps the package folder off sys.path[0].
5. `webui.runner`: the trainer subprocess `llamafactory-cli train X.yaml` becomes `python -m qalign.cli train
   X.yaml`; the GRPO fields enter the args when the stage is GRPO; the command preview says `qalign train`.
6. `webui.interface.create_train_tab`: wrapped to add a "GRPO (qalign)" accordion whose fields feed the runner.
"""

from __future__ import annotations

import functools
import importlib.abc
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, get_args, get_type_hints

GRPO_STAGE = "grpo"
GRPO_LABEL = "GRPO"
WORKER = "-m qalign.worker"
_PENDING: dict[str, list[Callable[[ModuleType], None]]] = {}
_registered = False


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a pending module so its patches run right after it loads."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _PENDING:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            for patch in _PENDING.pop(fullname, []):
                patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _when_imported(name: str, patch: Callable[[ModuleType], None]) -> None:
    if name in sys.modules:
        patch(sys.modules[name])
        return
    _PENDING.setdefault(name, []).append(patch)
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def register_all() -> None:
    """Register the GRPO stage with LLaMA-Factory (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True
    _when_imported("llamafactory.hparams.finetuning_args", _patch_stage_literal)
    _when_imported("llamafactory.train.tuner", _patch_tuner)
    _when_imported("llamafactory.extras.constants", _patch_stage_list)
    _when_imported("llamafactory.launcher", _patch_launcher)
    _when_imported("llamafactory.webui.runner", _patch_runner)
    _when_imported("llamafactory.webui.interface", _patch_train_tab)


def _patch_stage_literal(module: ModuleType) -> None:
    cls = module.FinetuningArguments
    stages = get_args(get_type_hints(cls)["stage"])
    if GRPO_STAGE not in stages:
        literal = Literal[(*stages, GRPO_STAGE)]
        cls.__annotations__["stage"] = literal  # HfArgumentParser reads get_type_hints -> argparse choices
        cls.__dataclass_fields__["stage"].type = literal


def _patch_tuner(module: ModuleType) -> None:
    original = module._training_function
    if getattr(original, "_qalign", False):
        return

    @functools.wraps(original)
    def _training_function(config: dict[str, Any]) -> None:
        from llamafactory.hparams import read_args

        from qalign.grpo.args import stage_of

        args = read_args(config.get("args"))
        if stage_of(args) != GRPO_STAGE:
            return original(config)
        from qalign.grpo.workflow import train_grpo

        return train_grpo({**config, "args": args})

    _training_function._qalign = True
    module._training_function = _training_function


def _patch_stage_list(module: ModuleType) -> None:
    module.TRAINING_STAGES.setdefault(GRPO_LABEL, GRPO_STAGE)


def _patch_launcher(module: ModuleType) -> None:
    # launch() formats `file_name=__file__` (a module global) into the torchrun command when it runs.
    module.__file__ = WORKER


def _qalign_popen(cmd: Any, *args: Any, **kwargs: Any) -> subprocess.Popen:
    if isinstance(cmd, list | tuple) and list(cmd[:2]) == ["llamafactory-cli", "train"]:
        cmd = [sys.executable, "-m", "qalign.cli", "train", *cmd[2:]]
    return subprocess.Popen(cmd, *args, **kwargs)


def _grpo_webui_args(manager: Any, data: dict[Any, Any]) -> dict[str, Any]:
    def get(name: str) -> Any:
        return data[manager.get_elem_by_id(f"train.grpo_{name}")]

    return {
        "num_generations": int(get("num_generations")),
        "beta": float(get("beta")),
        "temperature": float(get("temperature")),
        "max_completion_length": int(get("max_completion_length")),
        "reward_funcs": ",".join(get("reward_funcs") or []) or None,
        "loss_type": get("loss_type"),
    }


def _patch_runner(module: ModuleType) -> None:
    runner_cls = module.Runner
    if getattr(runner_cls, "_qalign", False):
        return
    parse_train_args = runner_cls._parse_train_args
    gen_cmd = module.gen_cmd

    def _parse_train_args(self: Any, data: dict[Any, Any]) -> dict[str, Any]:
        args = parse_train_args(self, data)
        if args.get("stage") == GRPO_STAGE:
            args.update(_grpo_webui_args(self.manager, data))
        return args

    runner_cls._parse_train_args = _parse_train_args
    runner_cls._qalign = True
    module.Popen = _qalign_popen
    module.gen_cmd = lambda args: gen_cmd(args).replace("llamafactory-cli train", "qalign train", 1)


def _grpo_components() -> dict[str, Any]:
    import gradio as gr

    from qalign.grpo.args import LOSS_TYPES
    from qalign.grpo.rewards import DEFAULT_REWARDS, REWARD_FUNCS

    # render=False: created before the Train tab so its buttons take them as inputs; rendered after it.
    return {
        "grpo_num_generations": gr.Slider(2, 64, value=4, step=1, label="num_generations", render=False,
                                          info="completions per prompt; batch size x grad accum must divide by it"),
        "grpo_beta": gr.Slider(0, 1, value=0.0, step=0.001, label="beta", render=False,
                               info="KL coefficient; 0 loads no reference model"),
        "grpo_temperature": gr.Slider(0.05, 2, value=1.0, step=0.05, label="temperature", render=False),
        "grpo_max_completion_length": gr.Slider(1, 4096, value=64, step=1, label="max_completion_length",
                                                render=False),
        "grpo_reward_funcs": gr.Dropdown(choices=list(REWARD_FUNCS), value=list(DEFAULT_REWARDS), multiselect=True,
                                         label="reward_funcs", render=False),
        "grpo_loss_type": gr.Dropdown(choices=list(LOSS_TYPES), value="dapo", label="loss_type", render=False),
    }


def _patch_train_tab(module: ModuleType) -> None:
    original = module.create_train_tab
    if getattr(original, "_qalign", False):
        return

    @functools.wraps(original)
    def create_train_tab(engine: Any) -> dict[str, Any]:
        import gradio as gr
        from llamafactory.extras.constants import TRAINING_STAGES

        extra = _grpo_components()
        base_elems = engine.manager.get_base_elems
        engine.manager.get_base_elems = lambda: base_elems() | set(extra.values())  # the tab's input set
        try:
            elems = original(engine)
        finally:
            del engine.manager.get_base_elems
        with gr.Accordion("GRPO (qalign)", open=True, visible=False) as grpo_tab:
            with gr.Row():
                for component in extra.values():
                    component.render()
        stage = elems["training_stage"]
        stage.change(lambda value: gr.Accordion(visible=TRAINING_STAGES.get(value) == GRPO_STAGE),
                     [stage], [grpo_tab], queue=False)
        return {**elems, "grpo_tab": grpo_tab, **extra}

    create_train_tab._qalign = True
    module.create_train_tab = create_train_tab
