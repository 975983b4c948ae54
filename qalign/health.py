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
PREFERENCE_LOSS = "preference_loss"  # logged by qalign/lf/register.py: the preference term alone (no pref_ftx)
# the reward margin at which the sigmoid DPO loss -log σ(m) is 0.95 · ln 2, and at which both KTO terms
# 1 - σ(m/2) are 0.95 · 0.5 (KL 0): the fallback bounds when the logged loss carries other terms
DPO_MARGIN = -math.log(2 ** 0.95 - 1)
KTO_MARGIN = 2 * math.log(0.525 / 0.475)
NOISE = (
    "Run-to-run noise: two SFT runs of one seed on the same data differed by 3.3 SubEM on 300 questions on one "
    "H200 (bf16, non-deterministic kernels), so a single-run difference of that size is noise; "
    "`train_args: {full_determinism: true}` makes the kernels deterministic, at some speed."
)
RULES = (
    "SFT learned when its loss over the last tenth of logged steps is at least 10% below the first tenth. "
    f"DPO and ORPO learned when the preference loss over the last tenth (DPO: `{PREFERENCE_LOSS}`, the sigmoid loss "
    "without the pref_ftx SFT term, else `loss` when pref_ftx is 0; ORPO: its odds-ratio term `odds_ratio_loss`) "
    f"is below 0.95 · ln 2 = {0.95 * LN2:.3f} — within 5% of ln 2 (or above it) the policy never left its "
    "reference — and `rewards/accuracies` over the last tenth is at least 0.6; ipo, hinge and simpo read the "
    "accuracy only. KTO learned when its preference loss over the last tenth "
    f"(`{PREFERENCE_LOSS}`, the weighted mean Σwℓ/Σw without the pref_ftx term, 0.5 at the reference for any "
    "class weights; else `loss` when pref_ftx is 0 and both weights are 1) is below 0.95 · 0.5 = 0.475 and "
    "`rewards/margins` (chosen − rejected) over the last tenth is above 0. When only a `loss` with extra terms is "
    "logged (older runs with pref_ftx > 0 or KTO weights ≠ 1), the margin decides instead: DPO's "
    f"`rewards/margins` ends ≥ {DPO_MARGIN:.3f} (where the sigmoid loss is 0.95 · ln 2) with accuracy ≥ 0.6, "
    f"ORPO's margin rises with accuracy ≥ 0.6, KTO's margin ends ≥ {KTO_MARGIN:.3f} (both KTO terms at 0.475). "
    "GRPO learned when the mean `reward` over the last tenth is at least 0.05 above the first tenth. A rule that "
    "compares first and last tenth needs at least 2 logged steps; a run without the logs its rule reads is "
    f"`not measured`. {NOISE}"
)
# the keys each stage's trainer logs (TRL 0.24 / LLaMA-Factory 0.9.5 names), in the order the report shows them
SIGNALS: dict[str, tuple[str, ...]] = {
    "sft": ("loss",),
    "dpo": ("loss", PREFERENCE_LOSS, "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"),
    "orpo": ("loss", "odds_ratio_loss", PREFERENCE_LOSS, "rewards/accuracies", "rewards/margins", "logps/chosen",
             "logps/rejected"),
    "kto": ("loss", PREFERENCE_LOSS, "rewards/chosen", "rewards/rejected", "rewards/margins", "kl"),
    "grpo": ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio"),
}
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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def training_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows logged during training (not eval rows, not the final `train_loss` summary)."""
    return [row for row in history if any(_finite(row.get(key)) for key in ("loss", "reward"))]


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


@dataclass(frozen=True)
class LossTerms:
    """What a run's logged `loss` is made of: DPO's pref_loss, the SFT term pref_ftx, KTO's class weights."""

    pref_loss: str = "sigmoid"
    pref_ftx: float = 0.0
    kto_weights: tuple[float, float] = (1.0, 1.0)  # (kto_chosen_weight, kto_rejected_weight)

    @classmethod
    def of(cls, config: dict[str, Any]) -> LossTerms:
        """The terms of a LLaMA-Factory config (LLaMA-Factory's defaults for missing keys)."""
        def number(key: str, default: float) -> float:
            value = config.get(key)
            if isinstance(value, str) and value.strip().lower() == "auto":
                return math.nan  # resolved when the run started (kto_*_weight: auto): not unit weights
            return default if value is None else float(value)

        return cls(str(config.get("pref_loss") or "sigmoid").lower(), number("pref_ftx", 0.0),
                   (number("kto_chosen_weight", 1.0), number("kto_rejected_weight", 1.0)))

    def loss_is_preference(self, stage: str) -> bool:
        """Whether the logged `loss` is the preference loss alone (no SFT term; for KTO unit weights)."""
        return self.pref_ftx <= 1e-6 and (stage != "kto" or self.kto_weights == (1.0, 1.0))


def judge(history: list[dict[str, Any]], stage: str | None = None, terms: LossTerms | None = None) -> Health:
    """Signals and verdict of one run's log rows (`stage` inferred from the keys when not given)."""
    rows = training_rows(history)
    stage = stage or infer_stage(rows)
    signals = {}
    for key in SIGNALS.get(stage, ("loss",)):
        values = [float(row[key]) for row in rows if _finite(row.get(key))]
        if values:
            signals[key] = tenths(values)
    health = Health(stage, len(rows), signals)
    health.verdict, health.reason = _verdict(stage, signals, len(rows), terms or LossTerms())
    return health


