"""LoRA on AWQ, on CPU: recipes parse through LLaMA-Factory, `qalign quantize awq` (errors, and a real quantization
of a tiny Qwen3 with AutoAWQ + qalign's Qwen3 fix), the synthetic AWQ checkpoint layout, and the bench's plumbing.
What needs a GPU (AWQ kernels, Liger, the figures) is `bench/awq_smoke.sh`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO

AWQ_RECIPES = REPO / "recipes" / "qwen3-8b-awq"
STAGES = ("sft", "dpo", "orpo", "kto", "grpo", "predict")
HAS_LIGER = importlib.util.find_spec("liger_kernel") is not None


def _recipe(name: str) -> dict:
    return yaml.safe_load((AWQ_RECIPES / f"{name}.yaml").read_text())


def test_every_stage_has_a_recipe() -> None:
    missing = [stage for stage in STAGES if not (AWQ_RECIPES / f"{stage}.yaml").exists()]
    assert not missing, f"recipes/qwen3-8b-awq lacks {missing}"


@pytest.mark.parametrize("name", STAGES)
def test_recipe_values(name: str) -> None:
    recipe = _recipe(name)
    assert recipe["model_name_or_path"] == "Qwen/Qwen3-8B-AWQ"
    assert "quantization_bit" not in recipe, "AWQ quantization is read from the checkpoint, not set on the fly"
    assert recipe["fp16"] is True and not recipe.get("bf16"), "AWQ kernels compute in fp16 (faster, smaller)"
    assert recipe["finetuning_type"] == "lora" and recipe["template"] == "qwen3_nothink"
    if name != "predict":
        assert recipe["lora_target"] == "all", "peft's all-linear finds no AWQ layer; LLaMA-Factory's `all` does"
        assert recipe.get("gradient_checkpointing", True) and not recipe.get("disable_gradient_checkpointing")
    if name == "sft":
        assert recipe["enable_liger_kernel"] is True, "the fused linear+CE keeps SFT under 12 GB"
        assert recipe["per_device_train_batch_size"] == 4


@pytest.mark.parametrize("name", STAGES)
def test_recipe_parses_through_llamafactory(name: str, tiny_qwen3: Path, tmp_path: Path) -> None:
    from llamafactory.hparams import get_train_args

    args = {**_recipe(name), "model_name_or_path": str(tiny_qwen3), "output_dir": str(tmp_path / "out")}
    if not HAS_LIGER:  # LLaMA-Factory's parser requires the package when the key is on; its value is asserted above
        args["enable_liger_kernel"] = False
    if name == "grpo":
        from qalign.grpo.args import parse_grpo_args, split_grpo_args
        from qalign.lf.register import register_all

        register_all()
        args, grpo = split_grpo_args(args)
        assert parse_grpo_args(grpo).num_generations >= 2
    model_args, _, training_args, finetuning_args, _ = get_train_args(args)
    assert finetuning_args.stage == _recipe(name)["stage"]
    assert model_args.compute_dtype == torch.float16 and training_args.fp16
    assert finetuning_args.finetuning_type == "lora" and model_args.quantization_bit is None
    assert training_args.do_predict == (name == "predict")


# --- qalign quantize awq: argument and error handling ------------------------------------------------------------


def _quantize(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    from qalign.cli import main

    code = main(["quantize", "awq", *args])
    return code, capsys.readouterr().err


def test_quantize_errors(tiny_qwen3: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "awq")
    code, err = _quantize(capsys, "--model", str(tmp_path / "nope"), "--output", out)
    assert code == 2 and "model folder not found" in err
    code, err = _quantize(capsys, "--model", str(tmp_path), "--output", out)
    assert code == 2 and "no config.json" in err
    code, err = _quantize(capsys, "--model", str(tiny_qwen3), "--output", out)  # hidden 64 cannot take group 128
    assert code == 2 and "hidden_size=64" in err and "--group-size 64" in err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    code, err = _quantize(capsys, "--model", str(tiny_qwen3), "--output", str(tmp_path / "taken"), "--group-size", "64")
    assert code == 2 and "--force" in err
    bad = tmp_path / "calib.jsonl"
    bad.write_text('{"question": "q", "answers": ["a"]}\n{"question": \n')
    tiny = ["--model", str(tiny_qwen3), "--output", out, "--group-size", "64"]
    code, err = _quantize(capsys, *tiny, "--calib", str(bad))
    assert code == 2 and f"{bad}:2" in err
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"instruction": "who?", "output": "me"}, {"instruction": "", "output": "x"}]))
    code, err = _quantize(capsys, *tiny, "--calib", str(rows))
    assert code == 2 and f"{rows}:2" in err and "instruction" in err
    code, err = _quantize(capsys, *tiny, "--max-calib-len", "100000")
    assert code == 2 and "fewer than one block" in err
    assert not Path(out).exists()


def test_quantize_argument_choices(capsys: pytest.CaptureFixture) -> None:
    from qalign.cli import main

    for bad in (["--w-bit", "8"], ["--group-size", "100"], ["--calib-samples", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["quantize", "awq", "--model", "m", "--output", "o", *bad])
        assert exit_info.value.code == 2
    capsys.readouterr()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no CUDA GPU")
def test_quantize_needs_a_gpu(tiny_qwen3: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = _quantize(capsys, "--model", str(tiny_qwen3), "--output", str(tmp_path / "awq"), "--group-size", "64")
    assert code == 2 and "needs a CUDA GPU" in err


# --- compat: the Qwen3 Catcher fix, format checks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def awq_tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3 whose linear widths suit AutoAWQ (inputs divisible by 64, outputs by 64 for its clip search)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tests.tiny_models import build_tiny_qwen3

    base = build_tiny_qwen3(tmp_path_factory.mktemp("base") / "m")
    out = tmp_path_factory.mktemp("models") / "tiny-qwen3-128"
    config = json.loads((base / "config.json").read_text())
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=config["vocab_size"], hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
        eos_token_id=config["eos_token_id"], pad_token_id=config["pad_token_id"], bos_token_id=None))
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_bytes((base / name).read_bytes())
    return out


def _calibration(model_dir: Path, count: int = 8, max_len: int = 64) -> list[list[int]]:
    from transformers import AutoTokenizer

    from qalign.awq.quantize import DEFAULT_CALIB, encode_calibration, load_calibration

    pairs = load_calibration(DEFAULT_CALIB, limit=count).pairs
    return encode_calibration(AutoTokenizer.from_pretrained(model_dir), pairs, max_len)


def test_carry_layer_attributes_copies_attention_type() -> None:
    from torch import nn

    from qalign.awq.compat import carry_layer_attributes

    layer = nn.Linear(2, 2)
    layer.attention_type, layer.layer_idx, layer._private = "full_attention", 0, "x"
    layers = nn.ModuleList([layer])
    with carry_layer_attributes(layers):
        layers[0] = nn.Sequential(layers[0])  # what AutoAWQ's Catcher does
        assert layers[0].attention_type == "full_attention" and layers[0].layer_idx == 0
        assert not hasattr(layers[0], "_private")
        layers[0] = layers[0][0]  # restore
    assert type(layers) is nn.ModuleList and layers[0] is layer


def test_autoawq_catcher_fails_on_qwen3_and_the_fix_works(awq_tiny_qwen3: Path) -> None:
    from awq import AutoAWQForCausalLM
    from awq.quantize.quantizer import AwqQuantizer
    from transformers import AutoTokenizer

    from qalign.awq.compat import QalignAwqQuantizer

    tokenizer = AutoTokenizer.from_pretrained(awq_tiny_qwen3)
    ids = _calibration(awq_tiny_qwen3)
    kwargs = {"max_calib_samples": len(ids), "max_calib_seq_len": 64}

    def args() -> tuple:  # a fresh model each time: the failed upstream attempt leaves its Catcher in place
        awq_model = AutoAWQForCausalLM.from_pretrained(str(awq_tiny_qwen3), torch_dtype=torch.float16)
        return awq_model, awq_model.model, tokenizer, 4, 64, True, "gemm", ids, "train", "text", True

    with pytest.raises(AttributeError, match="attention_type"):  # the upstream bug this module exists for
        AwqQuantizer(*args(), **kwargs)
    awq_model, *rest = args()
    quantizer = QalignAwqQuantizer(awq_model, *rest, **kwargs)
    assert quantizer.inps.shape[1:] == (64, 128) and quantizer.inps.shape[0] == sum(map(len, ids)) // 64
    assert type(awq_model.model.model.layers).__name__ == "ModuleList"


def test_quantize_tiny_qwen3_on_cpu_matches_the_float_model(awq_tiny_qwen3: Path, tmp_path: Path) -> None:
    """AutoAWQ allows CPU for a tiny model: quantize, then check the checkpoint's format and that its dequantized
    weights give the float model's predictions."""
    from awq.utils.packing_utils import dequantize_gemm
    from safetensors.torch import load_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from qalign.awq.compat import check_awq_config
    from qalign.awq.quantize import quantize_awq

    out = quantize_awq(awq_tiny_qwen3, tmp_path / "awq", _calibration(awq_tiny_qwen3), group_size=64,
                       max_calib_len=64, require_gpu=False, provenance={"test": True})
    config = json.loads((out / "config.json").read_text())
    assert check_awq_config(config, group_size=64) == []
    assert check_awq_config(config) == ["quantization_config.group_size is 64, expected 128"]
    assert config["use_cache"] is True and (out / "tokenizer.json").exists()
    assert json.loads((out / "qalign_quantize.json").read_text()) == {"test": True}
    state = load_file(out / "model.safetensors")
    assert state["model.layers.0.mlp.down_proj.qweight"].shape == (256, 128 // 8)
    assert state["model.layers.0.mlp.down_proj.scales"].shape == (256 // 64, 128)
    dense = {}
    for key, value in state.items():
        if key.endswith(".qweight"):
            prefix = key[: -len("qweight")]
            weight = dequantize_gemm(value, state[prefix + "qzeros"], state[prefix + "scales"], 4, 64)
            dense[prefix + "weight"] = weight.T.float()
        elif not key.endswith((".qzeros", ".scales")):
            dense[key] = value.float()
    config.pop("quantization_config")
    quantized = Qwen3ForCausalLM(Qwen3Config(**config))
    quantized.load_state_dict(dense, strict=False)
    quantized.tie_weights()
    reference = Qwen3ForCausalLM.from_pretrained(awq_tiny_qwen3, torch_dtype=torch.float32)
    ids = torch.tensor([_calibration(awq_tiny_qwen3, 1)[0]])
    with torch.no_grad():
        got, want = quantized(ids).logits, reference(ids).logits
    assert ((got - want).norm() / want.norm()).item() < 0.3
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() > 0.8


def test_check_awq_config_and_lora_summary() -> None:
    from awq.modules.linear import WQLinear_GEMM
    from peft import LoraConfig, get_peft_model
    from torch import nn

    from qalign.awq.compat import awq_train_mode, check_awq_config, lora_b_summary

    assert check_awq_config({}) == ["config has no quantization_config (not a quantized checkpoint)"]
    good = {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                                    "version": "GEMM"}}
    assert check_awq_config(good) == []
    model = nn.Sequential(WQLinear_GEMM(4, 64, 128, 64, False, "cpu"), WQLinear_GEMM(4, 64, 64, 64, False, "cpu"))
    assert awq_train_mode(model.train()) == (2, 2) and awq_train_mode(model.eval()) == (0, 2)
    lora = get_peft_model(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), LoraConfig(target_modules=["0", "1"], r=2))
    assert lora_b_summary(lora) == {"0": [0, 1], "1": [0, 1]}
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "1.lora_B" in n).fill_(0.5)
    assert lora_b_summary(lora) == {"0": [0, 1], "1": [1, 1]}


