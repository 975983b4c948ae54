"""Training health: did a run learn? Read its trainer logs, compare the first and last tenth, give a verdict.

The logs are `trainer_state.json`'s `log_history` (every key the trainer logged), else LLaMA-Factory's
`trainer_log.jsonl` (loss, reward, accuracy only). The first tenth = the first ceil(n/10) logged training rows,
the last tenth = the last ceil(n/10); a signal's value there is the mean over those rows. `RULES` is the rule in
words, as the study report prints it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LEARNED, FLAT, UNMEASURED = "learned", "did not learn", "not measured"
LN2 = math.log(2.0)
# the keys each stage's trainer logs (TRL 0.24 / LLaMA-Factory 0.9.5 names), in the order the report shows them
SIGNALS: dict[str, tuple[str, ...]] = {
    "sft": ("loss",),
    "dpo": ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"),
    "orpo": ("loss", "odds_ratio_loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"),
    "kto": ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "kl"),
    "grpo": ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio"),
}
RULES = (
    "SFT learned when its loss over the last tenth of logged steps is at least 10% below the first tenth. "
    "DPO and ORPO learned when the preference loss over the last tenth (DPO: the sigmoid loss; ORPO: its odds-ratio "
    f"term `odds_ratio_loss`) is below 0.95 · ln 2 = {0.95 * LN2:.3f} — within 5% of ln 2 (or above it) the policy "
    "never left its reference — and `rewards/accuracies` over the last tenth is at least 0.6. KTO learned when its "
    "loss over the last tenth is below 0.95 · 0.5 (0.5 = its value at the reference with unit weights) and "
    "`rewards/margins` (chosen − rejected) over the last tenth is above 0. GRPO learned when the mean `reward` over "
    "the last tenth is at least 0.05 above the first tenth. A rule that compares first and last tenth needs at "
    "least 2 logged steps; a run without the logs its rule reads is `not measured`."
)
_JSONL_KEYS = {"accuracy": "rewards/accuracies"}  # trainer_log.jsonl name -> log_history name


@dataclass
class Health:
    """One run's signals (key -> (first tenth, last tenth)) and its verdict with the reason."""

    stage: str
    steps: int
    signals: dict[str, tuple[float, float]] = field(default_factory=dict)
    verdict: str = UNMEASURED
    reason: str = ""

    @property
    def learned(self) -> bool:
        return self.verdict == LEARNED

    def signal_text(self) -> str:
        """`loss 2.300 → 0.590; rewards/accuracies 0.50 → 0.80` (first tenth → last tenth)."""
        return "; ".join(f"{key} {first:.3f} → {last:.3f}" for key, (first, last) in self.signals.items()) or "—"

    def line(self) -> str:
        """The one-line verdict `qalign train` prints at its end."""
        return f"training health ({self.stage}, {self.steps} logged steps): {self.verdict.upper()} — {self.reason}" + (
            f" [{self.signal_text()}]" if self.signals else "")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["signals"] = {key: {"first_tenth": first, "last_tenth": last} for key, (first, last) in
                          self.signals.items()}
        return out


