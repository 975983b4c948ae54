"""torchrun entry of `FORCE_TORCHRUN=1 qalign train ...`: register qalign's stages in this worker, then train.

LLaMA-Factory's launcher runs `torchrun ... <file_name> <args>` with file_name = launcher.__file__, which
`qalign.lf.register` points here (as `-m qalign.lf.worker`), so every rank parses `stage: grpo` like the parent did.
"""

from __future__ import annotations


def main() -> None:
    """Register, then run LLaMA-Factory's `run_exp` on this process's argv (YAML path + overrides)."""
    from qalign.lf.register import register_all

    register_all()
    from llamafactory.train.tuner import run_exp

    run_exp()


if __name__ == "__main__":
    main()
