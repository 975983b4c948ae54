"""register.py survives an upgrade loudly, and the GRPO stage's options come from TRL and LLaMA-Factory."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import ModuleType

import pytest

from qalign.grpo.args import GRPO_DEFAULTS, QALIGN_DEFAULTS, TRL_FIELDS, GRPOArguments
from qalign.lf import register
from qalign.lf.register import TESTED_LLAMAFACTORY, PatchError
from tests.conftest import REPO
from tests.test_grpo import _lf_args, _write_dataset


def _fake_llamafactory(folder: Path, version: str) -> Path:
    package = folder / "llamafactory"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"__version__ = {version!r}\n")
    return folder


@pytest.mark.parametrize("how", ["register_all", "startup hook"])
def test_untested_llamafactory_is_refused_naming_the_tested_version(how: str, tmp_path: Path) -> None:
    arm = ("from qalign.lf.register import register_all; register_all()" if how == "register_all"
           else "import qalign.lf.autoregister as hook; hook.arm()")
    env = {"PYTHONPATH": f"{_fake_llamafactory(tmp_path, '0.9.9')}:{REPO}", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", f"{arm}; import llamafactory; print('imported', llamafactory.__version__)"]
    refused = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "imported" not in refused.stdout
    assert "PatchError" in refused.stderr and "llamafactory 0.9.9 is installed" in refused.stderr
    assert f"pip install llamafactory=={TESTED_LLAMAFACTORY}" in refused.stderr
    warned = subprocess.run(cmd, cwd=tmp_path, env={**env, "QALIGN_ALLOW_UNTESTED_LLAMAFACTORY": "1"},
                            capture_output=True, text=True)
    assert warned.returncode == 0 and "imported 0.9.9" in warned.stdout
    assert "RuntimeWarning" in warned.stderr and TESTED_LLAMAFACTORY in warned.stderr


def test_the_installed_llamafactory_is_the_tested_one() -> None:
    import llamafactory

    register._check_version(llamafactory)  # no error
    assert llamafactory.__version__ == TESTED_LLAMAFACTORY


@pytest.mark.parametrize(("patch", "module", "missing"), [
    (register._patch_stage_literal, "llamafactory.hparams.finetuning_args", "FinetuningArguments"),
    (register._patch_tuner, "llamafactory.train.tuner", "_training_function"),
    (register._patch_stage_list, "llamafactory.extras.constants", "TRAINING_STAGES"),
    (register._patch_launcher, "llamafactory.launcher", "launch"),
    (register._patch_runner, "llamafactory.webui.runner", "Runner"),
    (register._patch_train_tab, "llamafactory.webui.interface", "create_train_tab"),
    (register._patch_pref_loss_check, "llamafactory.hparams.finetuning_args", "FinetuningArguments"),
    (register._patch_dpo_trainer, "llamafactory.train.dpo.trainer", "CustomDPOTrainer"),
    (register._patch_kto_trainer, "llamafactory.train.kto.trainer", "CustomKTOTrainer"),
])
def test_each_patch_point_fails_loudly_when_its_target_is_gone(patch, module: str, missing: str) -> None:
    with pytest.raises(PatchError, match=rf"patch point `{re.escape(module)}\.{missing}` is missing"):
        patch(ModuleType(module))


def test_a_stage_field_or_torchrun_handoff_that_moved_fails_loudly() -> None:
    fake = ModuleType("llamafactory.hparams.finetuning_args")

    @dataclasses.dataclass
    class FinetuningArguments:
        pure_bf16: bool = False

    fake.FinetuningArguments = FinetuningArguments
    with pytest.raises(PatchError, match="`FinetuningArguments.stage` is missing"):
        register._patch_stage_literal(fake)
    launcher = ModuleType("llamafactory.launcher")
    launcher.launch = lambda: None
    with pytest.raises(PatchError, match="no longer hands `__file__` to torchrun"):
        register._patch_launcher(launcher)
    trainer = ModuleType("llamafactory.train.dpo.trainer")

    class CustomDPOTrainer:  # TRL's dpo_loss without the loss_type the ipo/hinge patch passes
        def compute_preference_loss(self): ...
        def get_batch_loss_metrics(self): ...
        def dpo_loss(self, chosen, rejected, ref_chosen, ref_rejected): ...

    trainer.CustomDPOTrainer = CustomDPOTrainer
    with pytest.raises(PatchError, match="`DPOTrainer.dpo_loss` takes no `loss_type`"):
        register._patch_dpo_trainer(trainer)


def test_grpo_keys_types_defaults_and_help_come_from_trl() -> None:
    from trl import GRPOConfig

    trl = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    ours = {f.name: f for f in dataclasses.fields(GRPOArguments)}
    assert set(ours) == {*TRL_FIELDS, "reward_funcs"} and len(TRL_FIELDS) == 29
    for name in TRL_FIELDS:
        assert GRPO_DEFAULTS[name] == QALIGN_DEFAULTS.get(name, trl[name].default), name
        assert ours[name].metadata["help"] == trl[name].metadata["help"], name
    assert GRPO_DEFAULTS["num_generations"] == trl["num_generations"].default == 8
    assert set(QALIGN_DEFAULTS) == {"max_completion_length", "max_prompt_length", "shuffle_dataset"}


def test_grpo_mirrors_every_callback_of_llamafactorys_tuner() -> None:
    import llamafactory.train.tuner as tuner

    from qalign.grpo.trainer import TUNER_CALLBACKS

    original = inspect.unwrap(tuner._training_function)  # under qalign's wrapper when registered
    appended = re.findall(r"callbacks\.append\((\w+)\(", inspect.getsource(original))
    assert sorted(appended) == sorted(TUNER_CALLBACKS)


def test_grpo_refuses_options_it_cannot_honour(tiny_qwen3: Path, tmp_path: Path) -> None:
    from qalign.grpo.trainer import check_supported
    from qalign.grpo.workflow import train_grpo

    register.register_all()
    with pytest.raises(ValueError, match=r"cannot honour `use_badam` \(BAdam needs"):
        check_supported(Namespace(use_badam=True))
    _write_dataset(tmp_path)
    with pytest.raises(ValueError, match="cannot honour `early_stopping_steps`.*does not evaluate"):
        train_grpo({"args": _lf_args(tiny_qwen3, tmp_path, early_stopping_steps=2), "callbacks": []})


def test_grpo_uses_llamafactorys_optimizer_options(tiny_qwen3: Path, tmp_path: Path) -> None:
    """LoRA+ (loraplus_lr_ratio) gives the LoRA B matrices their own learning rate, as in LLaMA-Factory's stages."""
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    register.register_all()
    seen: list[list[float]] = []

    class Groups(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            seen.append(sorted({group["lr"] for group in optimizer.param_groups}))

    _write_dataset(tmp_path)
    run_exp(_lf_args(tiny_qwen3, tmp_path, max_steps=1, num_generations=2, per_device_train_batch_size=2,
                     max_completion_length=4, learning_rate=1e-4, loraplus_lr_ratio=16.0, lr_scheduler_type="constant",
                     finetuning_type="lora"), callbacks=[Groups()])
    assert len(seen) == 1 and {1e-4, 16e-4} <= {round(lr, 10) for lr in seen[0]}  # plain GRPOTrainer: one lr