def read_history(train_dir: str | Path) -> list[dict[str, Any]]:
    """Trainer log rows of a run: trainer_state.json's log_history, else LLaMA-Factory's trainer_log.jsonl."""
    train_dir = Path(train_dir)
    try:
        return list(json.loads((train_dir / "trainer_state.json").read_text(encoding="utf-8"))["log_history"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        lines = (train_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return []
    return [{**{_JSONL_KEYS.get(k, k): v for k, v in row.items()}, "step": row.get("current_steps", row.get("step"))}
            for row in rows if isinstance(row, dict)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def training_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows logged during training (not eval rows, not the final `train_loss` summary)."""
    return [row for row in history if any(_number(row.get(key)) for key in ("loss", "reward"))]


def tenths(values: list[float]) -> tuple[float, float]:
    """(mean of the first ceil(n/10) values, mean of the last ceil(n/10))."""
    k = max(1, math.ceil(len(values) / 10))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def infer_stage(history: list[dict[str, Any]]) -> str:
    """The stage whose keys the log carries: grpo (reward), orpo (odds_ratio_loss), dpo (accuracies), kto (kl)."""
    keys = {key for row in history for key in row}
    if "reward" in keys:
        return "grpo"
    if "odds_ratio_loss" in keys:
        return "orpo"
    if "rewards/accuracies" in keys:
        return "dpo"
    return "kto" if "kl" in keys or "rewards/chosen" in keys else "sft"


def stage_of(config: dict[str, Any]) -> str:
    """The health stage of a LLaMA-Factory config: its `stage`, with `dpo` + `pref_loss: orpo` read as orpo."""
    stage = str(config.get("stage") or "sft").lower()
    if stage == "dpo" and str(config.get("pref_loss") or "sigmoid").lower() == "orpo":
        return "orpo"
    return stage


def judge(history: list[dict[str, Any]], stage: str | None = None, pref_loss: str = "sigmoid") -> Health:
    """Signals and verdict of one run's log rows (`stage` inferred from the keys when not given)."""
    rows = training_rows(history)
    stage = stage or infer_stage(rows)
    signals = {}
    for key in SIGNALS.get(stage, ("loss",)):
        values = [float(row[key]) for row in rows if _number(row.get(key))]
        if values:
            signals[key] = tenths(values)
    health = Health(stage, len(rows), signals)
    health.verdict, health.reason = _verdict(stage, signals, len(rows), pref_loss)
    return health


def _verdict(stage: str, s: dict[str, tuple[float, float]], steps: int, pref_loss: str) -> tuple[str, str]:
    if stage in ("dpo", "orpo"):
        return _preference(stage, s, pref_loss)
    key = {"grpo": "reward"}.get(stage, "loss")
    if key not in s:
        return UNMEASURED, f"no `{key}` in the trainer logs"
    if stage != "kto" and steps < 2:
        return UNMEASURED, f"{steps} logged step (the rule compares first and last tenth)"
    first, last = s[key]
    if stage == "grpo":
        ok = last - first >= 0.05 - 1e-12
        return (LEARNED if ok else FLAT), f"reward {first:.3f} → {last:.3f} ({last - first:+.3f}; needs +0.05)"
    if stage == "kto":
        margin = s.get("rewards/margins")
        if margin is None:
            return UNMEASURED, "no `rewards/margins` in the trainer logs"
        ok = last < 0.95 * 0.5 and margin[1] > 0
        why = f"loss ends {last:.3f} (needs < 0.475), margin ends {margin[1]:.3f} (needs > 0)"
        return (LEARNED if ok else FLAT), why
    ok = last <= 0.9 * first
    return (LEARNED if ok else FLAT), f"loss {first:.3f} → {last:.3f} ({_change(first, last)}; needs −10%)"


def _change(first: float, last: float) -> str:
    return f"{100 * (last - first) / first:+.0f}%" if first else "n/a"


def _preference(stage: str, s: dict[str, tuple[float, float]], pref_loss: str) -> tuple[str, str]:
    key = "odds_ratio_loss" if stage == "orpo" else "loss"
    accuracy = s.get("rewards/accuracies")
    checks_ln2 = stage == "orpo" or pref_loss == "sigmoid"  # other DPO losses do not start at ln 2
    if accuracy is None or (checks_ln2 and key not in s):
        return UNMEASURED, f"no `{key}` / `rewards/accuracies` in the trainer logs"
    reasons, ok = [], accuracy[1] >= 0.6
    if checks_ln2:
        loss = s[key][1]
        ok = ok and loss < 0.95 * LN2
        reasons.append(f"{key} ends {loss:.3f} ({100 * (loss - LN2) / LN2:+.1f}% from ln 2; needs < −5%)")
    reasons.append(f"accuracy ends {accuracy[1]:.2f} (needs ≥ 0.6)")
    return (LEARNED if ok else FLAT), ", ".join(reasons)


def run_health(train_dir: str | Path, stage: str | None = None, pref_loss: str = "sigmoid") -> Health | None:
    """Health of the run in `train_dir`; None when it has no trainer logs."""
    history = read_history(train_dir)
    return judge(history, stage, pref_loss) if training_rows(history) else None


def report_config(config: dict[str, Any], since: float = 0.0) -> Health | None:
    """After `qalign train CONFIG`: print the verdict of the run in its output_dir (training runs only, logs written
    at or after `since`, a time.time(), so an earlier run's logs are never reported as this one's)."""
    if not config.get("do_train") or not config.get("output_dir"):
        return None
    logs = [Path(config["output_dir"]) / name for name in ("trainer_state.json", "trainer_log.jsonl")]
    if not any(path.is_file() and path.stat().st_mtime >= since for path in logs):
        return None
    health = run_health(config["output_dir"], stage_of(config), str(config.get("pref_loss") or "sigmoid"))
    if health is not None:
        print(health.line(), flush=True)
    return health
