"""Sample N completions per question with LLaMA-Factory's chat template, cached in a resumable jsonl sidecar.

Prompts are encoded with the template training uses (`template.encode_oneturn`), so mined samples answer exactly
the prompt the model will be trained on. Randomness is keyed by (seed, question id, sample index): every row of a
batch adds Gumbel noise from its own generator and is decoded greedily, which samples from softmax(logits / T)
after top-p. A question's samples therefore do not depend on its batch neighbours, on `--batch-size`, or on
whether the run was interrupted (left padding can still move logits in the last bits, so a token at a near-tie
may rarely differ between batchings).

Cache `DIR/data/NAME.samples.jsonl`: line 1 holds the sampling settings, then one line per finished question
{id, question, answers, prompt, samples: [{text, subem, em, f1}]}, appended and flushed per question. A rerun
skips cached ids; an unterminated last line (a killed run) is discarded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from qalign.converters.job import ConvertJob
from qalign.converters.prompts import render_prompt
from qalign.errors import QalignError
from qalign.evaluators.metrics import (
    exact_match,
    f1_score,
    score_all,
    substring_exact_match,
)
from qalign.paths import jsonl_file
from qalign.records import LoadStats
from qalign.text import answer_words as extracted_words
from qalign.text import extract_answer

Strategy = Literal["em", "subem", "f1"]
STRATEGIES = ("em", "subem", "f1")
DEFAULT_MARGIN = 0.3  # strategy em: a negative's F1 is at least this far below the positive's
CACHE_FORMAT = 1


@dataclass(frozen=True)
class SamplingConfig:
    """How samples are drawn; every field except the batch sizes and `device` is recorded in the cache header."""

    model: str
    adapter: str | None = None
    template: str = "smollm2"
    num_samples: int = 8
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 32
    seed: int = 42
    batch_size: int = 256  # questions per chunk: sampled together, then appended to the cache in order
    batch_tokens: int | None = None  # the engine's budget per generate call (None: sized from free GPU memory)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.num_samples < 1 or self.batch_size < 1:
            raise QalignError("need --temperature > 0, 0 < --top-p <= 1, --num-samples >= 1 and --batch-size >= 1.")

    def header(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self).items() if k not in ("batch_size", "batch_tokens", "device")}
        return {"qalign_samples": CACHE_FORMAT, **settings}


@dataclass(frozen=True)
class Question:
    """One question to sample for: its stable id, gold aliases and the rendered prompt."""

    id: str
    question: str
    answers: list[str]
    prompt: str


def is_correct(text: str, answers: list[str], strategy: Strategy = "em", threshold: float = 0.5) -> bool:
    """`em`: the answer equals a gold alias; `subem`: some gold alias occurs in it; `f1`: token F1 >= threshold."""
    if strategy == "em":
        return exact_match(text, answers) == 1.0
    if strategy == "subem":
        return substring_exact_match(text, answers) == 1.0
    if strategy == "f1":
        return f1_score(text, answers) >= threshold
    raise ValueError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")


def check_margin(margin: float) -> float:
    """`margin` itself when it is in (0, 1] (F1 lies in [0, 1], and a tie is no preference)."""
    if not 0 < margin <= 1:
        raise ValueError(f"margin {margin} is outside (0, 1]: F1 lies in [0, 1] and a tie is no preference")
    return margin


def answer_words(text: str) -> int:
    """Length of a sample's answer in normalised words: the tokens F1 counts (`<think>` dropped, no articles)."""
    return extracted_words(extract_answer(text))


_EPS = 1e-9  # F1s are ratios of small integers: a difference equal to the margin must count as reaching it


def near(f1: float, best: float, margin: float) -> bool:
    """Whether a sample's `f1` lies within `margin` of the chosen one's `best`: too close to be a clear negative."""
    return f1 > best - margin + _EPS


def mean_words(total: int, count: int) -> float | None:
    """A mean of `answer_words` for the summaries and the registry (None when there is nothing to average)."""
    return round(total / count, 2) if count else None


def default_cache_path(dataset_dir: str | Path, name: str) -> Path:
    return jsonl_file(f"{name}.samples", dataset_dir)


