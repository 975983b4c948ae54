"""The GRPO stage: rewards, argument parsing/validation, `qalign train` runs (plain and torchrun), the web UI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from qalign.grpo.args import build_grpo_config, parse_grpo_args, split_grpo_args, stage_of
from qalign.grpo.rewards import DEFAULT_REWARDS, REWARD_FUNCS, em, f1, format_reward, subem
from qalign.lf.register import register_all
from tests.conftest import REPO

QALIGN = [sys.executable, "-m", "qalign.cli"]
RECIPE = str(REPO / "recipes/smollm2-135m/grpo.yaml")
CAPITALS = [("france", "paris"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid"), ("peru", "lima")]


def _write_dataset(folder: Path, name: str = "t_grpo", n: int = 16, answers: list[str] | None = None) -> None:
    """An eval-style GRPO set (prompt + every alias) registered in folder/dataset_info.json; `answers` replaces the
    golds (e.g. ["e"]: about half of the tiny random model's 8-token completions contain an "e", so SubEM varies)."""
    rows = []
    for i in range(n):
        country, city = CAPITALS[i % len(CAPITALS)]
        question = f"what is the capital of {country} ({i})"
        rows.append({"id": f"q{i}", "question": question, "input": "", "output": city,
                     "answers": answers or [city, city.title()],
                     "instruction": f"Answer with the short answer.\n\nPassage 1 ({country}): {city} is the capital "
                                    f"of {country}.\n\nQuestion: {question}\nShort answer:"})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / f"{name}.json").write_text(json.dumps(rows))
    entry = {"file_name": f"data/{name}.json", "columns": {"prompt": "instruction", "query": "input",
                                                          "response": "output"}, "qalign": {"kind": "eval"}}
    (folder / "dataset_info.json").write_text(json.dumps({name: entry}))


