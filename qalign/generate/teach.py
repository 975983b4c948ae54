"""`qalign teach`: a teacher answers the training questions with reasoning, N samples each, into the teacher file
that `qalign convert cot --teacher` reads.

Teachers: a local model (HF folder + optional LoRA adapter, sampled through qalign's batch engine with the same
per-row reproducible noise as preference mining: rejection-sampling self-distillation, STaR-style), or an
OpenAI-compatible chat endpoint (`qalign.generate.endpoint`). File: line 1 `{"qalign_teacher": 1, settings...}`,
then one line per finished question `{id, question, answers, samples: [{output, f1}]}`, appended and flushed as each
question finishes. A rerun with the same settings skips finished ids (an unterminated last line, left by a killed
run, is cut off); other settings are refused, so one file never mixes two teachers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from qalign.converters.cot import COT_PROMPT, DEFAULT_MIN_F1, TEACHER_HEADER, split_output
from qalign.converters.prompts import declared_marker, load_prompt, prompt_name
from qalign.errors import QalignError
from qalign.evaluators.metrics import f1_score
from qalign.generate.endpoint import DEFAULT_KEY_ENV, EndpointConfig
from qalign.generate.sampling import Question, SamplingConfig, prompted_questions, read_cache
from qalign.io import atomic_write_json
from qalign.paths import summary_path
from qalign.records import load_records
from qalign.text import extract_answer

FORMAT = 1
THINK_PREFIX = "<think>\n"


def teacher_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the file's first line records: the teacher and every option that changes its answers."""
    if args.url:
        teacher: dict[str, Any] = {"url": args.url, "served_model": args.served_model}
    else:
        teacher = {"model": args.model, "adapter": args.adapter, "template": args.template, "seed": args.seed,
                   "prefix": args.prefix, "answer_tokens": args.answer_tokens}
    # the marker is part of what the prompt asks (the prompt's name alone does not say whether its text declares it)
    return {TEACHER_HEADER: FORMAT, "teacher": teacher, "prompt": prompt_name(args.prompt),
            "answer_marker": declared_marker(load_prompt(args.prompt)), "top_k": args.top_k,
            "num_samples": args.num_samples, "temperature": args.temperature, "top_p": args.top_p,
            "max_new_tokens": args.max_new_tokens}


def keeps(output: str, answers: list[str], min_f1: float) -> tuple[float, bool]:
    """(answer F1, whether `convert cot` would keep it: reasoning present and F1 >= min_f1)."""
    reasoning, answer = split_output(output)
    f1 = f1_score(answer, answers) if answer else 0.0
    return f1, bool(reasoning) and f1 >= min_f1


def load_teach_questions(args: argparse.Namespace) -> list[Question]:
    """The input's questions with their think_then_answer prompts (ids unique: they key the resume)."""
    template = load_prompt(args.prompt)
    records, _ = load_records(args.input, split=args.split, limit=args.limit)
    return prompted_questions(records, template, args.top_k, args.input, "the teacher file is")


def _local_answers(args: argparse.Namespace, questions: list[Question]) -> Iterator[tuple[Question, list[str]]]:
    """Answers chunk by chunk (the model is loaded here, before the teacher file is opened)."""
    from qalign.generate.sampling import Sampler

    config = SamplingConfig(model=args.model, adapter=args.adapter, template=args.template,
                            num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                            batch_tokens=args.batch_tokens, device=args.device)
    sampler = Sampler(config, keep_think=True)
    return _local_chunks(args, sampler, questions)


def _local_chunks(args: argparse.Namespace, sampler: Any, questions: list[Question],
                  ) -> Iterator[tuple[Question, list[str]]]:
    marker = declared_marker(load_prompt(args.prompt))
    for start in range(0, len(questions), sampler.config.batch_size):
        chunk = questions[start:start + sampler.config.batch_size]
        texts = sampler.sample(chunk, prefix=args.prefix)
        if args.answer_tokens > 0 and args.prefix.lstrip().startswith("<think>"):
            texts = _force_answers(sampler, chunk, texts, args.answer_tokens, marker)
        yield from zip(chunk, [[first_line_answer(text) for text in rows] for rows in texts], strict=True)