def test_patched_awq_backward_gives_the_input_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU: AutoAWQ's naive forward, and its Triton dequantizer swapped for the same math in torch."""
    from awq.modules.linear import gemm
    from awq.utils.packing_utils import dequantize_gemm
    from torch import nn

    from bench.awq_backward import patch_awq_backward

    monkeypatch.setattr(gemm, "TRITON_AVAILABLE", False)
    monkeypatch.setattr(gemm, "awq_ext", None)
    monkeypatch.setattr(gemm.WQLinearMMFunction, "backward", vars(gemm.WQLinearMMFunction)["backward"])  # undo after
    torch.manual_seed(0)
    linear = nn.Linear(128, 64, bias=False).half()
    weight = linear.weight.data.float().reshape(-1, 64)
    low, high = weight.amin(1, keepdim=True), weight.amax(1, keepdim=True)
    scales = ((high - low) / 15).reshape(64, 2)
    zeros = (-torch.round(low / ((high - low) / 15))).reshape(64, 2)
    layer = gemm.WQLinear_GEMM.from_linear(linear, 4, 64, scales=scales.t().contiguous().half(),
                                           zeros=zeros.t().contiguous()).train()
    with pytest.raises(ValueError, match="triton"):  # upstream's backward, with neither kernel package
        layer(torch.randn(2, 3, 128, dtype=torch.float16, requires_grad=True)).sum().backward()
    assert patch_awq_backward(gemm) and not patch_awq_backward()
    monkeypatch.setattr(gemm, "TRITON_AVAILABLE", True)
    monkeypatch.setattr(gemm, "awq_dequantize_triton", lambda q, s, z: dequantize_gemm(q, z, s, 4, 64))
    dense = dequantize_gemm(layer.qweight, layer.qzeros, layer.scales, 4, 64).float()  # [in, out]
    x = torch.randn(2, 3, 128, requires_grad=True)
    grad = torch.randn(2, 3, 64)
    monkeypatch.setattr(gemm, "TRITON_AVAILABLE", False)  # forward: the naive path again
    out = layer(x.half())
    monkeypatch.setattr(gemm, "TRITON_AVAILABLE", True)  # backward: the (CPU stand-in) Triton dequantizer
    out.float().backward(grad)
    assert torch.allclose(x.grad, grad @ dense.t(), rtol=1e-2, atol=1e-2)


