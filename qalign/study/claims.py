"""The report's `## Training health` and `## Claims` sections: did each run learn, and which differences hold.

A claim "X beats Y" (on one metric) needs at least `MIN_SEEDS` seeds with both runs evaluated, every trained run
involved `learned`, every seed's paired difference of the same sign, and the pooled paired interval excluding 0.
Pooled = per question, the difference averaged over the seeds, resampled over questions (the same questions for
every seed, as `qalign.evaluators.bootstrap.paired_bootstrap` does for one seed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qalign.errors import QalignError
from qalign.evaluators.bootstrap import Interval, bootstrap_ci, paired_values
from qalign.evaluators.scoring import METRIC_LABELS
from qalign.health import FLAT, LEARNED, RULES, UNMEASURED, Health, LossTerms, run_health
from qalign.io import read_yaml_mapping
from qalign.study.plan import BASE_COT

if TYPE_CHECKING:
    from qalign.study.config import StudyConfig

Row = Any  # qalign.study.report.Row (which imports this module): label, method, seed, ok, scores, health

MIN_SEEDS = 3
LENGTH_FACTOR = 2.0  # answers this many times longer than SFT's while EM falls: length, not alignment
CLIPPED = "completions/clipped_ratio"  # GRPO: the share of completions cut at max_completion_length
CLAIM_METRICS = ("subem", "f1")
STAGE = {"sft": "sft", "cot": "sft", "dpo": "dpo", "orpo": "orpo", "kto": "kto", "grpo": "grpo"}


def row_health(cfg: StudyConfig, method: str, train_dir: Any, grid: dict[str, Any] | None = None) -> Health:
    """Health of one trained run: its stage from the method, its loss terms (pref_loss, pref_ftx, KTO weights) as
    the run was trained: recipe < train_args < the method's overrides < `grid` (a sweep point's keys). A run that
    logged no training step is `not measured`, with the reason, so it stays in the Training health table."""
    try:
        recipe = read_yaml_mapping(cfg.recipe(method), "recipe", "recipes/smollm2-135m/dpo.yaml")
    except QalignError:
        recipe = {}  # no recipe, no trained run: run_health finds no logs
    config = {**recipe, **cfg.train_args, **cfg.overrides.get(method, {}), **(grid or {})}
    health = run_health(train_dir, STAGE.get(method), LossTerms.of(config))
    return health if health is not None else Health(STAGE.get(method, "sft"), 0, {}, UNMEASURED,
                                                    unlogged_reason(Path(train_dir)))


def unlogged_reason(train_dir: Path) -> str:
    """Why a run has no logged training step: max_steps below logging_steps, or no trainer logs at all."""
    try:
        state = json.loads((train_dir / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no trainer logs in {train_dir}"
    ran, every = state.get("global_step"), state.get("logging_steps")
    if isinstance(ran, int) and isinstance(every, (int, float)) and ran < every:
        return (f"no training step logged: the run took {ran} step(s) and logs every {every:g} "
                "(max_steps below logging_steps); lower logging_steps or train longer")
    return "no training step logged (trainer_state.json has no loss or reward rows)"


UNTRAINED = ("base", BASE_COT)  # rows of the base model (with the answer or the CoT prompt): nothing trained


def training_cell(row: Row, rows: list[Row]) -> str:
    """The results table's `training` cell: the run's verdict; a seed-mean row: which seeds did not learn."""
    if not row.ok or row.method in UNTRAINED:
        return "—"
    if row.seed is not None:
        verdict = row.health.verdict if row.health else "not measured"
        return f"**{verdict}**" if verdict != LEARNED else verdict
    seeds = [r for r in rows if r.ok and r.method == row.method and r.seed is not None]
    bad = [r for r in seeds if not (r.health and r.health.learned)]
    if not bad:
        return "all seeds learned"
    flat = [str(r.seed) for r in bad if r.health and r.health.verdict == FLAT]
    return f"**did not learn: seed {', '.join(flat)}**" if flat else \
        f"**not measured: seed {', '.join(str(r.seed) for r in bad)}**"


def health_section(rows: list[Row]) -> list[str]:
    """One row per trained run: its signals (first tenth → last tenth), the verdict and why."""
    trained = [row for row in rows if row.run and row.seed is not None and row.health is not None]
    lines = [f"Rule: {RULES}", ""]
    if not trained:
        return [*lines, "No trainer logs found (no method was trained)."]
    lines += ["| run | stage | logged steps | signals (first tenth → last tenth) | clipped | verdict | why |",
              "|---|---|---:|---|---:|---|---|"]
    for row in trained:
        health = row.health
        verdict = health.verdict if health.learned else f"**{health.verdict}**"
        cells = [row.run or "", health.stage, str(health.steps), health.signal_text(), clipped_cell(health),
                 verdict, health.reason]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return [*lines, "", "clipped = GRPO's share of completions cut at the length cap (first tenth → last tenth): "
            "a high share means the reward was earned by truncated, long answers."]


def clipped_cell(health: Health) -> str:
    """GRPO's `completions/clipped_ratio` in percent, first tenth → last tenth ("—" for other stages)."""
    if health.stage != "grpo":
        return "—"
    if CLIPPED not in health.signals:
        return "not logged"
    first, last = health.signals[CLIPPED]
    return f"{100 * first:.0f}% → {100 * last:.0f}%"