def first_line_answer(text: str) -> str:
    """`<think>R</think>` + the lines after it up to the first that holds an answer (a marker alone on its line
    keeps the next one): the prompt asks for a short answer only, and a small model often keeps writing (another
    question, the passages) after it."""
    if "</think>" not in text:
        return text
    head, tail = text.rsplit("</think>", 1)
    lines = [line.strip() for line in tail.strip().splitlines() if line.strip()]
    end = next((i for i in range(len(lines)) if extract_answer("\n".join(lines[:i + 1])) is not None), None)
    return f"{head}</think>\n\n" + "\n".join(lines[:end + 1]) if end is not None else text


def _force_answers(sampler: Any, questions: list[Question], texts: list[list[str]], tokens: int,
                   marker: str | None = None) -> list[list[str]]:
    """Budget forcing: a sample whose reasoning did not close within --max-new-tokens (or left no answer after
    `</think>`) gets `</think>` (and the prompt's answer `marker`) appended and up to `tokens` more tokens of
    answer, through the same engine. Every sample of a question with such a sample goes on from the question's one
    shared prefill (its own reasoning as the suffix); the answers of samples that needed none are dropped. A sample
    whose unclosed reasoning already states the marker and an answer needs none."""
    def is_open(text: str) -> bool:
        return extract_answer(text) is None

    needy = [i for i, rows in enumerate(texts) if any(map(is_open, rows))]
    if not needy:
        return texts
    close = "\n</think>\n\n" + (marker or "")
    heads = [[texts[i][j].rsplit("</think>", 1)[0].rstrip() + close for j in range(len(texts[i]))] for i in needy]
    suffixes = [[sampler.tokenizer.encode(head, add_special_tokens=False) for head in rows] for rows in heads]
    prompts = [sampler.setup.encode(questions[i].prompt) for i in needy]
    answers = sampler.continue_ids(prompts, [f"{questions[i].id}\0answer" for i in needy], len(texts[needy[0]]),
                                   tokens, suffixes)
    out = [list(rows) for rows in texts]
    for i, rows, answer in zip(needy, heads, answers, strict=True):
        for j, head in enumerate(rows):
            if is_open(texts[i][j]):
                out[i][j] = head + answer[j]
    return out


def _endpoint_answers(args: argparse.Namespace, questions: list[Question]) -> Iterator[tuple[Question, list[str]]]:
    from qalign.generate.endpoint import EndpointTeacher

    teacher = EndpointTeacher(EndpointConfig(
        url=args.url, served_model=args.served_model, api_key_env=args.api_key_env, num_samples=args.num_samples,
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, timeout=args.timeout,
        retries=args.retries, concurrency=args.concurrency))
    return ((questions[index], texts) for index, texts in teacher.ask_all([q.prompt for q in questions]))


def teach(args: argparse.Namespace) -> dict[str, int]:
    """Ask the teacher for every unfinished question, appending each to `args.output`; return the counts."""
    output = Path(args.output)
    settings = teacher_settings(args)
    header, done, complete = read_cache(output, TEACHER_HEADER)
    if header is not None and header != settings:
        diff = ", ".join(f"{k}: {header.get(k)!r} -> {v!r}" for k, v in settings.items() if header.get(k) != v)
        raise QalignError(f"{output}:1: this teacher file was written with other settings ({diff}). Use those "
                          "settings, another --output, or delete the file to start afresh.")
    if header is None and done:
        raise QalignError(f"{output}:1: no `{TEACHER_HEADER}` settings line. Move the file away or pick another "
                          "--output.")
    questions = load_teach_questions(args)
    missing = [q for q in questions if q.id not in done]
    counts = {"questions": len(questions), "cached": len(questions) - len(missing), "asked": 0, "samples": 0,
              "keep": sum(any(keeps(s["output"], done[q.id]["answers"], args.min_f1)[1] for s in done[q.id]["samples"])
                          for q in questions if q.id in done)}
    if done and missing:
        print(f"qalign: resuming {output}: {counts['cached']} of {len(questions)} questions done", file=sys.stderr)
    if not missing:
        return counts
    answers = _endpoint_answers(args, missing) if args.url else _local_answers(args, missing)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("ab") as handle, tqdm(total=len(questions), initial=counts["cached"], desc="teaching",
                                           unit=" q", disable=None, file=sys.stderr) as bar:
        handle.truncate(complete)  # drop a partial line left by a killed run
        if header is None:
            handle.write((json.dumps(settings) + "\n").encode())
        for question, texts in answers:
            scored = [(text, *keeps(text, question.answers, args.min_f1)) for text in texts]
            row = {"id": question.id, "question": question.question, "answers": question.answers,
                   "samples": [{"output": text, "f1": round(f1, 4)} for text, f1, _ in scored]}
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
            counts["asked"] += 1
            counts["samples"] += len(texts)
            counts["keep"] += any(kept for _, _, kept in scored)
            bar.update(1)
            bar.set_postfix_str(f"keep@F1>={args.min_f1:g} {counts['keep']}/{bar.n} "
                                f"({100 * counts['keep'] / max(bar.n, 1):.0f}%)")
    return counts