def test_backward_patch_module_imports_no_autoawq() -> None:
    """So an import hook on awq.modules.linear.gemm can apply it while AutoAWQ is still importing."""
    code = "import sys, bench.awq_backward; assert not any(m.startswith('awq') for m in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# --- synthetic checkpoint and bench plumbing ---------------------------------------------------------------------


def test_random_awq_checkpoint_has_transformers_awq_layout(tmp_path: Path) -> None:
    from awq.utils.packing_utils import dequantize_gemm
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, AwqConfig
    from transformers.integrations.awq import replace_with_awq_linear

    from bench.awq_synthetic import pack_int4, write_random_awq_checkpoint

    shape = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000}
    out = write_random_awq_checkpoint(tmp_path / "rand", shape, shard_layers=2)
    config = AutoConfig.from_pretrained(out)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model, _ = replace_with_awq_linear(model, quantization_config=AwqConfig.from_dict(config.quantization_config),
                                       modules_to_not_convert=["lm_head"])
    want = {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}
    index = json.loads((out / "model.safetensors.index.json").read_text())
    got = {}
    for shard in sorted(set(index["weight_map"].values())):
        got.update({key: (tuple(value.shape), value.dtype) for key, value in load_file(out / shard).items()})
    assert got == want and set(index["weight_map"]) == set(want)
    weights = load_file(out / index["weight_map"]["model.layers.0.mlp.up_proj.qweight"])
    dense = dequantize_gemm(weights["model.layers.0.mlp.up_proj.qweight"], weights["model.layers.0.mlp.up_proj.qzeros"],
                            weights["model.layers.0.mlp.up_proj.scales"], 4, 128).float()
    assert dense.count_nonzero() > 0.8 * dense.numel() and 0.004 < dense.std().item() < 0.02
    values, zeros, scales = torch.randint(0, 16, (128, 16)), torch.randint(0, 16, (1, 16)), torch.rand(1, 16).half()
    unpacked = dequantize_gemm(pack_int4(values), pack_int4(zeros), scales, 4, 128).float()
    assert torch.allclose(unpacked, ((values - zeros) * scales.float()), rtol=1e-3, atol=1e-3)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 1000 and tokenizer.decode([999]) == "</think>"
    assert len(tokenizer("<|im_start|>user\nw1 w2 (w3)<|im_end|>").input_ids) == 6


