"""`qalign quantize awq`: a local model -> an AWQ checkpoint (GEMM, 4-bit, zero point) calibrated on our QA prompts.

The output has Qwen3-8B-AWQ's format (`quantization_config` {quant_method awq, bits 4, group_size 128, zero_point,
version gemm}) and loads through transformers / LLaMA-Factory like it. Calibration text is qalign's own prompts (plus
answers where known), never a download: a converted dataset (`data/NAME.json` rows with "instruction") or a raw QA
file rendered with a prompt template. AutoAWQ does the work; `qalign.awq.compat` supplies its Qwen3 fix.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qalign.errors import QalignError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CALIB = REPO / "data" / "sample" / "nq-sample.train.jsonl"
GROUP_SIZES = (32, 64, 128)  # what AutoAWQ's Triton GEMM kernels accept
PROVENANCE = "qalign_quantize.json"


@dataclass
class Calibration:
    """Calibration examples: (prompt, answer) pairs and where they came from."""

    source: str
    pairs: list[tuple[str, str]] = field(default_factory=list)


def _read_config(model_dir: Path) -> dict[str, Any]:
    if not model_dir.is_dir():
        raise QalignError(f"{model_dir}: model folder not found. Pass a local Hugging Face model folder to --model.")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise QalignError(f"{model_dir}: no config.json, so not a Hugging Face model folder. Pass the folder that "
                          "holds config.json and the weights (e.g. one written by `qalign model`).")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QalignError(f"{config_path}:{exc.lineno}: malformed JSON ({exc.msg}).") from None
    if config.get("quantization_config"):
        raise QalignError(f"{config_path}: the model is already quantized "
                          f"({config['quantization_config'].get('quant_method', '?')}). Pass the unquantized model.")
    return config


def check_group_size(config: dict[str, Any], group_size: int, source: str = "config.json") -> None:
    """Every quantized linear's input width (hidden, attention output, intermediate) must divide by the group size."""
    hidden = config.get("hidden_size")
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    widths = {"hidden_size": hidden, "num_attention_heads*head_dim": heads * head_dim if heads and head_dim else None,
              "intermediate_size": config.get("intermediate_size")}
    widths = {name: value for name, value in widths.items() if isinstance(value, int)}
    bad = {name: value for name, value in widths.items() if value % group_size}
    if bad:
        fits = [size for size in GROUP_SIZES if all(value % size == 0 for value in widths.values())]
        hint = f"use --group-size {max(fits)}" if fits else "this model cannot use AutoAWQ's GEMM kernels"
        listed = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise QalignError(f"{source}: {listed} not divisible by --group-size {group_size}; {hint}.")


def load_calibration(path: Path, *, limit: int, top_k: int = 5, prompt: str = "answer_only") -> Calibration:
    """Up to `limit` (prompt, answer) pairs from a converted dataset (rows with "instruction") or a raw QA file."""
    from qalign.io import iter_json_records

    calibration = Calibration(source=str(path))
    first = next(iter_json_records(path), None)
    if first is None:
        raise QalignError(f"{path}: no rows. Pass a converted dataset (data/NAME.json) or a raw QA file to --calib.")
    if "instruction" in first[1]:
        for lineno, row in iter_json_records(path):
            if len(calibration.pairs) >= limit:
                break
            text = row.get("instruction")
            if not isinstance(text, str) or not text.strip():
                raise QalignError(f"{path}:{lineno}: 'instruction' must be a non-empty string (converted dataset rows "
                                  "look like {instruction, input, output}). Fix the row or re-run `qalign convert`.")
            extra = row.get("input")
            answer = row.get("output", row.get("chosen", ""))
            text = f"{text}\n{extra}" if isinstance(extra, str) and extra.strip() else text
            calibration.pairs.append((text, answer if isinstance(answer, str) else ""))
        return calibration
    from qalign.converters.prompts import load_prompt, render_prompt
    from qalign.records import load_records

    template = load_prompt(prompt)
    records, stats = load_records(str(path), limit=limit)
    if not records:
        raise QalignError(f"{path}: no usable QA records (read {stats.read}; skipped: {stats.skipped_no_question} "
                          f"without question, {stats.skipped_no_answer} without answers, e.g. "
                          f"{', '.join(stats.skipped_locations) or '-'}).")
    calibration.pairs = [(render_prompt(template, record, top_k), record.answers[0]) for record in records]
    return calibration


