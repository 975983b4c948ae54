"""Random-weight AWQ checkpoints and synthetic QA data for speed and memory measurements (never for quality).

`write_random_awq_checkpoint` writes a model folder in AutoAWQ's WQLinear_GEMM layout (int32 `qweight`
[in, out/8], int32 `qzeros` [in/group, out/8], fp16 `scales` [in/group, out]) with a `quantization_config` like
Qwen3-8B-AWQ's, without calibration. Values are random, never zeros: speed does not depend on them, but zeros or
huge values would make fp16 overflow or kernels take shortcuts. The tokenizer is word-level over the model's full
vocabulary (one whitespace-separated word = one token), so sequence lengths are exact and every generated id decodes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from qalign.awq.compat import AWQ_FORMAT

QWEN3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
_EXTRA_WORDS = ["[UNK]", "user", "assistant", "system"]
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ GEMM: nibble i of an int32 holds column AWQ_PACK_ORDER[i]

QWEN3_8B_SHAPE: dict[str, Any] = {
    "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit integers [rows, 8k] into int32 [rows, k] in AutoAWQ's GEMM order."""
    rows, cols = values.shape
    grouped = values.to(torch.int64).reshape(rows, cols // 8, 8)
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64, device=values.device)
    for slot, column in enumerate(AWQ_PACK_ORDER):
        packed |= (grouped[:, :, column] & 0xF) << (4 * slot)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # reinterpret as signed int32
    return packed.to(torch.int32)


def random_awq_linear(in_features: int, out_features: int, group_size: int, generator: torch.Generator,
                      device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random qweight/qzeros/scales: weights (q - z) * s with q uniform in 0..15, z in 7..9, s in [0.0015, 0.0025]."""
    groups = in_features // group_size
    qweight = torch.randint(-(2**31), 2**31, (in_features, out_features // 8), dtype=torch.int32,
                            generator=generator, device=device)
    zeros = torch.randint(7, 10, (groups, out_features), generator=generator, device=device)
    scales = torch.rand(groups, out_features, generator=generator, device=device) * 0.001 + 0.0015
    return {"qweight": qweight, "qzeros": pack_int4(zeros), "scales": scales.to(torch.float16)}


def _linear_shapes(shape: dict[str, Any]) -> dict[str, tuple[int, int]]:
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    q_out = shape["num_attention_heads"] * shape["head_dim"]
    kv_out = shape["num_key_value_heads"] * shape["head_dim"]
    return {"self_attn.q_proj": (hidden, q_out), "self_attn.k_proj": (hidden, kv_out),
            "self_attn.v_proj": (hidden, kv_out), "self_attn.o_proj": (q_out, hidden),
            "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden)}


def word_level_tokenizer(vocab_size: int) -> Any:
    """A fast tokenizer with exactly `vocab_size` ids: words w0..wN, a few chat words and Qwen3's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - len(_EXTRA_WORDS) - len(QWEN3_SPECIAL))]
    vocab = {word: index for index, word in enumerate(words + _EXTRA_WORDS + QWEN3_SPECIAL)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
        model_input_names=["input_ids", "attention_mask"],
    )


def write_random_awq_checkpoint(output: Path, shape: dict[str, Any] | None = None, *, group_size: int = 128,
                                device: str = "cpu", seed: int = 0, shard_layers: int = 12) -> Path:
    """Write a random Qwen3 AWQ checkpoint (config, tokenizer, safetensors shards + index) to `output`."""
    from safetensors.torch import save_file
    from transformers import Qwen3Config

    shape = {**QWEN3_8B_SHAPE, **(shape or {})}
    output.mkdir(parents=True, exist_ok=True)
    tokenizer = word_level_tokenizer(shape["vocab_size"])
    tokenizer.save_pretrained(output)
    config = Qwen3Config(**shape, torch_dtype="float16", eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    config_dict = {**config.to_dict(), "architectures": ["Qwen3ForCausalLM"],
                   "quantization_config": {**AWQ_FORMAT, "group_size": group_size, "modules_to_not_convert": None}}
    (output / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    (output / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "do_sample": False}) + "\n")

    generator = torch.Generator(device=device).manual_seed(seed)
    hidden, vocab = shape["hidden_size"], shape["vocab_size"]

    def normal(*size: int) -> torch.Tensor:
        return (torch.randn(*size, generator=generator, device=device) * 0.02).to(torch.float16)

    ones = torch.ones(hidden, dtype=torch.float16)
    head_ones = torch.ones(shape["head_dim"], dtype=torch.float16)
    shards: list[dict[str, torch.Tensor]] = [{"model.embed_tokens.weight": normal(vocab, hidden).cpu(),
                                              "model.norm.weight": ones.clone()}]
    if not shape["tie_word_embeddings"]:
        shards[0]["lm_head.weight"] = normal(vocab, hidden).cpu()
    for layer in range(shape["num_hidden_layers"]):
        if layer % shard_layers == 0:
            shards.append({})
        prefix = f"model.layers.{layer}."
        for name, (fan_in, fan_out) in _linear_shapes(shape).items():
            for key, tensor in random_awq_linear(fan_in, fan_out, group_size, generator, device).items():
                shards[-1][f"{prefix}{name}.{key}"] = tensor.cpu()
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shards[-1][f"{prefix}{norm}.weight"] = ones.clone()
        for norm in ("self_attn.q_norm", "self_attn.k_norm"):
            shards[-1][f"{prefix}{norm}.weight"] = head_ones.clone()
    weight_map, total = {}, 0
    for index, shard in enumerate(shards, start=1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, output / name, metadata={"format": "pt"})
        for key, tensor in shard.items():
            weight_map[key] = name
            total += tensor.numel() * tensor.element_size()
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (output / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2) + "\n")
    return output


