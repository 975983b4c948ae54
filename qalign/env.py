"""Environment variables read as on/off switches: one helper, with LLaMA-Factory's spellings by default."""

from __future__ import annotations

import os
from collections.abc import Collection

# llamafactory.extras.misc.is_env_enabled: lower-cased value in true, y, 1 (that module imports torch, and the
# start-up hook reads a flag in every Python process, so the spelling is kept here; tests/test_env.py pins it)
LLAMAFACTORY_TRUE = frozenset({"true", "y", "1"})
# huggingface_hub / datasets / transformers read their *_OFFLINE variables as 1, on, yes or true
HUGGINGFACE_TRUE = frozenset({"1", "on", "yes", "true"})


def env_flag(name: str, true: Collection[str] = LLAMAFACTORY_TRUE) -> bool:
    """Whether environment variable `name` is set to one of `true` (case-insensitive); unset or anything else: off.
    qalign's own switches and LLaMA-Factory's use the default; the Hugging Face libraries' variables pass
    HUGGINGFACE_TRUE, so qalign reads them as the library that owns them does."""
    return os.environ.get(name, "").lower() in true
