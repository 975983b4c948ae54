"""A study file's settings as the Makefile's step targets pass them (`make data`, `make sft`, `make pref-data`, ...).

The step targets are single steps of `make study` run by hand, so their sizes live in the study file, not in the
Makefile: `python -m qalign.study.make_args STUDY.yaml WHAT [KEY=VALUE ...]` prints one shell-quoted line.

  train-args METHOD    key=value for `qalign train`: template, train_args, overrides.METHOD (later wins)
  predict-args METHOD  key=value for `qalign predict`: template, predict_args, overrides.METHOD.predict
  mining-args          --options for `qalign convert preference|kto` from mining_args
  KEY                  one study key (model, template, train, test, top_k, prompt, train_limit, ...); null: nothing

KEY=VALUE pairs (what the user set on make's command line) go over the study's: for train/predict as LLaMA-Factory
keys, for mining-args as mining_args keys (num_samples=8 -> --num-samples 8).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from qalign.errors import QalignError
from qalign.overrides import override_args, override_value
from qalign.study.config import StudyConfig, load_study
from qalign.study.plan import mining_options, predict_overrides, train_overrides


def _pairs(assignments: list[str]) -> dict[str, str]:
    given = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise QalignError(f"make_args: expected KEY=VALUE, got {assignment!r}")
        given[key] = value
    return given


def make_args(cfg: StudyConfig, what: str, method: str | None, assignments: list[str]) -> list[str]:
    """The arguments for one step target (see the module docstring for WHAT)."""
    given = _pairs(assignments)
    if what == "train-args":
        return override_args({"template": cfg.template}, cfg.train_args, train_overrides(cfg, method or ""), given)
    if what == "predict-args":
        return override_args({"template": cfg.template}, cfg.predict_args, predict_overrides(cfg, method or ""),
                             given)
    if what == "mining-args":
        return mining_options({**cfg.mining_args, **given})
    if not hasattr(cfg, what):
        raise QalignError(f"make_args: {what!r} is neither train-args, predict-args, mining-args nor a study key")
    value: Any = getattr(cfg, what)
    return [] if value is None else [override_value(value)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    study, what, rest = args[0], args[1], args[2:]
    method = rest.pop(0) if what in ("train-args", "predict-args") and rest else None
    try:
        line = make_args(load_study(study, []), what, method, rest)
    except QalignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(" ".join(shlex.quote(arg) for arg in line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