@dataclass
class Claim:
    """One comparison on one metric: per-seed differences, their mean, the pooled interval and the sentence."""

    method: str
    reference: str
    metric: str
    seeds: list[int]
    per_seed: list[float]
    pooled: Interval | None
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reference": self.reference, "metric": self.metric, "seeds": self.seeds,
                "per_seed": self.per_seed, "mean": _mean(self.per_seed),
                "pooled": vars(self.pooled) if self.pooled else None, "verdict": self.verdict}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pairs(rows: list[Row], method: str, reference: str) -> list[tuple[Row, Row]]:
    """(method run, reference run) per seed where both were evaluated (the base run serves every seed)."""
    base = next((r for r in rows if r.ok and r.method == "base"), None)
    out = []
    for row in rows:
        if not (row.ok and row.method == method and row.seed is not None):
            continue
        ref = base if reference == "base" else next(
            (r for r in rows if r.ok and r.method == reference and r.seed == row.seed), None)
        if ref is not None:
            out.append((row, ref))
    return out


def compare(rows: list[Row], method: str, reference: str, metric: str, cfg: StudyConfig, label) -> Claim | None:
    """The claim of `method` vs `reference` on `metric` over the seeds both ran; None without a pair."""
    pairs = _pairs(rows, method, reference)
    if not pairs:
        return None
    diffs = [paired_values(a.scores[metric], b.scores[metric]) for a, b in pairs]
    per_seed = [float(d.mean()) for _, d in diffs]
    common = set.intersection(*(set(ids) for ids, _ in diffs))
    pooled_values = [sum(float(a.scores[metric][q]) - float(b.scores[metric][q]) for a, b in pairs) / len(pairs)
                     for q in diffs[0][0] if q in common]
    pooled = bootstrap_ci(pooled_values, cfg.bootstrap_samples, cfg.bootstrap_seed, cfg.level) if common else None
    seeds = [a.seed for a, _ in pairs]
    x, y, name = label(method), label(reference), METRIC_LABELS[metric]
    not_learned = [f"{r.method} seed {r.seed}" for pair in pairs for r in pair
                   if r.method != "base" and not (r.health and r.health.learned)]
    why = None
    if len(pairs) < MIN_SEEDS:
        why = f"{len(pairs)} seed(s); a claim needs {MIN_SEEDS}"
    elif not_learned:
        why = f"{', '.join(dict.fromkeys(not_learned))} did not visibly learn"
    elif pooled is None:
        why = "no question shared by every seed"
    elif not (all(d > 0 for d in per_seed) or all(d < 0 for d in per_seed)):
        why = "the seeds disagree in sign"
    elif pooled.low <= 0 <= pooled.high:
        why = "the pooled interval includes 0"
    if why:
        verdict = f"no difference found ({why})"
    else:
        winner, loser = (x, y) if per_seed[0] > 0 else (y, x)
        verdict = f"{winner} beats {loser} on {name}"
    return Claim(method, reference, metric, seeds, per_seed, pooled, verdict)