def encode_calibration(tokenizer: Any, pairs: list[tuple[str, str]], max_len: int,
                       template: str | None = None) -> list[list[int]]:
    """Token ids of each example as a chat turn (LLaMA-Factory `template`, else the tokenizer's chat template, else
    plain text), cut to `max_len` tokens (AutoAWQ silently drops longer samples)."""
    encode = _encoder(tokenizer, template)
    return [ids[:max_len] for ids in (encode(prompt, answer) for prompt, answer in pairs) if ids]


def _encoder(tokenizer: Any, template: str | None) -> Any:
    if template:
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments

        try:
            lf_template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template))
        except ValueError as exc:
            raise QalignError(f"--template {template}: {exc} Use a LLaMA-Factory template name, e.g. qwen3_nothink, "
                              "or leave --template out to use the tokenizer's chat template.") from None

        def encode(prompt: str, answer: str) -> list[int]:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            prompt_ids, answer_ids = lf_template.encode_oneturn(tokenizer, messages)
            return prompt_ids + answer_ids

        return encode
    if getattr(tokenizer, "chat_template", None):
        def encode(prompt: str, answer: str) -> list[int]:
            messages = [{"role": "user", "content": prompt}]
            if answer:
                messages.append({"role": "assistant", "content": answer})
            return list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=not answer))

        return encode
    return lambda prompt, answer: tokenizer.encode(f"{prompt}\n{answer}" if answer else prompt)


