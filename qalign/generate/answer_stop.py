"""Stop a reasoning row at its answer: once it emitted `</think>`, then an answer line ending in a newline.

The think_then_answer prompt asks for `<think>...</think>` and then only the short answer; what a row writes after
that line is never scored as the answer, so generating it only costs time (a CoT predict ran to 256 tokens).
Rows that never close a think block run on to their EOS or max_new_tokens as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qalign.text import extract_answer

CLOSE = "</think>"


class AnswerStop:
    """A `generate` stopping criterion over one batch of `rows` rows (one per batch: it keeps each row's state).

    `token_text(id)` is a token's text (special tokens included); only the newest token of each row is read per
    step, so the cost per step is one dict lookup per row."""

    def __init__(self, token_text: Callable[[int], str], rows: int) -> None:
        self.token_text = token_text
        self.tail = [""] * rows  # the last characters before `</think>` was seen (it may span tokens)
        self.after: list[str | None] = [None] * rows  # the text after `</think>`, once seen
        self.done = [False] * rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        for row, token in enumerate(input_ids[:, -1].tolist()):
            if not self.done[row]:
                self.done[row] = self._feed(row, self.token_text(token))
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _feed(self, row: int, piece: str) -> bool:
        after = self.after[row]
        if after is None:
            seen = self.tail[row] + piece
            at = seen.find(CLOSE)
            if at < 0:
                self.tail[row] = seen[-(len(CLOSE) - 1):]
                return False
            after = seen[at + len(CLOSE):]
        else:
            after += piece
        self.after[row] = after
        body = after.lstrip()
        if "\n" not in body:
            return False
        # an answer, then the end of its line; `The answer is:` alone on its line is not an answer yet
        return extract_answer(CLOSE + body.rsplit("\n", 1)[0]) is not None


def answer_stop(tokenizer: Any) -> Callable[[int], AnswerStop]:
    """A factory of AnswerStop criteria (one per batch, given its row count) for `tokenizer`'s tokens."""
    texts: dict[int, str] = {}

    def token_text(token: int) -> str:
        if token not in texts:
            texts[token] = tokenizer.decode([token], skip_special_tokens=False)
        return texts[token]

    return lambda rows: AnswerStop(token_text, rows)
