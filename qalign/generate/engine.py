"""Batched generation for predict, mining, the teacher and the demo: one loaded model, `transformers`' `generate`.

What makes it fast without vLLM (bench/RESULTS.md has the measurements):
- prompts are sorted by length (longest first) and packed into batches under a token budget, so a batch holds
  rows of nearly equal length: little padding in prefill, and as many rows as memory allows for the decode loop,
  whose cost per step hardly depends on the row count;
- N samples of one prompt share its prefill: the prompt runs once and its KV cache is copied to the N rows, which
  may each go on with their own suffix first (the teacher's forced answers after each sample's reasoning);
- the model is loaded once per command, not once per batch or per call.
A batch that runs out of GPU memory makes the engine halve its budget and re-plan the prompts not yet done, so a
too-large setting costs a retry, never rows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from qalign.errors import QalignError

# prompt + new tokens per batch, summed over rows: where the auto budget stops (one H200 holds far more, but
# past a few hundred rows the decode step gains nothing) and what a CPU run uses (memory, not speed, bounds it)
MAX_AUTO_TOKENS = 1 << 19
CPU_TOKENS = 32768
GPU_MEMORY_SHARE = 0.5  # of the free memory at start, for the batch's KV cache and prefill activations


@dataclass(frozen=True)
class BatchLimits:
    """How big a batch may get: `tokens` (rows x (longest prompt + new tokens); None: sized from free memory)
    and `rows` (rows per `generate` call)."""

    tokens: int | None = None
    rows: int = 512

    def __post_init__(self) -> None:
        if (self.tokens is not None and self.tokens < 1) or self.rows < 1:
            raise QalignError(f"batch limits must be positive, got tokens={self.tokens}, rows={self.rows}.")


def token_cost(model: Any) -> int:
    """Bytes of GPU memory one token of a batch takes: its KV cache in every layer plus the widest prefill
    activations (MLP input, gate, up and product) it passes through."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = 2 if next(model.parameters()).dtype in _half_types() else 4
    kv = 2 * layers * heads * head_dim * width
    activations = (3 * getattr(config, "intermediate_size", 4 * config.hidden_size) + 6 * config.hidden_size) * width
    return kv + activations


def _half_types() -> tuple[Any, ...]:
    import torch

    return torch.float16, torch.bfloat16


def auto_tokens(model: Any) -> int:
    """The batch token budget for `model` on its device: a share of free GPU memory, or CPU_TOKENS."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_TOKENS
    free, _ = torch.cuda.mem_get_info(device)
    return max(1024, min(MAX_AUTO_TOKENS, int(free * GPU_MEMORY_SHARE / token_cost(model))))


def plan_batches(lengths: Sequence[int], new_tokens: int, tokens: int, rows: int, copies: int = 1) -> list[list[int]]:
    """Prompt indices in batches: longest first (an out-of-memory shows on the first batch), each batch at most
    `rows` rows and `tokens` rows x (its longest prompt + `new_tokens`); every prompt brings `copies` rows."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches:
            batch = batches[-1]
            size = (len(batch) + 1) * copies
            if size <= rows and size * (lengths[batch[0]] + new_tokens) <= tokens:
                batch.append(index)
                continue
        batches.append([index])
    return batches


RowProcessors = Callable[[list[tuple[int, int]]], list[Any]]  # (prompt index, copy) per row -> LogitsProcessors
Stopping = Callable[[int], Any]  # a batch's row count -> a fresh stopping criterion (e.g. qalign.generate.answer_stop)


