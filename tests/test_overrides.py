"""qalign.overrides: `key=value` writing for LLaMA-Factory and dotted assignments (OmegaConf dotlist)."""

from __future__ import annotations

import pytest

from qalign.errors import QalignError
from qalign.overrides import apply_dotlist, override_args


def test_override_args_writes_yaml_values_once_per_key() -> None:
    args = override_args({"bf16": True, "x": None, "lr": 1e-5}, {"x": [1, 2], "bf16": False})
    assert args == ["bf16=false", "x=[1, 2]", "lr=1e-05"]


def test_apply_dotlist_sets_nested_keys_and_replaces_values() -> None:
    spec = {"top_k": 5, "overrides": {"sft": {"max_steps": 3, "lr": 1}}, "methods": ["sft", "dpo"]}
    out = apply_dotlist(spec, ["overrides.sft.max_steps=7", "train_args.bf16=true", "methods=[kto]",
                               "lr=1e-5", "empty=", "overrides.dpo={beta: 0.2}", "overrides.sft={max_steps: 1}"])
    assert out == {"top_k": 5, "overrides": {"sft": {"max_steps": 1}, "dpo": {"beta": 0.2}}, "methods": ["kto"],
                   "train_args": {"bf16": True}, "lr": 1e-5, "empty": None}
    assert spec["overrides"]["sft"] == {"max_steps": 3, "lr": 1}  # the input is not modified


@pytest.mark.parametrize(("assignment", "message"), [("top_k.x=1", "`top_k` is not a mapping"),
                                                     ("top_k", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE")])
def test_apply_dotlist_errors_say_what_to_write(assignment: str, message: str) -> None:
    with pytest.raises(QalignError, match=message):
        apply_dotlist({"top_k": 5}, [assignment])


def test_deep_merge_merges_mappings_at_every_depth_and_replaces_the_rest() -> None:
    from qalign.overrides import deep_merge

    base = {"sft": {"max_steps": 200, "predict": {"max_new_tokens": 32, "top_p": 1.0}}, "seeds": [1, 2]}
    over = {"sft": {"predict": {"max_new_tokens": 256}}, "seeds": [3], "dpo": {"pref_ftx": 0.5}}
    assert deep_merge(base, over) == {"sft": {"max_steps": 200, "predict": {"max_new_tokens": 256, "top_p": 1.0}},
                                      "seeds": [3], "dpo": {"pref_ftx": 0.5}}
    assert base["sft"]["predict"]["max_new_tokens"] == 32  # the inputs stay as they were
