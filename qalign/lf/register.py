"""The one place qalign patches LLaMA-Factory 0.9.5: `register_all()` adds the `grpo` stage wherever stages live.

Each patch is applied when its module is imported (or at once if it already is), so `qalign train` does not pay
for importing the web UI. `llamafactory.__version__` must be the tested one (TESTED_LLAMAFACTORY; with
QALIGN_ALLOW_UNTESTED_LLAMAFACTORY=1 only a warning), and a patch whose target is missing raises PatchError
naming it. Patch points:

1. `hparams.finetuning_args`: `FinetuningArguments.stage`'s Literal gains "grpo" (argparse choices for `--stage`).
2. `train.tuner._training_function`: wrapped; stage grpo -> `qalign.grpo.train_grpo`, any other stage -> the
   original, untouched (so an unknown stage still gets LLaMA-Factory's own error).
3. `extras.constants.TRAINING_STAGES`: gains "GRPO" in place; the web UI modules share that dict object.
4. `launcher.__file__`: what `FORCE_TORCHRUN=1` hands torchrun; becomes `-m qalign.lf.worker` (register, then
   run_exp) so every worker knows the stage. `-m` keeps the package folder off sys.path[0].
5. `webui.runner`: the trainer subprocess `llamafactory-cli train X.yaml` becomes `python -m qalign.cli train
   X.yaml`; the GRPO fields enter the args when the stage is GRPO; the command preview says `qalign train`.
6. `webui.interface.create_train_tab`: wrapped to add a "GRPO (qalign)" accordion whose fields feed the runner
   (the widgets: qalign/grpo/webui.py).
7. `hparams.finetuning_args.FinetuningArguments.__post_init__`: wrapped; `stage: dpo` with a `pref_loss` that
   neither TRL 0.24's `dpo_loss` nor LLaMA-Factory implements (`kto_pair`) is refused (LLaMA-Factory would
   silently train the sigmoid loss).
8. `train.dpo.trainer.CustomDPOTrainer`: `compute_preference_loss` wrapped so `ipo` / `hinge` reach TRL's
   `dpo_loss(..., loss_type=...)` (LLaMA-Factory calls it without `loss_type`, i.e. sigmoid; sigmoid, orpo, simpo
   and the bco term keep LLaMA-Factory's own code); `get_batch_loss_metrics` wrapped to log `preference_loss`, the
   loss without the `pref_ftx` SFT term (and an `odds_ratio_loss` without it: LLaMA-Factory's includes it).
9. `train.kto.trainer.CustomKTOTrainer`: `kto_loss`, `get_batch_loss_metrics` and `log` wrapped to log
   `preference_loss`, the KTO term without `pref_ftx` as the weighted mean sum(w*l)/sum(w) (0.5 at the reference
   for any class weights), averaged over the logging window (LLaMA-Factory's KTO `log` sums unknown keys).
"""

from __future__ import annotations

import functools
import importlib.abc
import subprocess
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, get_args, get_type_hints

from qalign.env import env_flag
from qalign.errors import QalignError
from qalign.health import PREFERENCE_LOSS  # the logged key: one name for the patch and the health rule

TESTED_LLAMAFACTORY = "0.9.5"
ALLOW_UNTESTED = "QALIGN_ALLOW_UNTESTED_LLAMAFACTORY"
GRPO_STAGE = "grpo"
GRPO_LABEL = "GRPO"
WORKER = "-m qalign.lf.worker"
# pref_loss values of LLaMA-Factory's Literal that run what they name: TRL 0.24's dpo_loss, LLaMA-Factory's own
TRL_DPO_LOSSES = ("sigmoid", "hinge", "ipo")
LF_PREF_LOSSES = ("orpo", "simpo")
_PENDING: dict[str, list[Callable[[ModuleType], None]]] = {}
_registered = False


class PatchError(QalignError):
    """LLaMA-Factory is not the version qalign patches, or a patch point is gone."""


