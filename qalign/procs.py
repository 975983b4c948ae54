"""Running `qalign ...` in a fresh process (LLaMA-Factory keeps global state, so each training run gets its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_in_subprocess(args: list[str], log: Path, header: str = "") -> int:
    """Run `qalign ARGS` in a fresh process (LLaMA-Factory state does not leak between runs), output to LOG."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as handle:
        if header:
            handle.write(header + "\n")
            handle.flush()
        return subprocess.run([sys.executable, "-m", "qalign.cli", *args], stdout=handle,
                              stderr=subprocess.STDOUT, check=False).returncode