def run_teach(args: argparse.Namespace) -> int:
    if bool(args.url) == bool(args.model):
        raise QalignError("pass exactly one teacher: --model DIR (a local model) or --url URL (an OpenAI-compatible "
                          "endpoint, e.g. http://127.0.0.1:8000/v1).")
    counts = teach(args)
    atomic_write_json(summary_path(args.output), {"teacher": teacher_settings(args), "min_f1": args.min_f1, **counts})
    print(f"wrote {args.output}: {counts['questions']} questions ({counts['cached']} already done, "
          f"{counts['asked']} asked, {counts['samples']} samples drawn now); {counts['keep']} have a sample with "
          f"reasoning and answer F1 >= {args.min_f1:g}. Next: qalign convert cot --teacher {args.output} ...")
    return 0


def add_teach_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `teach`: teacher reasoning + answers for `convert cot`."""
    parser = subparsers.add_parser(
        "teach", help="sample reasoning + answers from a teacher (local model or OpenAI-compatible server) for "
                      "`convert cot`", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, metavar="FILE_OR_HF_ID", help="raw QA records (as convert reads)")
    parser.add_argument("--output", required=True, metavar="TEACHER.jsonl", help="teacher file (resumed if present)")
    parser.add_argument("--prompt", default=COT_PROMPT, help="prompt template (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="passages per prompt (default: 5)")
    parser.add_argument("--limit", type=int, metavar="N", help="first N usable questions only")
    parser.add_argument("--split", default="train", help="split of a Hub dataset (default: train)")
    parser.add_argument("--num-samples", type=int, default=4, metavar="N", help="answers per question (4)")
    parser.add_argument("--temperature", type=float, default=0.7, metavar="T", help="sampling temperature (0.7)")
    parser.add_argument("--top-p", type=float, default=0.95, metavar="P", help="nucleus sampling (0.95)")
    parser.add_argument("--max-new-tokens", type=int, default=256, metavar="K", help="tokens per answer (256)")
    parser.add_argument("--min-f1", type=float, default=DEFAULT_MIN_F1, metavar="TAU",
                        help="F1 of the running keep-rate shown (what convert cot keeps by default: %(default)s)")
    local = parser.add_argument_group("local teacher")
    local.add_argument("--model", help="model folder or hub id")
    local.add_argument("--adapter", help="LoRA adapter folder(s) on --model, comma-separated")
    local.add_argument("--template", default="smollm2", help="LLaMA-Factory chat template (default: %(default)s)")
    local.add_argument("--prefix", default=THINK_PREFIX, help="text every answer starts with (default: '<think>\\n'"
                                                              " so the model reasons first; '' for none)")
    local.add_argument("--answer-tokens", type=int, default=32, metavar="A",
                       help="budget forcing: a sample still reasoning after --max-new-tokens gets </think> and up to A "
                            "tokens of answer (default: 32; 0: off)")
    local.add_argument("--seed", type=int, default=42, help="samples depend on (seed, question id) (42)")
    local.add_argument("--batch-size", type=int, default=64, metavar="B", help="questions per chunk (64)")
    local.add_argument("--batch-tokens", type=int, metavar="T", help="engine budget per generate call")
    local.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    remote = parser.add_argument_group("OpenAI-compatible endpoint")
    remote.add_argument("--url", help="API base, e.g. http://127.0.0.1:8000/v1 (qalign api, vLLM, SGLang, hosted)")
    remote.add_argument("--served-model", metavar="NAME", help="model name the server serves (default: its only one)")
    remote.add_argument("--api-key-env", default=DEFAULT_KEY_ENV, metavar="VAR",
                        help="environment variable holding the key (default: %(default)s); never pass a key itself")
    remote.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds per request (120)")
    remote.add_argument("--retries", type=int, default=4, help="retries with backoff on errors that pass (4)")
    remote.add_argument("--concurrency", type=int, default=8, metavar="C", help="requests in flight at most (8)")
    parser.set_defaults(func=run_teach)
    return parser