def read_cache(path: str | Path, header_key: str = "qalign_samples",
               ) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], int]:
    """(header or None, finished rows by id, byte length of the complete prefix) of a sample cache (or of a
    `qalign teach` file: header_key `qalign_teacher`).

    An unterminated last line is what a killed writer leaves: it is ignored (and cut off by the next append).
    """
    path = Path(path)
    if not path.exists():
        return None, {}, 0
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    header, rows = None, {}
    for lineno, line in enumerate(data[:complete].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise QalignError(
                f"{path}:{lineno}: malformed sample line ({exc}). Delete that line to regenerate it.") from None
        if isinstance(obj, dict) and header_key in obj:
            header = obj
        elif isinstance(obj, dict) and isinstance(obj.get("id"), str) and isinstance(obj.get("samples"), list):
            rows[obj["id"]] = obj
        else:
            raise QalignError(f"{path}:{lineno}: expected {{id, samples, ...}}. Delete that line to regenerate it.")
    return header, rows, complete


def row_seed(seed: int, question_id: str, index: int) -> int:
    """A 63-bit generator seed for sample `index` of `question_id`."""
    digest = hashlib.sha256(f"{seed}\0{question_id}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _row_noise(seeds: list[int]):
    """A LogitsProcessor adding Gumbel noise, one generator per row: greedy decoding then samples."""
    import torch
    from transformers import LogitsProcessor

    class RowGumbelNoise(LogitsProcessor):
        def __init__(self) -> None:
            self.generators: list[torch.Generator] | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.generators is None:
                self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in seeds]
            noise = torch.empty_like(scores, dtype=torch.float32)
            for row, generator in enumerate(self.generators):
                noise[row].exponential_(generator=generator)
            # -log(Exp(1)) is Gumbel(0, 1); the clamp keeps log finite; -inf logits (top-p) stay -inf
            return scores - noise.clamp_(min=1e-20).log().to(scores.dtype)

    return RowGumbelNoise()


class Sampler:
    """A model + tokenizer + template loaded the LLaMA-Factory way (LoRA adapters applied), sampling through
    qalign's batch engine (length-sorted batches, each prompt's prefill shared by its N samples)."""

    def __init__(self, config: SamplingConfig, keep_think: bool = False) -> None:
        # LLaMA-Factory's INFO logs would bury the progress bar and the summary; LLAMAFACTORY_VERBOSITY=INFO shows them
        os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
        from qalign.generate.engine import BatchGenerator, BatchLimits
        from qalign.lf.inference import InferenceSetup

        args: dict[str, Any] = {"model_name_or_path": config.model, "template": config.template,
                                "finetuning_type": "lora"}
        if config.adapter:
            args["adapter_name_or_path"] = config.adapter
        try:
            self.setup = InferenceSetup.load(args, device=None if config.device == "auto" else config.device)
            self.model = self.setup.load_model()
        except (OSError, ValueError) as exc:
            raise QalignError(f"cannot load --model {config.model} (--adapter {config.adapter}, --template "
                              f"{config.template}): {exc} Check the paths, or the template name in LLaMA-Factory's "
                              "data/template.py.") from None
        self.config = config
        self.tokenizer, self.stop_ids = self.setup.tokenizer, self.setup.stop_ids
        # special tokens dropped when decoding; with keep_think, <think>/</think> stay (Qwen3-style tokenizers)
        think = set(self.tokenizer.convert_tokens_to_ids(["<think>", "</think>"]))
        self.drop_ids = set(self.tokenizer.all_special_ids) - think if keep_think else None
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self.generator = BatchGenerator(self.model, self.pad_id, BatchLimits(tokens=config.batch_tokens),
                                        setting="--batch-tokens")

    def sample(self, questions: list[Question], prefix: str = "") -> list[list[str]]:
        """`num_samples` completions for each question; row (question, j) draws its noise from row_seed. A
        `prefix` starts every answer (it is part of the prompt and of the returned text)."""
        start = self.tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
        texts = self.continue_ids([self.setup.encode(q.prompt) + start for q in questions], [q.id for q in questions],
                                  self.config.num_samples, self.config.max_new_tokens)
        return [[(prefix + text).strip() for text in rows] for rows in texts]

    def continue_ids(self, prompts: list[list[int]], keys: list[str], copies: int, max_new_tokens: int,
                     suffixes: list[list[list[int]]] | None = None) -> list[list[str]]:
        """`copies` decoded continuations of each token-id prompt (copy j after suffixes[i][j], when given); copy
        j of prompt i draws its noise from row_seed(seed, keys[i], j)."""
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        cfg = self.config

        def processors(rows: list[tuple[int, int]]) -> list[Any]:
            warpers: list[Any] = [TemperatureLogitsWarper(cfg.temperature)]
            if cfg.top_p < 1:
                warpers.append(TopPLogitsWarper(cfg.top_p))
            return [*warpers, _row_noise([row_seed(cfg.seed, keys[i], j) for i, j in rows])]

        generation = {"do_sample": False, "max_new_tokens": max_new_tokens, "eos_token_id": self.stop_ids,
                      "pad_token_id": self.pad_id,
                      "use_model_defaults": False}  # the model's sampling defaults must not switch do_sample on
        outputs = self.generator.generate(prompts, generation, copies=copies, suffixes=suffixes,
                                          processors=processors, progress=False)
        return [[self._decode(ids) for ids in rows] for rows in outputs]

    def _decode(self, ids: list[int]) -> str:
        from qalign.generate.engine import cut_at_stop

        ids = cut_at_stop(ids, self.stop_ids)
        if self.drop_ids is None:
            return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return self.tokenizer.decode([i for i in ids if i not in self.drop_ids], skip_special_tokens=False).strip()


def _cache_row(question: Question, texts: list[str]) -> dict[str, Any]:
    samples = [{"text": text, **score_all(text, question.answers)} for text in texts]
    return {"id": question.id, "question": question.question, "answers": question.answers,
            "prompt": question.prompt, "samples": samples}


def _check_header(path: Path, header: dict[str, Any] | None, rows: dict, wanted: dict[str, Any]) -> None:
    if header is None and rows:
        raise QalignError(f"{path}:1: no settings header, so new samples could not match the cached ones. "
                          "Move the file away (or pass it with --samples and no --model to only read it).")
    if header is not None and header != wanted:
        diff = ", ".join(f"{k}: {header.get(k)!r} -> {v!r}" for k, v in wanted.items() if header.get(k) != v)
        raise QalignError(f"{path}:1: cached samples were drawn with other settings ({diff}). Use the cached "
                          "settings, another --dataset/--samples file, or delete the file to start afresh.")


def ensure_samples(questions: list[Question], cache: str | Path,
                   config: SamplingConfig | None) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
    """The cache's settings header and the sample texts by question id: read from `cache`, generating (and
    appending) what is missing."""
    cache = Path(cache)
    header, rows, complete = read_cache(cache)
    for q in questions:
        if q.id in rows and rows[q.id].get("prompt") != q.prompt:
            raise QalignError(f"{cache}: question {q.id} was sampled with another prompt. Use the same --prompt and "
                              "--top-k as that run, or another --samples file.")
    missing = [q for q in questions if q.id not in rows]
    if missing and config is None:
        raise QalignError(f"{cache}: {len(missing)} of {len(questions)} questions have no cached samples "
                          f"(e.g. {missing[0].id}). Pass --model to generate them.")
    if config is not None and (missing or header is not None):
        _check_header(cache, header, rows, config.header())  # asking for other settings must not reuse old samples
    if missing:
        if rows:
            print(f"qalign: resuming {cache}: {len(questions) - len(missing)} of {len(questions)} questions cached")
        rows.update(_generate(missing, cache, config, complete, write_header=header is None))
        header = config.header()
    return header, {q.id: [s["text"] for s in rows[q.id]["samples"]] for q in questions}


def _generate(missing: list[Question], cache: Path, config: SamplingConfig, complete: int,
              write_header: bool) -> dict[str, dict[str, Any]]:
    """Sample `missing` batch by batch, appending each finished question to `cache`; return the new rows by id."""
    sampler = Sampler(config)
    new: dict[str, dict[str, Any]] = {}
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("ab") as handle, tqdm(total=len(missing), desc="sampling", unit=" q", disable=None) as bar:
        handle.truncate(complete)  # drop a partial line left by a killed run
        if write_header:
            handle.write((json.dumps(config.header()) + "\n").encode())
        for start in range(0, len(missing), config.batch_size):
            batch = missing[start:start + config.batch_size]
            for question, texts in zip(batch, sampler.sample(batch), strict=True):
                new[question.id] = row = _cache_row(question, texts)
                handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(len(batch))
    return new


def prompted_questions(records: list[Any], template: str, top_k: int, source: str, keyed: str) -> list[Question]:
    """Records with their rendered prompts; ids must be unique, since they key `keyed` (a cache, a teacher file)."""
    questions = [Question(r.id, r.question, r.answers, render_prompt(template, r, top_k)) for r in records]
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise QalignError(f"{source}: id {dup!r} is used by several questions; {keyed} keyed by id. "
                          "Make the ids unique or drop the 'id' field.")
    return questions


def load_questions(job: ConvertJob) -> tuple[list[Question], LoadStats]:
    """Records of the job's source with their rendered prompts (ids must be unique: they key the cache)."""
    template, records, stats = job.load()
    return prompted_questions(records, template, job.top_k, job.source, "sample caches are"), stats


@dataclass(frozen=True)
class SampledQuestions:
    """Questions of a source with their N sampled answers (from the cache, generating what is missing)."""

    questions: list[Question]
    stats: LoadStats
    cache: Path
    header: dict[str, Any] | None  # the cache's sampling settings
    texts: dict[str, list[str]]

    def entry_metadata(self) -> dict[str, Any]:
        """What a dataset built from these samples records in its dataset_info.json `qalign` block."""
        return {"samples": str(self.cache), "sampling": self.header}


def sample_questions(job: ConvertJob, sampling: SamplingConfig | None,
                     samples: str | Path | None) -> SampledQuestions:
    """The shared first half of `convert preference` and `convert kto`: load, then sample or read the cache."""
    questions, stats = load_questions(job)
    cache = Path(samples) if samples else default_cache_path(job.dataset_dir, job.name)
    return SampledQuestions(questions, stats, cache, *ensure_samples(questions, cache, sampling))