def _tiny(model: Path, output_dir: str) -> list[str]:
    return [f"model_name_or_path={model}", "template=qwen3_nothink", "dataset=t_grpo", f"output_dir={output_dir}",
            "cutoff_len=256", "use_cpu=true"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _lf_args(model: Path, tmp_path: Path, **extra) -> dict:
    return {"stage": "grpo", "do_train": True, "model_name_or_path": str(model), "template": "qwen3_nothink",
            "dataset": "t_grpo", "dataset_dir": str(tmp_path), "output_dir": str(tmp_path / "out"),
            "use_cpu": True, "report_to": "none", "cutoff_len": 256, **extra}


# ---------------------------------------------------------------- rewards (hand-computed values)


def test_rewards_match_hand_computed_values() -> None:
    golds = [["Paris", "Paris, France"], ["paris"], ["rome"], "Lima"]
    completions = ["The answer is Paris.", "the Paris!", "<think>maybe rome</think> paris", "lima"]
    assert subem(completions, golds) == [1.0, 1.0, 0.0, 1.0]
    assert em(completions, golds) == [0.0, 1.0, 0.0, 1.0]  # "the paris" -> "paris" (articles dropped)
    # "answer is paris" vs "paris": p=1/3, r=1 -> 0.5; vs "paris france": p=1/3, r=1/2 -> 0.4; max = 0.5
    assert f1(completions, golds) == pytest.approx([0.5, 1.0, 0.0, 1.0])
    conversational = [[{"role": "assistant", "content": "Paris France"}]]
    assert f1(conversational, [["Paris"]]) == pytest.approx([2 * 0.5 * 1 / 1.5])
    with pytest.raises(ValueError):
        subem(["a", "b"], [["a"]])


def test_format_reward_short_answer_and_think_block() -> None:
    plain = ["Paris", "", "one two three four five six seven eight nine ten eleven", "<think>x</think> Rome"]
    golds = [["Paris"], ["Paris"], ["one two three four five six seven eight nine ten eleven"], ["rome"]]
    assert format_reward(plain, golds, prompts=["Question: ?"] * 4) == [1.0, 0.0, 0.0, 1.0]
    think_prompt = "First think inside <think> and </think>, then answer."
    think = ["<think>it is paris</think> Paris", "Paris", "<think>a</think>", "<think>a</think><think>b</think> x",
             "<think>unclosed Paris", "<think>a</think> " + "w " * 11]
    golds = [["paris"], ["paris"], ["a"], ["x"], ["paris"], ["w"]]
    assert format_reward(think, golds, prompts=[think_prompt] * 6) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # a chat template that opens the block in the prompt: the completion starts inside it
    assert format_reward(["reasoning</think> Paris"], [["Paris"]], prompts=[think_prompt + "\n<think>\n"]) == [1.0]
    assert set(REWARD_FUNCS) == {"subem", "em", "f1", "format"} and DEFAULT_REWARDS == ("em", "f1")


def test_format_credit_needs_a_correct_answer() -> None:
    # well formed and short, but wrong: no credit; a near miss with F1 >= 0.5 keeps it ("in 1945": F1 2/3)
    completions = ["Lyon", "in 1945", "Paris", "it was in the year 1945"]
    golds = [["Paris"], ["1945"], ["Paris"], ["1945"]]
    assert format_reward(completions, golds, prompts=["Question: ?"] * 4) == [0.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="needs the gold `answers`"):
        format_reward(["Paris"], None)


def test_a_verbose_answer_naming_the_gold_earns_less_than_the_exact_one() -> None:
    """Under the default rewards length no longer pays: SubEM gave the two the same 1.0, and the recipe paid it."""
    golds = [["Paris"], ["Paris"]]
    exact, verbose = "Paris", "The capital of France is the city of Paris, which"
    totals = [sum(scores) for scores in zip(*(REWARD_FUNCS[name]([exact, verbose], golds) for name in DEFAULT_REWARDS),
                                            strict=True)]
    assert totals[0] == 2.0 and totals[1] == pytest.approx(2 / 9)  # em 0 + f1: 1 of 8 words (articles dropped)
    assert subem([exact, verbose], golds) == [1.0, 1.0]
    import yaml

    for recipe in (RECIPE, str(REPO / "recipes/qwen3-8b-awq/grpo.yaml")):
        config = yaml.safe_load(Path(recipe).read_text())
        assert config["reward_funcs"] == ["em", "f1"] and config["mask_truncated_completions"] is True, recipe


# ---------------------------------------------------------------- argument parsing and validation


def test_grpo_keys_are_split_off_before_llamafactory_parses() -> None:
    parsed = {"stage": "grpo", "output_dir": "x", "num_generations": 4, "beta": 0.1, "temperature": 0.7}
    assert split_grpo_args(parsed) == ({"stage": "grpo", "output_dir": "x"},
                                       {"num_generations": 4, "beta": 0.1, "temperature": 0.7})
    argv = ["--stage", "grpo", "--num_generations", "4", "--temperature=0.7", "--mask_truncated_completions",
            "--output_dir", "x", "--reward-funcs", "subem,em"]
    lf, grpo = split_grpo_args(argv)
    assert lf == ["--stage", "grpo", "--output_dir", "x"]
    args = parse_grpo_args(grpo)
    assert (args.num_generations, args.temperature, args.mask_truncated_completions) == (4, 0.7, True)
    assert args.reward_funcs == ["subem", "em"]
    assert stage_of(argv) == "grpo" and stage_of(["--stage=dpo"]) == "dpo" and stage_of({}) == "sft"
    defaults = parse_grpo_args({"reward_weights": "1, 0.5"})
    assert defaults.reward_funcs == ["em", "f1"] and defaults.reward_weights == [1.0, 0.5]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_generations": 1}, "`num_generations` must be an integer >= 2"),
        ({"num_generations": "four"}, "`num_generations` must be an integer"),
        ({"beta": -0.1}, "`beta` must be a number >= 0.0"),
        ({"temperature": 0}, "`temperature` must be a number > 0.0"),
        ({"top_p": 1.5}, "`top_p`"),
        ({"max_completion_length": 0}, "`max_completion_length`"),
        ({"reward_funcs": "subem,bleu"}, r"Unknown reward function\(s\) \['bleu'\]"),
        ({"reward_funcs": ["subem", "f1"], "reward_weights": [1.0]}, "give one weight per reward function"),
        ({"loss_type": "ppo"}, "`loss_type` must be one of grpo, dapo, bnpo, dr_grpo"),
        ({"scale_rewards": "sometimes"}, "`scale_rewards`"),
        ({"epsilon": 0.2, "epsilon_high": 0.1}, "`epsilon_high` must be a number >= 0.2"),
        ({"steps_per_generation": 2, "generation_batch_size": 8}, "not both"),
    ],
)
def test_grpo_argument_errors(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grpo_args(raw)


def test_parser_accepts_grpo_and_rejects_unknown_stage(tiny_qwen3: Path, tmp_path: Path, capsys) -> None:
    register_all()
    register_all()  # idempotent
    from llamafactory.hparams import get_train_args
    from llamafactory.train.tuner import run_exp

    _write_dataset(tmp_path)
    *_, finetuning_args, _ = get_train_args(_lf_args(tiny_qwen3, tmp_path))
    assert finetuning_args.stage == "grpo"
    argv = ["--stage", "grpo", "--do_train", "--model_name_or_path", str(tiny_qwen3), "--dataset", "t_grpo",
            "--template", "qwen3_nothink", "--output_dir", str(tmp_path / "argv"), "--use_cpu"]
    assert get_train_args(argv)[3].stage == "grpo"

    # an unknown stage reaches LLaMA-Factory's own dispatch and error, from YAML (dict) and from argv
    with pytest.raises(ValueError, match="Unknown task: foo"):
        run_exp(_lf_args(tiny_qwen3, tmp_path, stage="foo"))
    with pytest.raises(SystemExit):
        get_train_args([*argv[:1], "foo", *argv[2:]])
    assert "invalid choice: 'foo'" in capsys.readouterr().err


def test_training_args_map_into_grpo_config(tiny_qwen3: Path, tmp_path: Path) -> None:
    register_all()
    from llamafactory.hparams import get_train_args
    from llamafactory.train.tuner import run_exp

    _write_dataset(tmp_path)
    lf = _lf_args(tiny_qwen3, tmp_path, learning_rate=3e-4, max_steps=7, per_device_train_batch_size=4,
                  gradient_accumulation_steps=2, logging_steps=1, seed=11, save_strategy="no", cutoff_len=300)
    _, data_args, training_args, finetuning_args, _ = get_train_args(lf)
    grpo = parse_grpo_args({"num_generations": 8, "beta": 0.04, "reward_funcs": "subem,f1", "reward_weights": "2,1"})
    config = build_grpo_config(training_args, data_args, finetuning_args, grpo)
    assert (config.learning_rate, config.max_steps, config.per_device_train_batch_size) == (3e-4, 7, 4)
    assert (config.gradient_accumulation_steps, config.logging_steps, config.seed) == (2, 1, 11)
    assert config.output_dir == str(tmp_path / "out") and config.use_cpu and config.report_to == []
    assert config.save_strategy == "no" and config.remove_unused_columns is False and config.bf16 is False
    assert (config.num_generations, config.beta, config.reward_weights) == (8, 0.04, [2.0, 1.0])
    assert config.max_prompt_length == 300 and config.shuffle_dataset is True

    # the global batch (3 x 1 x 1 world) cannot hold groups of 4: a clear error before anything loads
    bad = _lf_args(tiny_qwen3, tmp_path, per_device_train_batch_size=3, num_generations=4,
                   output_dir=str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"global batch .* = 3 completions\) to be divisible by num_generations"):
        run_exp(bad)


# ---------------------------------------------------------------- end to end through `qalign train`


@pytest.mark.slow
def test_grpo_trains_through_qalign_train(tiny_qwen3: Path, tmp_path: Path) -> None:
    _write_dataset(tmp_path, answers=["e"])  # a gold the random model earns: rewards vary within a group
    result = _run([*QALIGN, "train", RECIPE, *_tiny(tiny_qwen3, "out/grpo"), "max_steps=3", "num_generations=4",
                   "per_device_train_batch_size=4", "gradient_accumulation_steps=1", "max_completion_length=8",
                   "learning_rate=1e-2", "reward_funcs=subem,format",
                   # the recipe masks truncated completions; the random model never ends one, so nothing would teach
                   "mask_truncated_completions=false"], cwd=tmp_path)
    out = tmp_path / "out/grpo"
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").open()]
    rewards = [row["reward"] for row in log if "reward" in row]
    assert len(rewards) == 3 and all(0.0 <= r <= 2.0 for r in rewards)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert {"rewards/subem/mean", "rewards/format_reward/mean", "reward_std"} <= set(history[0])
    # where each step's seconds went: the generate call lies inside the rollout, each part took some time
    timing = history[0]
    assert 0 < timing["timing/generate_s"] <= timing["timing/rollout_s"] and timing["timing/learn_s"] > 0, timing
    assert (out / "training_reward.png").exists()
    # the prompt TRL sampled from is LLaMA-Factory's qwen3_nothink rendering, as in SFT/predict
    assert "<|im_start|>user\nAnswer with the short answer." in result.stdout + result.stderr
    # the stage prints its training-health verdict once at its end (the CLI hook leaves GRPO to it)
    assert (result.stdout + result.stderr).count("training health (grpo, 3 logged steps): ") == 1, result.stdout

    from safetensors.torch import load_file

    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [t.abs().sum().item() for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and sum(lora_b) > 0, "GRPO never updated the adapter (LoRA B starts at zero)"


@pytest.mark.slow
def test_the_micro_batch_split_leaves_rollouts_and_updates_unchanged(tiny_qwen3: Path, tmp_path: Path) -> None:
    """One rollout of 8 completions learned from as 4 micro-batches of 2 or as one of 8: TRL generates the whole
    batch at once and the DAPO loss divides by the batch's completion tokens, so the rewards are the same and
    Adam's step is the same (the gradient differs only by the accumulation factor, which Adam normalises away):
    fewer, larger learning passes are a free speed-up (bench/RESULTS.md, 2026-12-06: 8 passes were ~40 % of a
    step)."""
    from safetensors.torch import load_file

    _write_dataset(tmp_path, answers=["e"])
    runs = {}
    for name, (rows, accumulation) in {"4x2": (2, 4), "1x8": (8, 1)}.items():
        _run([*QALIGN, "train", RECIPE, *_tiny(tiny_qwen3, f"out/{name}"), "max_steps=2", "num_generations=4",
              f"per_device_train_batch_size={rows}", f"gradient_accumulation_steps={accumulation}",
              "max_completion_length=8", "learning_rate=1e-2", "reward_funcs=subem,format", "seed=7",
              "mask_truncated_completions=false"], cwd=tmp_path)
        history = json.loads((tmp_path / f"out/{name}/trainer_state.json").read_text())["log_history"]
        runs[name] = ([row["reward"] for row in history if "reward" in row],
                      load_file(tmp_path / f"out/{name}/adapter_model.safetensors"))
    (rewards_a, adapter_a), (rewards_b, adapter_b) = runs["4x2"], runs["1x8"]
    assert len(rewards_a) == 2 and rewards_a == pytest.approx(rewards_b, abs=1e-6)
    assert adapter_a.keys() == adapter_b.keys()
    import torch

    for key, tensor in adapter_a.items():
        assert torch.allclose(tensor, adapter_b[key], rtol=1e-3, atol=1e-5), key


def test_launcher_command_names_the_qalign_worker(monkeypatch) -> None:
    register_all()
    import llamafactory.launcher as launcher

    seen = []
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setenv("NPROC_PER_NODE", "2")
    monkeypatch.setattr(sys, "argv", ["llamafactory-cli", "train", "grpo.yaml", "max_steps=1"])
    monkeypatch.setattr(launcher.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or Namespace(returncode=0))
    with pytest.raises(SystemExit):
        launcher.launch()
    assert seen[0][0] == "torchrun" and seen[0][-4:] == ["-m", "qalign.lf.worker", "grpo.yaml", "max_steps=1"]


@pytest.mark.slow
def test_force_torchrun_reaches_grpo_in_every_worker(tiny_qwen3: Path, tmp_path: Path) -> None:
    _write_dataset(tmp_path)
    env = {**os.environ, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # torchrun of this venv
    result = _run([*QALIGN, "train", RECIPE, *_tiny(tiny_qwen3, "out/ddp"), "ddp_backend=gloo", "max_steps=2",
                   "num_generations=4", "per_device_train_batch_size=2", "gradient_accumulation_steps=1",
                   "max_completion_length=8"],
                  cwd=tmp_path, env=env)
    logs = result.stdout + result.stderr
    assert "qalign GRPO stage: rank 0 of 2" in logs and "qalign GRPO stage: rank 1 of 2" in logs
    rewards = [json.loads(line) for line in (tmp_path / "out/ddp/trainer_log.jsonl").open()]
    assert sum("reward" in row for row in rewards) == 2
    assert (tmp_path / "out/ddp/adapter_model.safetensors").exists()


# ---------------------------------------------------------------- web UI


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    """create_ui() (not launched) after register_all(), in a folder of its own (LLaMA-Board writes to cwd)."""
    register_all()
    import llamafactory.webui.interface as interface

    folder = tmp_path_factory.mktemp("webui")
    engines = []

    class RecordingEngine(interface.Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engines.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(interface, "Engine", RecordingEngine)
        demo = interface.create_ui()
    return demo, engines[0], folder


def test_webui_lists_grpo_and_its_arguments(webui) -> None:
    import gradio as gr
    import llamafactory.webui.runner as runner
    from llamafactory.extras.constants import TRAINING_STAGES

    demo, engine, _ = webui
    stage = engine.manager.get_elem_by_id("train.training_stage")
    assert isinstance(stage, gr.Dropdown) and "GRPO" in [choice[0] for choice in stage.choices]
    assert TRAINING_STAGES["GRPO"] == "grpo"
    for name in ("num_generations", "beta", "temperature", "max_completion_length", "reward_funcs"):
        assert engine.manager.get_elem_by_id(f"train.grpo_{name}")._id in demo.blocks  # rendered in the Train tab
    assert runner.Popen.__module__ == "qalign.lf.register"
    # one set of defaults: the web UI starts from the stage's own (TRL's GRPOConfig + qalign's)
    from qalign.grpo.args import GRPO_DEFAULTS

    for name in ("num_generations", "beta", "temperature", "max_completion_length", "loss_type"):
        assert engine.manager.get_elem_by_id(f"train.grpo_{name}").value == GRPO_DEFAULTS[name], name
    assert GRPO_DEFAULTS["num_generations"] == parse_grpo_args({}).num_generations == 8


@pytest.mark.slow
def test_webui_run_trains_grpo_with_qalign_train(webui, tiny_qwen3: Path, monkeypatch) -> None:
    from llamafactory.webui.locales import ALERTS

    _, engine, folder = webui
    monkeypatch.chdir(folder)
    _write_dataset(folder)
    manager = engine.manager
    data = {elem: getattr(elem, "value", None) for elem in manager.get_elem_list()}
    values = {
        "top.lang": "en", "top.model_name": "tiny", "top.model_path": str(tiny_qwen3), "top.finetuning_type": "lora",
        "top.checkpoint_path": [], "top.quantization_bit": "none", "top.template": "qwen3_nothink",
        "top.rope_scaling": "none", "top.booster": "auto", "train.training_stage": "GRPO", "train.dataset_dir": ".",
        "train.dataset": ["t_grpo"], "train.compute_type": "fp32", "train.cutoff_len": 256, "train.batch_size": 4,
        "train.gradient_accumulation_steps": 1, "train.logging_steps": 1, "train.output_dir": "grpo_run",
        "train.extra_args": json.dumps({"max_steps": 2, "use_cpu": True, "preprocessing_num_workers": 1}),
        "train.grpo_num_generations": 2, "train.grpo_max_completion_length": 8, "train.grpo_beta": 0.05,
        "train.grpo_reward_funcs": ["em", "format"],
    }
    for elem_id, value in values.items():
        data[manager.get_elem_by_id(elem_id)] = value
    preview = list(engine.runner.preview_train(data))[-1]
    assert "qalign train" in next(iter(preview.values())) and "--num_generations 2" in next(iter(preview.values()))

    outputs = list(engine.runner.run_train(data))
    final = outputs[-1][manager.get_elem_by_id("train.output_box")]
    assert final.startswith(ALERTS["info_finished"]["en"]), final[-3000:]
    out = folder / "saves/tiny/lora/grpo_run"
    assert "num_generations: 2" in (out / "training_args.yaml").read_text()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert "rewards/em/mean" in history[0] and "kl" in history[0]  # beta > 0: KL against the adapter-free base
    assert (out / "adapter_model.safetensors").exists()


# the sweep (any stage, on a validation slice; the GRPO grid file) is tested in tests/test_sweep.py


def test_a_skipped_step_names_its_micro_batches_in_output_dir(tiny_qwen3: Path, tmp_path: Path) -> None:
    """A real step of the stage: its two micro-batches are recorded, and the guard dumps them when it skips."""
    register_all()
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    class PoisonFirstStep(TrainerCallback):  # runs before the guard (the stage appends the guard after these)
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                next(p for p in model.parameters() if p.grad is not None).grad.fill_(float("nan"))

    _write_dataset(tmp_path)
    run_exp({**_lf_args(tiny_qwen3, tmp_path, max_steps=2, per_device_train_batch_size=4,
                        gradient_accumulation_steps=2, num_generations=4, max_completion_length=6,
                        mask_truncated_completions=True, save_strategy="no"), "finetuning_type": "lora"},
            callbacks=[PoisonFirstStep()])
    dump = json.loads((tmp_path / "out/nonfinite_step_1.json").read_text())
    assert dump["step"] == 1 and dump["first_micro_batch_with_nonfinite_grad"] is None  # poisoned after backward
    assert [mb["micro_batch"] for mb in dump["micro_batches"]] == [0, 1]
    for mb in dump["micro_batches"]:
        assert mb["rows"] == 4 and len(mb["completion_tokens_kept"]) == 4 and mb["logps_nonfinite"] == 0
        assert mb["rows_fully_masked"] == sum(n == 0 for n in mb["completion_tokens_kept"])
        assert mb["grads_finite_after"] is True and isinstance(mb["loss"], float)
    assert not (tmp_path / "out/nonfinite_step_2.json").exists()


def test_a_gradient_that_breaks_in_the_backward_is_named_with_its_rows(tiny_qwen3: Path, tmp_path: Path) -> None:
    """A NaN born inside micro-batch 0's backward (as on the H200): the dump names the parameters and keeps the
    rows' token ids, read from the prepared micro-batch (the trainer's own `inputs` are the raw dataset rows)."""
    register_all()
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    class NaNInFirstBackward(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                param = next(p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)
                self.handle = param.register_hook(lambda grad: grad * float("nan"))

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            if getattr(self, "handle", None) is not None:
                self.handle.remove()
                self.handle = None

    _write_dataset(tmp_path)
    run_exp({**_lf_args(tiny_qwen3, tmp_path, max_steps=2, per_device_train_batch_size=4,
                        gradient_accumulation_steps=2, num_generations=4, max_completion_length=6,
                        save_strategy="no"), "finetuning_type": "lora"}, callbacks=[NaNInFirstBackward()])
    dump = json.loads((tmp_path / "out/nonfinite_step_1.json").read_text())
    assert dump["first_micro_batch_with_nonfinite_grad"] == 0
    first = dump["micro_batches"][0]
    assert first["grads_finite_after"] is False and first["nonfinite_params"] >= 1
    assert "lora_B" in first["first_nonfinite"][0]["name"] and first["first_nonfinite"][0]["nan"] > 0
    assert len(first["completion_ids"]) == 4 and len(first["prompt_tail_ids"]) == 4
    assert "completion_ids" not in dump["micro_batches"][1]  # only the micro-batch where it broke
    assert not (tmp_path / "out/nonfinite_step_2.json").exists()
