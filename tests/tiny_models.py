"""A tiny random Qwen3 (hidden 64, 2 layers) with a small byte-level BPE tokenizer carrying Qwen3's special tokens.

It exercises the Qwen3 code paths (templates qwen3 / qwen3_nothink, <think> handling) through the real
LLaMA-Factory and TRL on CPU in seconds. Saved with the pinned transformers so 4.56 can load it.
"""

from __future__ import annotations

from pathlib import Path

QWEN3_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_CORPUS = [
    "who wrote the novel pride and prejudice jane austen",
    "what is the capital city of france paris",
    "answer the question using the passages below with a short answer",
    "passage title text question answer the of in a is was by on for",
    "system user assistant you are a helpful assistant",
    "0 1 2 3 4 5 6 7 8 9 : ; , . ? ! ( ) - ' \" \n",
]


def build_tiny_qwen3(output: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tokenizer_model = Tokenizer(models.BPE())
    tokenizer_model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer_model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=QWEN3_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer_model.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_model,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
        model_input_names=["input_ids", "attention_mask"],
    )
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        # larger than the 0.02 default so logits are not all ~0: LoRA can then move the output in a few steps
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
