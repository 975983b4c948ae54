"""Helpers shared by the demo tests (no tests here): a tiny LoRA adapter, and an eval set on disk."""

from __future__ import annotations

import json
from pathlib import Path

from qalign.converters.eval_set import build_eval_rows
from qalign.converters.prompts import load_prompt
from qalign.records import QARecord

TEMPLATE = "qwen3_nothink"

RECORDS = [
    QARecord(
        id="nq-1",
        question="who wrote the novel pride and prejudice",
        answers=["Jane Austen", "Austen"],
        ctxs=[
            {"title": "Pride and Prejudice", "text": "Pride and Prejudice is a novel by Jane Austen."},
            {"title": "Paris (city)", "text": "Paris is the capital city of France."},
        ],
    ),
    QARecord(id="nq-2", question="what is the capital city of france", answers=["Paris"],
             ctxs=[{"title": "", "text": "Paris is the capital | largest city of France."}]),
]


def build_tiny_adapter(model_dir: Path, output: Path, seed: int = 0) -> Path:
    """A LoRA adapter on the tiny model, with random (not zero) B so that it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(output)
    return output


def write_eval_set(root: Path, name: str = "demo_dev", prompt: str = "answer_only") -> Path:
    """`root/data/<name>.json` as `qalign convert eval` writes it, registered in `root/dataset_info.json`."""
    rows = build_eval_rows(RECORDS, load_prompt(prompt), top_k=5)
    path = root / "data" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    registry = {name: {"file_name": f"data/{name}.json", "qalign": {"kind": "eval", "prompt": prompt}}}
    (root / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    (root / "data" / "not_eval.json").write_text(json.dumps([{"instruction": "x", "output": "y"}]), encoding="utf-8")
    return path
