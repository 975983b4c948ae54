"""One base model with every selected LoRA adapter attached, generating one answer at a time with streaming.

Why one base model and not one `PeftModel` per adapter: the base weights are loaded once (for Qwen3-8B that is
the difference between one and N copies in GPU memory); adapters are added with `load_adapter`, picked with
`set_adapter`, and the base model answers inside `disable_adapter()`. A lock serialises generations, since the
active adapter is state shared by every browser session of the page.

Loading goes through LLaMA-Factory (`get_infer_args`, `load_tokenizer`, `get_template_and_fix_tokenizer`,
`load_model`) and the prompt is encoded with `template.encode_oneturn`, as `qalign train predict.yaml` does.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from qalign.generate.engine import BatchGenerator, GenerationOutOfMemory


@dataclass
class Answer:
    """One model's answer to one prompt, with its timings; `error` is set (and `text` partial) when it failed."""

    label: str
    text: str = ""
    seconds: float = 0.0
    first_token_seconds: float | None = None
    new_tokens: int = 0
    hit_cap: bool = False
    error: str | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


class _CountingStreamer(TextIteratorStreamer):
    """A `TextIteratorStreamer` that also counts generated tokens and times the first one."""

    def __init__(self, tokenizer: Any, started: float) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.started = started
        self.new_tokens = 0
        self.first_token_seconds: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.new_tokens += int(value.numel())
            if self.first_token_seconds is None:
                self.first_token_seconds = time.perf_counter() - self.started
        super().put(value)


class _Cancelled(StoppingCriteria):
    """Stops generation once the page stops reading (a rerun or a closed tab)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> bool:
        return self.event.is_set()


class AdapterError(Exception):
    """An adapter folder that is gone, incomplete, or does not fit the base model."""


def describe_error(exc: BaseException, label: str) -> str:
    """A message for the page: what failed, and what to do about it."""
    if isinstance(exc, torch.OutOfMemoryError | GenerationOutOfMemory):
        return (f"{label}: out of memory while generating. Lower 'max new tokens', shorten the passages, "
                "compare fewer models at once, or use a smaller model.")
    if isinstance(exc, AdapterError):
        return f"{label}: adapter could not be loaded ({exc}). Retrain it or pick another one."
    return f"{label}: {type(exc).__name__}: {exc}"


class Engine:
    """The base model, its tokenizer and chat template, and the adapters loaded so far (by folder)."""

    def __init__(
        self, model: str, template: str, trust_remote_code: bool = False, threads: int | None = None
    ) -> None:
        from qalign.lf.inference import InferenceSetup

        started = time.perf_counter()
        self.model_path, self.template_name, self.threads = model, template, threads
        self.setup = InferenceSetup.load({"model_name_or_path": model, "template": template,
                                          "trust_remote_code": trust_remote_code, "infer_backend": "huggingface"})
        self.tokenizer, self.stop_token_ids = self.setup.tokenizer, self.setup.stop_ids
        self.tokenizer.padding_side = "left"
        self.lock = threading.Lock()
        self._load_base()
        self.load_seconds = time.perf_counter() - started

    def _load_base(self) -> None:
        self.model: Any = self.setup.load_model()
        self.adapters: dict[str, tuple[str, float]] = {}  # resolved folder -> (peft adapter name, files' mtime)
        self._loaded = 0

    def _reset(self) -> None:
        """Reload a clean base model: a failed adapter load may leave half-injected LoRA layers behind."""
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._load_base()

    def _attach(self, folder: Path) -> str:
        """Load the adapter in `folder` once (again if its files changed, e.g. retrained); return its peft name."""
        from peft import PeftModel

        if not (folder / "adapter_config.json").is_file():
            raise AdapterError(f"{folder}: no adapter_config.json; the folder is missing or incomplete")
        key = str(folder.resolve())
        stamp = max(path.stat().st_mtime for path in folder.glob("adapter_*"))
        if key in self.adapters:
            name, loaded_stamp = self.adapters[key]
            if loaded_stamp == stamp:
                return name
            if len(self.adapters) == 1:
                self._reset()  # peft keeps pointing at a deleted last adapter: start from a clean base instead
            else:
                del self.adapters[key]
                self.model.set_adapter(next(iter(self.adapters.values()))[0])  # never delete the active one
                self.model.delete_adapter(name)
        name = f"adapter_{self._loaded}"  # folder labels hold '/' and '.', which peft names may not
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name, is_trainable=False)
        except Exception as exc:
            self._reset()
            raise AdapterError(f"{folder}: {type(exc).__name__}: {exc}") from exc
        self.model.eval()
        self.adapters[key] = (name, stamp)
        self._loaded += 1
        return name

    def encode(self, prompt: str) -> list[int]:
        """Prompt token ids as training and prediction encode them."""
        return self.setup.encode(prompt)

    @contextlib.contextmanager
    def _active(self, adapter: Path | None) -> Iterator[None]:
        """Make the base model (adapter None) or one adapter the one that generates."""
        if adapter is not None:
            name = self._attach(adapter)  # may replace self.model (the first adapter wraps it in a PeftModel)
            self.model.set_adapter(name)
            yield
        elif hasattr(self.model, "disable_adapter"):
            with self.model.disable_adapter():
                yield
        else:
            yield

    def generate(
        self,
        label: str,
        adapter: Path | None,
        prompt: str,
        max_new_tokens: int,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Greedy answer of the base model (adapter None) or of one adapter, streamed into `on_text`.

        `seconds` times the generation only; loading an adapter the first time it is used is not counted.
        """
        answer = Answer(label=label)
        with self.lock:
            try:
                with self._active(adapter):
                    self._stream(answer, self.encode(prompt), max_new_tokens, on_text)
            except Exception as exc:  # shown in the page; StopException (a rerun) is not an Exception here
                if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
                    torch.cuda.empty_cache()
                answer.error = describe_error(exc, label)
        return answer

    def _stream(
        self,
        answer: Answer,
        prompt_ids: list[int],
        max_new_tokens: int,
        on_text: Callable[[str], None] | None,
    ) -> None:
        started = time.perf_counter()
        streamer = _CountingStreamer(self.tokenizer, started)
        cancel = threading.Event()
        failure: list[BaseException] = []

        def work() -> None:
            previous_threads = torch.get_num_threads()
            try:
                if self.threads:
                    torch.set_num_threads(self.threads)  # set where generate runs; restored below
                # qalign's generation engine, as predict and mining use it (one row: no batching to do)
                BatchGenerator(self.model, self.tokenizer.pad_token_id).generate([prompt_ids], {
                    "max_new_tokens": max_new_tokens, "do_sample": False, "eos_token_id": self.stop_token_ids,
                    "pad_token_id": self.tokenizer.pad_token_id, "streamer": streamer,
                    "stopping_criteria": StoppingCriteriaList([_Cancelled(cancel)]),
                }, progress=False)
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)
                streamer.end()
            finally:
                torch.set_num_threads(previous_threads)

        thread = threading.Thread(target=work, name="demo-generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                answer.text += piece
                if on_text is not None and piece:
                    on_text(answer.text)
        finally:
            cancel.set()  # a no-op when generation ended by itself; otherwise it stops at the next token
            thread.join()
            answer.seconds = time.perf_counter() - started
        answer.new_tokens = streamer.new_tokens
        answer.hit_cap = streamer.new_tokens >= max_new_tokens
        answer.first_token_seconds = streamer.first_token_seconds
        if failure:
            raise failure[0]