def synthetic_records(count: int, *, passage_words: int = 300, passages: int = 5, words: int = 5000,
                      seed: int = 0, first_id: int = 0) -> list[dict[str, Any]]:
    """DPR-style QA records over the word-level vocabulary: long passages, a 2-word answer, and a second alias
    holding many words (so F1 rewards of random completions vary and GRPO gets non-zero advantages)."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(f"w{rng.randrange(words)}" for _ in range(n))

    return [{"question": f"w{first_id + i} {text(12)}", "answers": [text(2), text(3000)],
             "ctxs": [{"title": text(2), "text": text(passage_words)} for _ in range(passages)]}
            for i in range(count)]


def write_bench_datasets(dataset_dir: Path, rows: int = 96, passage_words: int = 341, words: int = 5000) -> None:
    """Register bench_sft (alpaca), bench_dev and bench_grpo (eval rows with answers), bench_pref (ranking) and
    bench_kto in `dataset_dir`. 5 passages of `passage_words` words overfill cutoff_len, so every sequence fills it;
    chosen/rejected and KTO outputs hold the same words in another order, so pairs have equal lengths."""
    from qalign.converters.alpaca import convert_alpaca
    from qalign.converters.eval_set import convert_eval
    from qalign.converters.job import ConvertJob
    from qalign.converters.prompts import render_prompt
    from qalign.converters.registry import register_dataset
    from qalign.io import atomic_write_json, atomic_write_jsonl

    raw, raw_dev = dataset_dir / "raw.jsonl", dataset_dir / "raw_dev.jsonl"
    atomic_write_jsonl(raw, synthetic_records(rows, passage_words=passage_words, words=words))
    atomic_write_jsonl(raw_dev, synthetic_records(rows, passage_words=passage_words, words=words, seed=1,
                                                  first_id=rows))
    convert_alpaca(ConvertJob(str(raw), "bench_sft", dataset_dir=dataset_dir))
    convert_eval(ConvertJob(str(raw), "bench_grpo", dataset_dir=dataset_dir))
    convert_eval(ConvertJob(str(raw_dev), "bench_dev", dataset_dir=dataset_dir))
    template, records, _ = ConvertJob(str(raw), "bench_pref", dataset_dir=dataset_dir, force=True).load()
    prompts = [(render_prompt(template, record, 5), record.answers[0]) for record in records]

    def flip(answer: str) -> str:
        return " ".join(reversed(answer.split()))

    pref = [{"instruction": p, "input": "", "chosen": a, "rejected": flip(a)} for p, a in prompts]
    kto = [{"instruction": p, "input": "", "output": a if i % 2 else flip(a), "kto_tag": bool(i % 2)}
           for i, (p, a) in enumerate(prompts)]
    columns = {"prompt": "instruction", "query": "input"}
    for name, data, entry in (
        ("bench_pref", pref, {"columns": {**columns, "chosen": "chosen", "rejected": "rejected"}, "ranking": True}),
        ("bench_kto", kto, {"columns": {**columns, "response": "output", "kto_tag": "kto_tag"}}),
    ):
        atomic_write_json(dataset_dir / "data" / f"{name}.json", data)
        register_dataset(dataset_dir, name, f"data/{name}.json", entry)
