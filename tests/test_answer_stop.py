"""CoT rows stop at their answer line (qalign.generate.answer_stop through the batch engine); nothing else changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qalign.generate.answer_stop import AnswerStop, answer_stop
from qalign.generate.engine import BatchGenerator, BatchLimits


def _feed(pieces: list[str]) -> int | None:
    """How many tokens a row of these token texts runs before AnswerStop ends it (None: never)."""
    stop = AnswerStop(lambda token: pieces[token], rows=1)
    for step in range(len(pieces)):
        if bool(stop(torch.tensor([[step]]), None)[0]):
            return step + 1
    return None


def test_the_answer_line_after_think_ends_a_row() -> None:
    assert _feed(["<think>", "x", "</think>", "\n", "\n", " Paris", " France", "\n", "more"]) == 8
    assert _feed(["</", "thi", "nk>", "Paris\n", "x"]) == 4  # `</think>` across tokens, answer and newline in one
    assert _feed(["</think>Par", "is", " \n"]) == 3
    assert _feed(["<think>", "a\n", "b\n", "Paris", "\n"]) is None  # the think block never closed
    assert _feed(["</think>", "  ", "\n", "Paris"]) is None  # no answer line yet


class _Script:
    """Forces each row to write its script (then EOS), whatever the model would say: a fixed, known text."""

    def __init__(self, scripts: list[list[int]], eos: int) -> None:
        self.scripts, self.eos, self.start = scripts, eos, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.scripts):
            forced[row, script[step] if step < len(script) else self.eos] = 0.0
        return forced


@pytest.mark.slow  # loads the tiny model
def test_the_engine_stops_cot_rows_early_with_the_same_prefix(tiny_qwen3: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    texts = ["<think>The second passage says it.</think>\nParis\nIt is the capital of France, as the passage says.",
             "<think>No passage closes this thought and it goes" + " on and" * 30,
             "<think>short</think> 1969\n"]
    scripts = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    prompts = [tokenizer.encode(f"question {i}", add_special_tokens=False) for i in range(len(texts))]
    greedy = {"max_new_tokens": 40, "do_sample": False, "pad_token_id": eos, "eos_token_id": [eos]}
    engine = BatchGenerator(model, pad_id=eos, limits=BatchLimits(tokens=10_000))

    def run(stopping):  # the prompts are of one length, so they share one batch and the script lines up
        return [rows[0] for rows in engine.generate(prompts, greedy, processors=lambda rows: [_Script(scripts, eos)],
                                                    stopping=stopping, progress=False)]

    full, stopped = run(None), run(answer_stop(tokenizer))
    decoded = [tokenizer.decode([t for t in row if t != eos]) for row in stopped]  # `</think>` is special here
    assert decoded[0] == "<think>The second passage says it.</think>\nParis\n"  # the stop: the answer's newline
    assert decoded[2] == "<think>short</think> 1969\n"
    for whole, cut in zip(full, stopped, strict=True):
        kept = [token for token in cut if token != eos]
        assert whole[:len(kept)] == kept  # the same text, cut short
    assert len([t for t in stopped[0] if t != eos]) < len([t for t in full[0] if t != eos])
    assert stopped[1] == full[1] and len(full[1]) == 40  # no closed think block: it runs to max_new_tokens


def test_a_marker_alone_on_its_line_waits_for_the_answer_line() -> None:
    from qalign.generate.answer_stop import AnswerStop

    pieces = ["<think>", "the passage says paris", "</think>", "\n\n", "The answer is:", "\n", "Paris", "\n"]
    stop = AnswerStop(lambda token: pieces[token], rows=1)
    states = [stop._feed(0, piece) for piece in pieces]
    assert states == [False] * 7 + [True]  # not at the marker's newline: at the end of the answer's line
    same_line = AnswerStop(lambda token: token, rows=1)
    assert [same_line._feed(0, p) for p in ("</think>", "The answer is: Paris", "\n")] == [False, False, True]