def _verdict(stage: str, s: dict[str, tuple[float, float]], steps: int, terms: LossTerms) -> tuple[str, str]:
    if stage in ("dpo", "orpo"):
        return _preference(stage, s, terms)
    if stage == "kto":
        return _kto(s, terms)
    key = {"grpo": "reward"}.get(stage, "loss")
    if key not in s:
        return UNMEASURED, f"no `{key}` in the trainer logs"
    if steps < 2:
        return UNMEASURED, f"{steps} logged step (the rule compares first and last tenth)"
    first, last = s[key]
    if stage == "grpo":
        ok = last - first >= 0.05 - 1e-12
        return (LEARNED if ok else FLAT), f"reward {first:.3f} → {last:.3f} ({last - first:+.3f}; needs +0.05)"
    ok = last <= 0.9 * first
    return (LEARNED if ok else FLAT), f"loss {first:.3f} → {last:.3f} ({_change(first, last)}; needs −10%)"


def _change(first: float, last: float) -> str:
    return f"{100 * (last - first) / first:+.0f}%" if first else "n/a"


def _kto(s: dict[str, tuple[float, float]], terms: LossTerms) -> tuple[str, str]:
    margin = s.get("rewards/margins")
    key = PREFERENCE_LOSS if PREFERENCE_LOSS in s else "loss" if terms.loss_is_preference("kto") else None
    if margin is None or (key is not None and key not in s):
        return UNMEASURED, f"no `{key or 'loss'}` / `rewards/margins` in the trainer logs"
    if key is None:  # `loss` = weighted KTO + pref_ftx · SFT: its value at the reference is not 0.5
        ok = margin[1] >= KTO_MARGIN
        return (LEARNED if ok else FLAT), (f"margin ends {margin[1]:.3f} (needs ≥ {KTO_MARGIN:.3f}; `loss` carries "
                                           f"pref_ftx {terms.pref_ftx:g} / weights {terms.kto_weights})")
    last = s[key][1]
    ok = last < 0.95 * 0.5 and margin[1] > 0
    return (LEARNED if ok else FLAT), f"{key} ends {last:.3f} (needs < 0.475), margin ends {margin[1]:.3f} (needs > 0)"


def _preference(stage: str, s: dict[str, tuple[float, float]], terms: LossTerms) -> tuple[str, str]:
    accuracy = s.get("rewards/accuracies")
    if stage == "orpo":  # odds_ratio_loss is clean when qalign logged it (preference_loss beside it) or ftx is 0
        key = "odds_ratio_loss" if PREFERENCE_LOSS in s or terms.pref_ftx <= 1e-6 else None
    elif terms.pref_loss != "sigmoid":  # other DPO losses do not start at ln 2: accuracy only
        key = ""
    else:
        key = PREFERENCE_LOSS if PREFERENCE_LOSS in s else "loss" if terms.loss_is_preference("dpo") else None
    if accuracy is None or (key and key not in s):
        return UNMEASURED, f"no `{key or 'loss'}` / `rewards/accuracies` in the trainer logs"
    reasons, ok = [], accuracy[1] >= 0.6
    if key:
        loss = s[key][1]
        ok = ok and loss < 0.95 * LN2
        reasons.append(f"{key} ends {loss:.3f} ({100 * (loss - LN2) / LN2:+.1f}% from ln 2; needs < −5%)")
    elif key is None:  # only a loss with the pref_ftx SFT term in it: the margin decides
        margin = s.get("rewards/margins")
        if margin is None:
            return UNMEASURED, "no `rewards/margins` in the trainer logs (and `loss` carries the pref_ftx term)"
        if stage == "orpo":
            ok = ok and margin[1] > margin[0]
            reasons.append(f"margin {margin[0]:.3f} → {margin[1]:.3f} (needs to rise)")
        else:
            ok = ok and margin[1] >= DPO_MARGIN
            reasons.append(f"margin ends {margin[1]:.3f} (needs ≥ {DPO_MARGIN:.3f})")
        reasons.append(f"`loss` carries pref_ftx {terms.pref_ftx:g}")
    reasons.insert(1 if key else 0, f"accuracy ends {accuracy[1]:.2f} (needs ≥ 0.6)")
    return (LEARNED if ok else FLAT), ", ".join(reasons)


def run_health(train_dir: str | Path, stage: str | None = None, terms: LossTerms | None = None) -> Health | None:
    """Health of the run in `train_dir`; None when it has no trainer logs."""
    history = read_history(train_dir)
    return judge(history, stage, terms) if training_rows(history) else None


def report_config(config: dict[str, Any], since: float = 0.0) -> Health | None:
    """After `qalign train CONFIG`: print the verdict of the run in its output_dir (training runs only, logs written
    at or after `since`, a time.time(), so an earlier run's logs are never reported as this one's)."""
    if not config.get("do_train") or not config.get("output_dir"):
        return None
    logs = [Path(config["output_dir"]) / name for name in ("trainer_state.json", "trainer_log.jsonl")]
    if not any(path.is_file() and path.stat().st_mtime >= since for path in logs):
        return None
    health = run_health(config["output_dir"], stage_of(config), LossTerms.of(config))
    if health is not None:
        print(health.line(), flush=True)
    return health