def _bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "awq_bench.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_bench_dry_run_plans_every_stage() -> None:
    result = _bench("--dry-run", "--smollm2", "models/smollm2-135m-instruct")
    assert result.returncode == 0, result.stderr
    assert "smollm2: qalign quantize awq" in result.stdout
    result = _bench("--dry-run")
    for stage in ("sft", "sft-noliger", "dpo", "orpo", "kto", "grpo", "predict", "predict-b1"):
        assert f"\n{stage}: qalign train " in "\n" + result.stdout
    assert "enable_liger_kernel=False" in result.stdout.split("\nsft-noliger:")[1].splitlines()[0]
    assert _bench("--dry-run", "--stages", "sft,nope").returncode == 2


@pytest.mark.slow
def test_bench_stage_runs_on_cpu_with_a_plain_tiny_model(tmp_path: Path) -> None:
    """The bench child: recipe + overrides through run_exp, with its measurements (no AWQ, fp16 or Liger on CPU)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from bench.awq_synthetic import word_level_tokenizer, write_bench_datasets

    model_dir = tmp_path / "qwen3-8b-awq-random"
    tokenizer = word_level_tokenizer(1200)
    tokenizer.save_pretrained(model_dir)
    Qwen3ForCausalLM(Qwen3Config(vocab_size=1200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                 bos_token_id=None)).save_pretrained(model_dir)
    write_bench_datasets(tmp_path, rows=16, passage_words=40, words=1000)
    result = _bench("--child", "sft", "--work", str(tmp_path), "--seq-len", "128", "--steps", "2", "--set",
                    "fp16=false", "--set", "enable_liger_kernel=false", "--set", "preprocessing_num_workers=1")
    measured = json.loads((tmp_path / "results" / "sft.json").read_text())
    assert measured["ok"], measured.get("traceback", result.stderr[-3000:])
    assert measured["step_tokens"] == [4 * 128, 4 * 128]  # micro-batch 4, every sequence filled to cutoff_len
    assert len(measured["step_times"]) == 2 and measured["tokens_per_s"] > 0
    assert all(done == total > 0 for done, total in measured["lora_b_nonzero"].values())
    assert set(measured["lora_b_nonzero"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"}


def test_bench_smollm2_resumes_after_a_cut_off_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3a runs longer than one 10-minute GPU call: a second call with the same --work skips the finished steps."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import awq_bench

    ran: list[list[str]] = []
    failed_once: list[bool] = []

    def fake_run(cmd: list[str], log: Path, timeout: int) -> tuple[int, float]:
        """Stand-in for the subprocess: write what the real step writes; fail once at the AWQ SFT."""
        ran.append(cmd)
        joined = " ".join(cmd)
        if "smollm2-awq" in joined and "sft.yaml" in joined and not failed_once:
            failed_once.append(True)
            return 1, 0.1
        work = tmp_path / "smol"
        out = next((c.split("=", 1)[1] for c in cmd if c.startswith("output_dir=")), None)
        if "convert" in cmd:
            name = cmd[cmd.index("--dataset") + 1]
            (work / "data").mkdir(parents=True, exist_ok=True)
            (work / "data" / f"{name}.json").write_text("[]")
        elif "quantize" in cmd:
            (work / "smollm2-awq").mkdir(parents=True)
            (work / "smollm2-awq" / "qalign_quantize.json").write_text('{"group_size": 64}')
        elif "eval" in cmd:
            target = Path(cmd[cmd.index("--output") + 1])
            target.mkdir(parents=True, exist_ok=True)
            (target / "summary.json").write_text('{"n": 3, "subem": 0.5, "em": 0.25, "f1": 0.4}')
        elif out and "predict.yaml" in joined:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "generated_predictions.jsonl").write_text("")
        elif out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "adapter_config.json").write_text("{}")
        else:  # the bf16 copy
            (work / "smollm2-bf16").mkdir(parents=True)
            (work / "smollm2-bf16" / "config.json").write_text("{}")
        return 0, 0.1

    monkeypatch.setattr(awq_bench, "_run", fake_run)
    args = awq_bench.parse_args(["--smollm2", "unused", "--work", str(tmp_path)])
    saves: list[int] = []
    first: dict = {}
    with pytest.raises(RuntimeError, match="failed"):
        awq_bench.run_smollm2(args, first, lambda: saves.append(len(ran)))
    assert first["smollm2"]["models"]["bf16"]["sft"]["subem"] == 0.5 and not first["smollm2"]["ok"]
    assert saves, "partial results are saved after each step"
    ran.clear()
    second: dict = {}
    awq_bench.run_smollm2(args, second)
    steps = [" ".join(cmd) for cmd in ran]
    assert len(steps) == 5 and all("awq" in step for step in steps)  # awq: sft, predict+eval base and sft
    assert second["smollm2"]["ok"] and second["smollm2"]["models"]["awq"]["base"]["f1"] == 0.4
    assert "| awq |" in awq_bench.markdown(second, {})
