"""The GRPO fields of LLaMA-Factory's web UI: the widgets, the accordion that holds them on the Train tab, and the
training keys they give the runner. qalign/lf/register.py patches them in (`create_train_tab`, `Runner`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from qalign.grpo.args import GRPO_DEFAULTS as default
from qalign.grpo.args import LOSS_TYPES
from qalign.grpo.rewards import DEFAULT_REWARDS, REWARD_FUNCS


def grpo_components() -> dict[str, Any]:
    """The GRPO widgets, keyed by their element name on the Train tab (`train.grpo_*`)."""
    # render=False: created before the Train tab so its buttons take them as inputs; rendered after it.
    # Defaults are the stage's own (qalign.grpo.args.GRPO_DEFAULTS: TRL's GRPOConfig + QALIGN_DEFAULTS).
    return {
        "grpo_num_generations": gr.Slider(2, 64, value=default["num_generations"], step=1, label="num_generations",
                                          render=False,
                                          info="completions per prompt; batch size x grad accum must divide by it"),
        "grpo_beta": gr.Slider(0, 1, value=default["beta"], step=0.001, label="beta", render=False,
                               info="KL coefficient; 0 loads no reference model"),
        "grpo_temperature": gr.Slider(0.05, 2, value=default["temperature"], step=0.05, label="temperature",
                                      render=False),
        "grpo_max_completion_length": gr.Slider(1, 4096, value=default["max_completion_length"], step=1,
                                                label="max_completion_length", render=False),
        "grpo_reward_funcs": gr.Dropdown(choices=list(REWARD_FUNCS), value=list(DEFAULT_REWARDS), multiselect=True,
                                         label="reward_funcs", render=False),
        "grpo_loss_type": gr.Dropdown(choices=list(LOSS_TYPES), value=default["loss_type"], label="loss_type",
                                      render=False),
    }


def grpo_train_args(manager: Any, data: dict[Any, Any]) -> dict[str, Any]:
    """The training keys the GRPO widgets hold, for the runner's args when the stage is GRPO."""

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


def grpo_accordion(components: dict[str, Any], stage: Any, stage_name: str) -> Any:
    """Render `components` in a "GRPO (qalign)" accordion, shown while the `stage` dropdown names `stage_name`."""
    from llamafactory.extras.constants import TRAINING_STAGES

    with gr.Accordion("GRPO (qalign)", open=True, visible=False) as grpo_tab:
        with gr.Row():
            for component in components.values():
                component.render()
    stage.change(lambda value: gr.Accordion(visible=TRAINING_STAGES.get(value) == stage_name),
                 [stage], [grpo_tab], queue=False)
    return grpo_tab