def _fix_hint() -> str:
    return (f"qalign was tested with llamafactory=={TESTED_LLAMAFACTORY}: `pip install llamafactory=="
            f"{TESTED_LLAMAFACTORY}`, or port qalign/lf/register.py (QALIGN_NO_AUTOREGISTER=1 keeps plain "
            "llamafactory-cli free of qalign meanwhile).")


def _check_version(module: ModuleType) -> None:
    version = getattr(module, "__version__", None)
    if version == TESTED_LLAMAFACTORY:
        return
    message = (f"qalign/lf/register.py patches LLaMA-Factory {TESTED_LLAMAFACTORY}, but llamafactory {version} is "
               f"installed ({getattr(module, '__file__', '?')}). {_fix_hint()} "
               f"Set {ALLOW_UNTESTED}=1 to try it anyway.")
    if env_flag(ALLOW_UNTESTED):
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return
    raise PatchError(message)


def _require(module: ModuleType, *path: str) -> Any:
    """module.a.b...: the patch target, or a PatchError naming what is missing."""
    target: Any = module
    for depth, name in enumerate(path):
        if not hasattr(target, name):
            where = ".".join([module.__name__, *path[:depth + 1]])
            raise PatchError(f"qalign/lf/register.py: patch point `{where}` is missing in llamafactory "
                             f"{_installed_version()}. {_fix_hint()}")
        target = getattr(target, name)
    return target


def _installed_version() -> str:
    module = sys.modules.get("llamafactory")
    return str(getattr(module, "__version__", "?"))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a pending module so its patches run right after it loads."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _PENDING:
            return None
        for finder in sys.meta_path:
            spec = (None if isinstance(finder, _PatchOnImport)
                    else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target))
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


def patched_spec(fullname: str, path: Any = None, target: Any = None) -> Any:
    """The spec of module `fullname` with its pending patches applied after it loads (None if not found).

    For a finder that is itself inside an import of `fullname` (the start-up hook): a finder inserted now is not
    consulted by that import any more."""
    return _PatchOnImport().find_spec(fullname, path, target)


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
    _when_imported("llamafactory", _check_version)
    _when_imported("llamafactory.hparams.finetuning_args", _patch_stage_literal)
    _when_imported("llamafactory.train.tuner", _patch_tuner)
    _when_imported("llamafactory.extras.constants", _patch_stage_list)
    _when_imported("llamafactory.launcher", _patch_launcher)
    _when_imported("llamafactory.webui.runner", _patch_runner)
    _when_imported("llamafactory.webui.interface", _patch_train_tab)
    _when_imported("llamafactory.hparams.finetuning_args", _patch_pref_loss_check)
    _when_imported("llamafactory.train.dpo.trainer", _patch_dpo_trainer)
    _when_imported("llamafactory.train.kto.trainer", _patch_kto_trainer)


def _patch_stage_literal(module: ModuleType) -> None:
    cls = _require(module, "FinetuningArguments")
    _require(cls, "__dataclass_fields__")
    if "stage" not in cls.__dataclass_fields__:
        raise PatchError(f"qalign/lf/register.py: `FinetuningArguments.stage` is missing in llamafactory "
                         f"{_installed_version()}. {_fix_hint()}")
    stages = get_args(get_type_hints(cls)["stage"])
    if GRPO_STAGE not in stages:
        literal = Literal[(*stages, GRPO_STAGE)]
        cls.__annotations__["stage"] = literal  # HfArgumentParser reads get_type_hints -> argparse choices
        cls.__dataclass_fields__["stage"].type = literal


def _patch_tuner(module: ModuleType) -> None:
    original = _require(module, "_training_function")
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
    _require(module, "TRAINING_STAGES").setdefault(GRPO_LABEL, GRPO_STAGE)


def _patch_launcher(module: ModuleType) -> None:
    # launch() formats `file_name=__file__` (a module global) into the torchrun command when it runs.
    launch = _require(module, "launch")
    if "__file__" not in launch.__code__.co_names:
        raise PatchError(f"qalign/lf/register.py: `llamafactory.launcher.launch` no longer hands `__file__` to "
                         f"torchrun in llamafactory {_installed_version()}. {_fix_hint()}")
    module.__file__ = WORKER


