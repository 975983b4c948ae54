"""The demo's page logic (demo/logic.py) and its engine (demo/engine.py) on the tiny Qwen3 model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from demo import logic
from demo.engine import Engine
from tests.test_demo_fixtures import RECORDS, TEMPLATE, build_tiny_adapter, write_eval_set


def test_config_defaults_env_recipe_and_args(tmp_path: Path) -> None:
    config = logic.parse_config([], environ={})
    assert (config.model, config.template) == ("models/smollm2-135m-instruct", "smollm2")
    assert (config.outputs, config.data, config.prompt) == (Path("outputs"), Path("data"), "answer_only")
    assert config.trust_remote_code is False and config.max_new_tokens == 256 and config.max_input_chars == 8000
    env = {"QALIGN_DEMO_MODEL": "m", "QALIGN_DEMO_TRUST_REMOTE_CODE": "1", "QALIGN_DEMO_MAX_NEW_TOKENS": "8"}
    config = logic.parse_config(["--template", "qwen3"], environ=env)
    assert (config.model, config.template, config.trust_remote_code, config.max_new_tokens) == ("m", "qwen3", True, 8)
    recipe = tmp_path / "predict.yaml"
    recipe.write_text("model_name_or_path: Qwen/Qwen3-8B-AWQ\ntemplate: qwen3_nothink\n")
    config = logic.parse_config(["--recipe", str(recipe), "--template", "qwen3"], environ={})
    assert (config.model, config.template) == ("Qwen/Qwen3-8B-AWQ", "qwen3")  # a flag beats the recipe
    with pytest.raises(logic.DemoError, match="cannot read the recipe"):
        logic.parse_config(["--recipe", str(tmp_path / "missing.yaml")], environ={})
    with pytest.raises(logic.DemoError, match="invalid int value: 'many'"):
        logic.parse_config([], environ={"QALIGN_DEMO_MAX_INPUT_CHARS": "many"})
    with pytest.raises(logic.DemoError, match="unrecognized arguments: --bogus"):
        logic.parse_config(["--bogus"], environ={})
    with pytest.raises(logic.DemoError, match="must be positive"):
        logic.parse_config(["--max-new-tokens", "0"], environ={})
    assert config.threads == logic.default_threads() >= 1
    assert logic.parse_config([], environ={"QALIGN_DEMO_THREADS": "3"}).threads == 3


def test_discover_adapters(tmp_path: Path) -> None:
    for folder, base in [("m/sft", "models/m"), ("m/dpo", "/abs/other-model/"), ("m/sft/checkpoint-5", None)]:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    (tmp_path / "m" / "predict-base").mkdir()  # no adapter_config.json: not an adapter
    adapters = logic.discover_adapters(tmp_path)
    assert [a.label for a in adapters] == ["m/dpo", "m/sft", "m/sft/checkpoint-5"]
    assert adapters[1].path == tmp_path / "m" / "sft"
    assert [logic.base_mismatch(a, "models/m") for a in adapters] == [True, False, False]
    assert logic.discover_adapters(tmp_path / "missing") == []


def test_prompt_of_an_eval_record_matches_the_converted_instruction(tmp_path: Path) -> None:
    """Picking a record and generating sends exactly the instruction `qalign convert eval` wrote."""
    path = write_eval_set(tmp_path)
    assert logic.list_eval_sets(tmp_path / "data") == [path]  # not_eval.json has no answers: left out
    assert logic.eval_set_prompt(path) == "answer_only"
    rows = json.loads(path.read_text())
    records = logic.load_eval_records(path)
    assert records[0]["passages"].splitlines()[1] == "Paris (city) | Paris is the capital city of France."
    assert records[1]["passages"] == "| Paris is the capital | largest city of France."
    for row, record in zip(rows, records, strict=True):
        assert record["answers"] == row["answers"]
        prompt = logic.build_prompt("answer_only", record["question"], record["passages"], max_chars=10_000)
        assert prompt == row["instruction"]


def test_build_prompt_inputs_and_caps() -> None:
    prompt = logic.build_prompt("answer_only", "  who? ", "T | one\n\nPassage 2 (U): two\nthree", 10_000)
    assert "Question: who?\n\nPassage 1 (T): one\nPassage 2 (U): two\nPassage 3: three\n" in prompt
    assert logic.build_prompt("answer_only", "who?", "", 10_000).startswith("Answer the question from your own")
    with pytest.raises(logic.DemoError, match="Type a question"):
        logic.build_prompt("answer_only", "  ", "x", 10_000)
    with pytest.raises(logic.DemoError, match=r"at most 100 \(--max-input-chars\)"):
        logic.build_prompt("answer_only", "who?", "x" * 200, 100)


def test_small_helpers() -> None:
    assert logic.parse_golds(" Jane Austen | Austen || ") == ["Jane Austen", "Austen"]
    assert logic.scores("It was Jane Austen.", ["Jane Austen"]) == {"subem": 1.0, "em": 0.0, "f1": pytest.approx(2 / 3)}
    assert logic.scores("x", []) is None
    assert logic.escape_markdown("# *a*\n[b](c)") == "\\# \\*a\\*  \n\\[b\\]\\(c\\)"
    assert logic.prompt_choices("closed_book")[0] == "closed_book" and "answer_only" in logic.prompt_choices("x")
    seen: list[str] = []
    update = logic.throttle(seen.append, interval=60)
    for text in ["a", "ab", "abc"]:
        update(text)
    assert seen == ["a"]


def test_demo_scores_the_extracted_answer_and_says_which() -> None:
    # a CoT answer: scored after the marker (old code: EM 0 with the marker kept, or "" for an unclosed block)
    assert logic.scores("<think>\nPassage 1. The answer is: Jane Austen", ["Jane Austen"]) == \
        {"subem": 1.0, "em": 1.0, "f1": 1.0}
    assert logic.scored_answer_line("<think>r</think>The answer is: Jane Austen") == "scored answer: Jane Austen"
    assert logic.scored_answer_line("<think>\nstill thinking").startswith("no answer to score")
    assert logic.scored_answer_line("  Jane Austen ") is None  # the output is the answer: nothing to add


@pytest.fixture(scope="module")
def engine(tiny_qwen3: Path) -> Engine:
    return Engine(str(tiny_qwen3), TEMPLATE)


def _greedy(model: torch.nn.Module, engine: Engine, prompt: str, max_new_tokens: int) -> str:
    ids = torch.tensor([engine.encode(prompt)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=engine.stop_token_ids,
                         pad_token_id=engine.tokenizer.pad_token_id)
    return engine.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_engine_streams_the_same_answers_as_plain_generate(engine: Engine, tiny_qwen3: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = build_tiny_adapter(tiny_qwen3, tmp_path / "sft")
    prompt = logic.build_prompt("answer_only", RECORDS[0].question, "", 10_000)
    assert engine.tokenizer.decode(engine.encode(prompt)).startswith("<|im_start|>user\n" + prompt)
    streamed: list[str] = []
    base = engine.generate("base", None, prompt, 12, on_text=streamed.append)
    tuned = engine.generate("sft", adapter, prompt, 12)
    again = engine.generate("base", None, prompt, 12)  # the adapter is off again for the base model
    assert base.error is None and tuned.error is None
    assert 0 < base.new_tokens <= 12 and base.seconds > 0 and base.first_token_seconds is not None
    assert streamed and streamed[-1] == base.text  # streamed as growing prefixes of the final answer
    assert all(longer.startswith(shorter) for shorter, longer in zip(streamed, streamed[1:], strict=False))

    reference = AutoModelForCausalLM.from_pretrained(tiny_qwen3).eval()
    assert base.text == again.text == _greedy(reference, engine, prompt, 12)
    assert tuned.text == _greedy(PeftModel.from_pretrained(reference, adapter).eval(), engine, prompt, 12)
    assert tuned.text != base.text


def test_engine_reports_errors_instead_of_raising(engine: Engine, tiny_qwen3: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    missing = engine.generate("gone", tmp_path / "gone", "q", 4)
    assert missing.error == (f"gone: adapter could not be loaded ({tmp_path / 'gone'}: no adapter_config.json; "
                             "the folder is missing or incomplete). Retrain it or pick another one.")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "adapter_config.json").write_text("{not json")
    assert engine.generate("wrong", wrong, "q", 4).error.startswith(f"wrong: adapter could not be loaded ({wrong}: ")
    assert engine.generate("base", None, "q", 4).error is None  # the engine still works afterwards

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine.model, "generate", out_of_memory)
    answer = engine.generate("base", None, "q", 4)
    assert answer.error and "out of memory" in answer.error and "Lower 'max new tokens'" in answer.error


def test_engine_reloads_a_retrained_adapter(engine: Engine, tiny_qwen3: Path, tmp_path: Path) -> None:
    import os

    def retrain(folder: Path, seed: int) -> None:
        build_tiny_adapter(tiny_qwen3, folder, seed=seed)
        for path in folder.glob("adapter_*"):  # file-system clocks may be coarse: make the change visible
            os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10 * seed))

    question = "who wrote it"
    dpo = build_tiny_adapter(tiny_qwen3, tmp_path / "dpo", seed=3)
    sft = build_tiny_adapter(tiny_qwen3, tmp_path / "sft", seed=1)
    dpo_text = engine.generate("dpo", dpo, question, 8).text
    seed1_text = engine.generate("sft", sft, question, 8).text
    assert engine.generate("sft", sft, question, 8).text == seed1_text  # cached
    retrain(sft, seed=2)  # beside another adapter: the old one is deleted, the new one loaded
    seed2_text = engine.generate("sft", sft, question, 8).text
    assert seed2_text != seed1_text and len(engine.adapters) == 2
    assert engine.generate("dpo", dpo, question, 8).text == dpo_text

    engine._reset()
    assert engine.generate("sft", sft, question, 8).text == seed2_text
    retrain(sft, seed=1)  # the only adapter: the engine restarts from a clean base model
    assert engine.generate("sft", sft, question, 8).text == seed1_text and len(engine.adapters) == 1