class BatchGenerator:
    """Runs a loaded causal LM over many prompts, batch by batch (see the module docstring)."""

    def __init__(self, model: Any, pad_id: int, limits: BatchLimits | None = None, setting: str = "batch_tokens"):
        self.model, self.pad_id = model, pad_id
        self.limits = limits or BatchLimits()
        self.tokens = self.limits.tokens or auto_tokens(model)
        self.setting = setting  # the key users lower when even one row does not fit (named in the error)

    def generate(self, prompts: Sequence[Sequence[int]], generation: dict[str, Any], *, copies: int = 1,
                 suffixes: Sequence[Sequence[Sequence[int]]] | None = None, processors: RowProcessors | None = None,
                 stopping: Stopping | None = None, desc: str = "generating",
                 progress: bool | None = None) -> list[list[list[int]]]:
        """New token ids for each prompt, `copies` lists each, in prompt order. `generation` holds `generate`'s
        keyword arguments (max_new_tokens, do_sample, eos_token_id, ...); `processors` builds extra logits
        processors for a batch from its rows (per-row sampling noise). With `suffixes` (per prompt, `copies` token
        lists, empty ones allowed), copy j continues prompt i + suffixes[i][j]. Generated ids run to
        `max_new_tokens` or to the first eos (or where `stopping`'s criterion ends the row), padded after it."""
        new_tokens = int(generation.get("max_new_tokens") or 0)
        if new_tokens < 1:
            raise QalignError("generation needs max_new_tokens >= 1.")
        lengths = [len(p) for p in prompts]
        if lengths and min(lengths) < 1:
            raise QalignError(f"prompt {lengths.index(0)} is empty after encoding; every prompt needs a token.")
        if suffixes is not None and (len(suffixes) != len(prompts) or any(len(s) != copies for s in suffixes)):
            raise ValueError(f"suffixes: need {copies} token lists for each of the {len(prompts)} prompts")
        # a row's suffix is budgeted like new tokens
        planned = new_tokens + max((len(t) for rows in suffixes or [] for t in rows), default=0)
        results: list[list[list[int]] | None] = [None] * len(prompts)
        disable = None if progress is None else not progress
        with tqdm(total=len(prompts), desc=desc, unit=" prompts", disable=disable, file=sys.stderr) as bar:
            pending = plan_batches(lengths, planned, self.tokens, self.limits.rows, copies)
            while pending:
                batch = pending.pop(0)
                try:
                    outputs = self._batch([prompts[i] for i in batch], batch, generation, copies, processors,
                                          None if suffixes is None else [suffixes[i] for i in batch], stopping)
                except _OutOfMemory as oom:
                    self._lower_budget(batch, oom, lengths, planned, copies)
                    remaining = batch + [index for later in pending for index in later]
                    pending = [[remaining[j] for j in part] for part in plan_batches(
                        [lengths[i] for i in remaining], planned, self.tokens, self.limits.rows, copies)]
                    continue
                for position, index in enumerate(batch):
                    results[index] = outputs[position * copies:(position + 1) * copies]
                bar.update(len(batch))
        return [r or [] for r in results]

    def _lower_budget(self, batch: list[int], oom: _OutOfMemory, lengths: Sequence[int], new_tokens: int,
                      copies: int) -> None:
        """Halve the budget below what a batch that ran out of memory used (the rest of the run is re-planned)."""
        width = lengths[batch[0]] + new_tokens
        if len(batch) == 1:
            raise GenerationOutOfMemory(
                f"out of GPU memory generating one prompt of {lengths[batch[0]]} tokens + {new_tokens} new"
                f"{f' x {copies} samples' if copies > 1 else ''} ({oom}): even one row does not fit, so lowering "
                f"`{self.setting}` cannot help. Shorten the prompts (cutoff_len, fewer passages), lower "
                "max_new_tokens or the sample count, or use a GPU with more memory.") from None
        self.tokens = max(width * copies, len(batch) * copies * width // 2)
        print(f"qalign: out of GPU memory at {len(batch) * copies} rows x {width} tokens; splitting the batch and "
              f"lowering `{self.setting}` to {self.tokens} for the rest of this run (set it there to skip the retry)",
              file=sys.stderr)

    def _batch(self, prompts: list[Sequence[int]], indices: list[int], generation: dict[str, Any], copies: int,
               processors: RowProcessors | None, suffixes: list[Sequence[Sequence[int]]] | None,
               stopping: Stopping | None = None) -> list[list[int]]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        device = next(self.model.parameters()).device
        kwargs = dict(generation)
        if processors is not None:
            rows = [(index, copy) for index in indices for copy in range(copies)]
            kwargs["logits_processor"] = LogitsProcessorList(processors(rows))
        if stopping is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([stopping(len(prompts) * copies)])
        # every row ends with its prompt's last token + its suffix; what comes before is prefilled once per prompt
        tails = [[[p[-1], *(suffixes[i][j] if suffixes else ())] for j in range(copies)]
                 for i, p in enumerate(prompts)]
        cache = None
        try:
            with torch.inference_mode():
                if copies > 1 or suffixes is not None:
                    ids, mask = _left_padded([p[:-1] for p in prompts], self.pad_id, device)
                    cache = self._prefill(ids, mask, copies)
                if cache is None:  # one plain generate over whole rows (prompt + suffix)
                    whole = [[*p[:-1], *tail] for p, rows in zip(prompts, tails, strict=True) for tail in rows]
                    ids, mask = _left_padded(whole, self.pad_id, device)
                else:  # the rows go on from the shared prefill: last prompt token + suffix, padded in between
                    tail_ids, tail_mask = _left_padded([tail for rows in tails for tail in rows], self.pad_id, device)
                    ids = torch.cat([ids.repeat_interleave(copies, dim=0), tail_ids], dim=1)
                    mask = torch.cat([mask.repeat_interleave(copies, dim=0), tail_mask], dim=1)
                    kwargs["past_key_values"] = cache
                output = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        except torch.OutOfMemoryError as exc:
            kwargs.pop("past_key_values", None)
            cache = None  # free the prefill's KV before emptying the allocator's cache
            torch.cuda.empty_cache()
            raise _OutOfMemory(str(exc).split(".")[0]) from None
        return output[:, ids.shape[1]:].tolist()

    def _prefill(self, ids: Any, mask: Any, copies: int) -> Any:
        """Run each prompt (all but its last token) once and copy its KV cache to its `copies` rows; None where
        there is nothing to prefill or the model cannot take a cache object (then plain generate)."""
        from transformers import DynamicCache

        if ids.shape[1] < 1:
            return None
        cache = DynamicCache(config=self.model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        try:
            self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1)
        except TypeError:  # a remote-code model without logits_to_keep / cache objects
            return None
        cache.batch_repeat_interleave(copies)
        return cache


def _left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    """(input ids, attention mask) of token rows, padded on the left to the longest."""
    import torch

    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


class GenerationOutOfMemory(QalignError):
    """Even one row does not fit in GPU memory (the message says what to shorten)."""


class _OutOfMemory(Exception):
    """A batch did not fit (raised inside `_batch`, handled by splitting)."""


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """`ids` up to (not including) the first stop token."""
    stops = set(stop_ids)
    end = next((i for i, token in enumerate(ids) if token in stops), len(ids))
    return list(ids[:end])