def _qalign_popen(cmd: Any, *args: Any, **kwargs: Any) -> subprocess.Popen:
    if isinstance(cmd, list | tuple) and list(cmd[:2]) == ["llamafactory-cli", "train"]:
        cmd = [sys.executable, "-m", "qalign.cli", "train", *cmd[2:]]
    return subprocess.Popen(cmd, *args, **kwargs)


def _patch_runner(module: ModuleType) -> None:
    runner_cls = _require(module, "Runner")
    if getattr(runner_cls, "_qalign", False):
        return
    parse_train_args = _require(module, "Runner", "_parse_train_args")
    gen_cmd = _require(module, "gen_cmd")
    _require(module, "Popen")

    def _parse_train_args(self: Any, data: dict[Any, Any]) -> dict[str, Any]:
        args = parse_train_args(self, data)
        if args.get("stage") == GRPO_STAGE:
            from qalign.grpo.webui import grpo_train_args

            args.update(grpo_train_args(self.manager, data))
        return args

    runner_cls._parse_train_args = _parse_train_args
    runner_cls._qalign = True
    module.Popen = _qalign_popen
    module.gen_cmd = lambda args: gen_cmd(args).replace("llamafactory-cli train", "qalign train", 1)


def _patch_train_tab(module: ModuleType) -> None:
    original = _require(module, "create_train_tab")
    if getattr(original, "_qalign", False):
        return

    @functools.wraps(original)
    def create_train_tab(engine: Any) -> dict[str, Any]:
        from qalign.grpo.webui import grpo_accordion, grpo_components

        extra = grpo_components()
        base_elems = engine.manager.get_base_elems
        engine.manager.get_base_elems = lambda: base_elems() | set(extra.values())  # the tab's input set
        try:
            elems = original(engine)
        finally:
            del engine.manager.get_base_elems
        grpo_tab = grpo_accordion(extra, elems["training_stage"], GRPO_STAGE)
        return {**elems, "grpo_tab": grpo_tab, **extra}

    create_train_tab._qalign = True
    module.create_train_tab = create_train_tab


def pref_loss_error(pref_loss: str) -> str:
    """Why `stage: dpo` cannot train `pref_loss` here, and what to use instead."""
    supported = " | ".join((*TRL_DPO_LOSSES, *LF_PREF_LOSSES))
    fix = ("use `stage: kto` with a KTO dataset (`qalign convert kto`; kto_chosen_weight / kto_rejected_weight)"
           if pref_loss == "kto_pair" else f"use pref_loss: {supported}")
    return (f"pref_loss: {pref_loss} is refused: TRL 0.24's DPOTrainer does not implement it"
            + (" (kto_pair was removed from it)" if pref_loss == "kto_pair" else "")
            + f", and LLaMA-Factory {TESTED_LLAMAFACTORY} would silently train the sigmoid DPO loss instead "
            "(CustomDPOTrainer.compute_preference_loss calls dpo_loss without loss_type). Fix: " + fix + ".")


def _patch_pref_loss_check(module: ModuleType) -> None:
    cls = _require(module, "FinetuningArguments")
    original = _require(cls, "__post_init__")
    if getattr(original, "_qalign", False):
        return

    @functools.wraps(original)
    def __post_init__(self: Any) -> None:
        if getattr(self, "stage", None) == "dpo" and self.pref_loss not in (*TRL_DPO_LOSSES, *LF_PREF_LOSSES):
            raise QalignError(pref_loss_error(str(self.pref_loss)))
        original(self)

    __post_init__._qalign = True
    cls.__post_init__ = __post_init__


