"""A tokenizer, chat template and model loaded the way LLaMA-Factory's predict loads them, and prompts encoded the
way training encodes them (one user turn through the template). Preference/KTO mining and the demo page use it, so
both see exactly the prompt the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class InferenceSetup:
    """LLaMA-Factory's parsed inference arguments, the fixed tokenizer, its template and the template's stop ids."""

    model_args: Any
    finetuning_args: Any
    tokenizer: Any
    template: Any
    stop_ids: list[int]  # eos plus the template's stop words, as LLaMA-Factory's chat engine stops

    @classmethod
    def load(cls, args: dict[str, Any], device: str | None = None) -> InferenceSetup:
        """Parse `args` (model_name_or_path, template, adapter_name_or_path, ...) and load tokenizer + template;
        `device` pins the model to one device (default: LLaMA-Factory's device map)."""
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_tokenizer

        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        if device is not None:
            model_args.device_map = {"": device}
        tokenizer = load_tokenizer(model_args)["tokenizer"]
        template = get_template_and_fix_tokenizer(tokenizer, data_args)
        return cls(model_args, finetuning_args, tokenizer, template, template.get_stop_token_ids(tokenizer))

    def load_model(self) -> Any:
        """The model (with its LoRA adapters, if `args` named any) for generation."""
        from llamafactory.model import load_model

        return load_model(self.tokenizer, self.model_args, self.finetuning_args, is_trainable=False)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of `prompt` as the user turn, up to where the assistant's answer starts."""
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
        return self.template.encode_oneturn(self.tokenizer, messages)[0]