def _publish(staging: Path, output: Path) -> None:
    """Move `staging` to `output`, replacing an existing folder only once the new one is complete."""
    staging.chmod(0o755)
    for path in staging.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = None
    if output.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
        output.rename(old / output.name)
    staging.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def quantize_awq(model_dir: Path, output: Path, calib_ids: list[list[int]], *, w_bit: int = 4,
                 group_size: int = 128, max_calib_len: int = 512, require_gpu: bool = True,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Quantize `model_dir` with AutoAWQ (+ qalign's Qwen3 fix) and write the checkpoint to `output` atomically."""
    import torch

    if require_gpu and not torch.cuda.is_available():
        raise QalignError("AWQ quantization needs a CUDA GPU: AutoAWQ searches scales and clipping layer by layer on "
                          "the GPU (on CPU an 8B model would take days). Run `qalign quantize awq` on a GPU machine.")
    from awq import AutoAWQForCausalLM
    from awq.models.auto import AWQ_CAUSAL_LM_MODEL_MAP
    from transformers import AutoTokenizer

    from qalign.awq.compat import QalignAwqQuantizer, autoawq_quant_config, check_awq_config

    source_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if source_config.get("model_type") not in AWQ_CAUSAL_LM_MODEL_MAP:
        raise QalignError(f"{model_dir}/config.json: model_type {source_config.get('model_type')!r} is not supported "
                          f"by AutoAWQ 0.2.9 (supported: {', '.join(sorted(AWQ_CAUSAL_LM_MODEL_MAP))}).")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    safetensors = any(model_dir.glob("*.safetensors"))
    awq_model = AutoAWQForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float16, safetensors=safetensors,
                                                   trust_remote_code=False)
    awq_model.quantize(tokenizer, quant_config=autoawq_quant_config(w_bit, group_size), calib_data=calib_ids,
                       max_calib_samples=len(calib_ids), max_calib_seq_len=max_calib_len,
                       quantizer_cls=QalignAwqQuantizer)
    awq_model.model.config.use_cache = source_config.get("use_cache", True)  # AutoAWQ loads with use_cache=False

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        awq_model.save_quantized(str(staging))
        tokenizer.save_pretrained(staging)
        if (model_dir / "generation_config.json").is_file():  # save_quantized forces do_sample=True; keep the source's
            shutil.copyfile(model_dir / "generation_config.json", staging / "generation_config.json")
        problems = check_awq_config(json.loads((staging / "config.json").read_text()), group_size)
        if problems:
            raise QalignError(f"{staging}/config.json: AutoAWQ wrote an unexpected format: {'; '.join(problems)}")
        (staging / PROVENANCE).write_text(json.dumps(provenance or {}, indent=2) + "\n")
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def run_quantize_awq(args: argparse.Namespace) -> int:
    """`qalign quantize awq`: validate cheap things first (paths, sizes, calibration file), then quantize."""
    model_dir, output = Path(args.model), Path(args.output)
    config = _read_config(model_dir)
    if output.resolve() == model_dir.resolve():
        raise QalignError(f"{output}: --output must differ from --model.")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.force:
        raise QalignError(f"{output}: already exists. Pass --force to replace it, or choose another --output.")
    check_group_size(config, args.group_size, source=str(model_dir / "config.json"))
    calib = Path(args.calib) if args.calib else DEFAULT_CALIB
    calibration = load_calibration(calib, limit=args.calib_samples, top_k=args.top_k, prompt=args.prompt)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = encode_calibration(tokenizer, calibration.pairs, args.max_calib_len, args.template)
    tokens = sum(map(len, ids))
    if tokens < args.max_calib_len:
        raise QalignError(f"{calib}: the calibration examples hold {tokens} tokens, fewer than one block of "
                          f"--max-calib-len {args.max_calib_len}. Add rows or lower --max-calib-len.")
    print(f"calibration: {len(ids)} examples, {tokens} tokens from {calib} "
          f"({tokens // args.max_calib_len} blocks of {args.max_calib_len})")
    provenance = {"source_model": str(model_dir), "calibration": str(calib), "examples": len(ids), "tokens": tokens,
                  "max_calib_len": args.max_calib_len, "template": args.template, "w_bit": args.w_bit,
                  "group_size": args.group_size}
    quantize_awq(model_dir, output, ids, w_bit=args.w_bit, group_size=args.group_size,
                 max_calib_len=args.max_calib_len, provenance=provenance)
    print(f"wrote {output} (AWQ GEMM, {args.w_bit}-bit, group {args.group_size}, zero point)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_quantize_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `quantize awq`."""
    quantize = subparsers.add_parser("quantize", help="quantize a local model (AWQ) on qalign's QA prompts",
                                     description="Post-training quantization of a local model.")
    methods = quantize.add_subparsers(dest="method", metavar="METHOD", required=True)
    awq = methods.add_parser(
        "awq", help="AWQ GEMM 4-bit with zero point (Qwen3-8B-AWQ's format); needs a CUDA GPU",
        description="Quantize a local Hugging Face model with AutoAWQ into an AWQ GEMM checkpoint (4-bit, zero "
        "point, --group-size), calibrated on QA prompts: a converted dataset (data/NAME.json) or a raw QA file "
        f"(default: {DEFAULT_CALIB.relative_to(REPO)}). Written to a temp folder, then renamed. Example: qalign "
        "quantize awq --model models/smollm2-135m-instruct --output models/smollm2-135m-awq --group-size 64")
    awq.add_argument("--model", required=True, metavar="DIR", help="local model folder (config.json + weights)")
    awq.add_argument("--output", required=True, metavar="DIR", help="folder to write the AWQ checkpoint to")
    awq.add_argument("--calib", metavar="FILE", help="converted dataset (.json rows with instruction[/output]) or raw "
                     "QA file (.json/.jsonl[.gz]); default: the bundled sample")
    awq.add_argument("--calib-samples", type=_positive, default=128, metavar="N", help="examples to use (default 128)")
    awq.add_argument("--max-calib-len", type=_positive, default=512, metavar="TOKENS",
                     help="tokens per example and per calibration block (default 512)")
    awq.add_argument("--group-size", type=int, choices=GROUP_SIZES, default=128,
                     help="weights per quantization group (default 128)")
    awq.add_argument("--w-bit", type=int, choices=(4,), default=4, help="weight bits (AutoAWQ GEMM: 4)")
    awq.add_argument("--template", metavar="T", help="LLaMA-Factory template to render examples as chat turns "
                     "(e.g. qwen3_nothink); default: the tokenizer's chat template, else plain text")
    awq.add_argument("--top-k", type=int, default=5, metavar="K", help="passages per prompt for raw QA files")
    awq.add_argument("--prompt", default="answer_only", metavar="NAME_OR_FILE", help="prompt template for raw QA files")
    awq.add_argument("--force", action="store_true", help="replace --output if it exists")
    awq.set_defaults(func=run_quantize_awq)