def _patch_dpo_trainer(module: ModuleType) -> None:
    import inspect

    cls = _require(module, "CustomDPOTrainer")
    compute = _require(cls, "compute_preference_loss")
    metrics = _require(cls, "get_batch_loss_metrics")
    if "loss_type" not in inspect.signature(_require(cls, "dpo_loss")).parameters:
        raise PatchError(f"qalign/lf/register.py: TRL's `DPOTrainer.dpo_loss` takes no `loss_type` under llamafactory "
                         f"{_installed_version()}. {_fix_hint()}")
    if getattr(compute, "_qalign", False):
        return

    @functools.wraps(compute)
    def compute_preference_loss(self: Any, *args: Any, **kwargs: Any) -> Any:
        loss_type = self.loss_type  # = finetuning_args.pref_loss (CustomDPOTrainer.__init__)
        if loss_type not in (*TRL_DPO_LOSSES, *LF_PREF_LOSSES):
            raise QalignError(pref_loss_error(str(loss_type)))
        if self.finetuning_args.use_ref_model and loss_type != "sigmoid":
            # the instance attribute shadows the method for this one call; the rest (bco term) stays LLaMA-Factory's
            self.dpo_loss = functools.partial(type(self).dpo_loss, self, loss_type=loss_type)
            try:
                out = compute(self, *args, **kwargs)
            finally:
                del self.dpo_loss
        else:
            out = compute(self, *args, **kwargs)
        # a new tensor now: get_batch_loss_metrics then adds pref_ftx * SFT to `losses` in place
        self._qalign_preference_loss = out[0].detach().mean()
        return out

    @functools.wraps(metrics)
    def get_batch_loss_metrics(self: Any, model: Any, batch: Any, train_eval: str = "train") -> Any:
        loss, logged = metrics(self, model, batch, train_eval=train_eval)
        preference = self.__dict__.pop("_qalign_preference_loss", None)
        if preference is not None:
            prefix = "eval_" if train_eval == "eval" else ""
            logged[f"{prefix}{PREFERENCE_LOSS}"] = preference.item()
            if f"{prefix}odds_ratio_loss" in logged:  # ORPO: LLaMA-Factory's includes pref_ftx * SFT / beta
                logged[f"{prefix}odds_ratio_loss"] = (preference.item() - logged[f"{prefix}sft_loss"]) / self.beta
        return loss, logged

    compute_preference_loss._qalign = True
    cls.compute_preference_loss = compute_preference_loss
    cls.get_batch_loss_metrics = get_batch_loss_metrics


def _patch_kto_trainer(module: ModuleType) -> None:
    cls = _require(module, "CustomKTOTrainer")
    kto = _require(cls, "kto_loss")
    metrics = _require(cls, "get_batch_loss_metrics")
    log = _require(cls, "log")
    if getattr(kto, "_qalign", False):
        return

    @functools.wraps(kto)
    def kto_loss(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = kto(self, *args, **kwargs)
        losses, chosen, rejected = out[:3]  # losses: weighted desirable then undesirable terms
        weight = self.desirable_weight * len(chosen) + self.undesirable_weight * len(rejected)
        if weight > 0:
            self._qalign_preference_loss = losses.detach().nansum() / weight
        return out

    @functools.wraps(metrics)
    def get_batch_loss_metrics(self: Any, *args: Any, **kwargs: Any) -> Any:
        loss, logged = metrics(self, *args, **kwargs)
        preference = self.__dict__.pop("_qalign_preference_loss", None)
        if preference is not None:
            logged[PREFERENCE_LOSS] = preference.item()
        return loss, logged

    @functools.wraps(log)
    def kto_log(self: Any, logs: dict[str, float], *args: Any, **kwargs: Any) -> Any:
        train_eval = "train" if "loss" in logs else "eval"  # as LLaMA-Factory's log decides
        values = self._stored_metrics[train_eval].pop(PREFERENCE_LOSS, None)
        if values:  # stored on the main process only (TRL's KTO compute_loss): its mean, no cross-rank sum
            logs[("eval_" if train_eval == "eval" else "") + PREFERENCE_LOSS] = sum(values) / len(values)
        return log(self, logs, *args, **kwargs)

    kto_loss._qalign = True
    cls.kto_loss = kto_loss
    cls.get_batch_loss_metrics = get_batch_loss_metrics
    cls.log = kto_log