def all_claims(rows: list[Row], cfg: StudyConfig) -> list[Claim]:
    """Every method vs base, and every method but SFT vs SFT, on SubEM and F1."""
    methods = [m for m in cfg.row_methods if any(r.ok and r.method == m for r in rows)]
    claims = []
    for method in methods:
        for reference in ("base", "sft"):
            if reference == method:
                continue
            for metric in CLAIM_METRICS:
                claim = compare(rows, method, reference, metric, cfg, cfg.label)
                if claim is not None:
                    claims.append(claim)
    return claims


def length_flags(rows: list[Row], cfg: StudyConfig) -> list[str]:
    """A line per method whose mean answer length (over its seeds) exceeds LENGTH_FACTOR × SFT's on the same seeds
    while its EM falls vs SFT: whatever it gains on SubEM or F1 is length, not alignment."""
    flags = []
    for method in cfg.row_methods:
        pairs = _pairs(rows, method, "sft") if method != "sft" else []
        if not pairs:
            continue
        words, sft_words = (sum(r.words for r in side) / len(pairs) for side in zip(*pairs, strict=True))
        em = [float(d.mean()) for _, d in (paired_values(a.scores["em"], b.scores["em"]) for a, b in pairs)]
        delta = sum(em) / len(em)
        if words > LENGTH_FACTOR * sft_words and delta < 0:
            times = f"{words / sft_words:.1f}×" if sft_words else "more than"
            flags.append(f"**Length, not alignment: {cfg.label(method)}** answers average {words:.1f} words, "
                         f"{times} SFT's {sft_words:.1f}, while its EM falls {100 * delta:+.1f} points vs SFT "
                         f"(seeds {', '.join(str(a.seed) for a, _ in pairs)}): a SubEM or F1 gain here is bought "
                         "with longer answers, not better alignment.")
    return flags


def claims_section(claims: list[Claim], cfg: StudyConfig) -> list[str]:
    """The claims table and the sentences that hold."""
    pct = f"{100 * cfg.level:g}%"
    lines = [f"A sentence says \"X beats Y\" only where at least {MIN_SEEDS} seeds ran, every trained run involved "
             "learned (Training health), every seed's paired difference has the same sign and the pooled paired "
             f"{pct} interval (per-question differences averaged over seeds, resampled over questions) excludes 0. "
             "Everything else is \"no difference found\".", ""]
    if not claims:
        return [*lines, "Nothing to compare (no method and reference evaluated on a common seed)."]
    lines += ["| method | vs | metric | seeds | Δ per seed | mean Δ | pooled paired Δ | claim |",
              "|---|---|---|---|---|---:|---:|---|"]
    for c in claims:
        cells = [cfg.label(c.method), cfg.label(c.reference), METRIC_LABELS[c.metric], ", ".join(map(str, c.seeds)),
                 ", ".join(f"{100 * d:+.1f}" for d in c.per_seed), f"{100 * (_mean(c.per_seed) or 0):+.1f}",
                 c.pooled.format(signed=True) if c.pooled else "—", c.verdict]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    held = [c.verdict for c in claims if not c.verdict.startswith("no difference")]
    lines += ["", "Claims that hold: " + ("; ".join(held) + "." if held else "none — no difference found.")]
    return lines
