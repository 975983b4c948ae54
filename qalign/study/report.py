"""OUTPUT/report.md of a study: the table with bootstrap CIs, paired differences, figures, wins/losses, provenance.

Also writes OUTPUT/results.json (the same figures, machine-readable). Everything is read back from the runs'
`eval/scores.jsonl`, so the report can be rebuilt from a finished study without running anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.evaluators.bootstrap import Interval, bootstrap_ci, paired_bootstrap, scores_by_id
from qalign.evaluators.report import load_scores
from qalign.evaluators.scoring import METRIC_LABELS, METRICS, SUMMARY_FILE, answer_stats
from qalign.health import Health
from qalign.io import atomic_write_json, atomic_write_text
from qalign.study.claims import all_claims, claims_section, health_section, length_flags, row_health, training_cell
from qalign.study.config import StudyConfig
from qalign.study.plan import BASE_COT, Step, run_dir, run_id
from qalign.study.plots import CURVES_FILE, METHODS_FILE, plot_methods, plot_training_curves, read_history, series
from qalign.study.repro import reproducibility
from qalign.study.runner import StepResult

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
NO_TEACHER = "not run: no teacher file (set cot_teacher in the study file or pass --cot-teacher FILE|self)"
_EXAMPLES = 3


@dataclass
class Row:
    """One line of the table: a run (or the per-question mean over seeds), its scores or why it did not run."""

    label: str
    method: str
    seed: int | None
    status: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> question id -> score
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # question id -> scores.jsonl row
    run: str | None = None
    ci: dict[str, Interval] = field(default_factory=dict)
    health: Health | None = None  # training health of a trained run (None for base, seed means, missing logs)
    no_answer: float = 0.0  # predictions with no extractable answer (seed-mean rows: mean over the seeds)
    words: float = 0.0  # mean answer length in normalised words (no answer: 0)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _why_not(run: str, steps: list[Step], results: dict[str, StepResult]) -> str:
    for step in steps:
        result = results.get(step.name)
        if step.run == run and result and result.state in ("failed", "blocked"):
            return "not run: " + result.reason
    if any(step.run == run and results.get(step.name, StepResult("")).state == "planned" for step in steps):
        return "not run yet (planned)"
    return "not run"


def _load_row(label: str, method: str, seed: int | None, run: str, cfg: StudyConfig, steps: list[Step],
              results: dict[str, StepResult]) -> Row:
    eval_dir = run_dir(cfg, run) / "eval"
    if not (eval_dir / SUMMARY_FILE).is_file():
        return Row(label, method, seed, _why_not(run, steps, results), run=run)
    rows = load_scores(eval_dir)
    health = row_health(cfg, method, run_dir(cfg, run) / "train") if seed is not None else None
    missing, words = answer_stats(rows)
    return Row(label, method, seed, "ok", {m: scores_by_id(rows, m) for m in METRICS},
               {str(r["id"]): r for r in rows}, run, health=health, no_answer=missing, words=words)


def _seed_mean(method: str, label: str, rows: list[Row]) -> Row:
    common = set.intersection(*(set(r.scores["subem"]) for r in rows))
    order = [qid for qid in rows[0].scores["subem"] if qid in common]
    scores = {m: {qid: sum(r.scores[m][qid] for r in rows) / len(rows) for qid in order} for m in METRICS}
    seeds = ", ".join(str(r.seed) for r in rows)
    return Row(f"{label} (mean of seeds {seeds})", method, None, "ok", scores, rows[0].details,
               no_answer=sum(r.no_answer for r in rows) / len(rows), words=sum(r.words for r in rows) / len(rows))


def collect_rows(cfg: StudyConfig, steps: list[Step], results: dict[str, StepResult]) -> list[Row]:
    """Base, then every method (one row per seed, plus a seed-mean row when several seeds finished)."""
    rows = [_load_row("base", "base", None, "base", cfg, steps, results)]
    if cfg.runs_cot:
        rows.append(_load_row("base_model_cot", BASE_COT, None, BASE_COT, cfg, steps, results))
    for method in cfg.row_methods:
        if method == "cot" and not cfg.runs_cot:
            rows.append(Row("cot", "cot", None, NO_TEACHER))
            continue
        label = cfg.label(method)
        per_seed = [_load_row(label if len(cfg.seeds) == 1 else f"{label} (seed {seed})", method, seed,
                              run_id(method, seed), cfg, steps, results) for seed in cfg.seeds]
        rows += per_seed
        finished = [row for row in per_seed if row.ok]
        if len(finished) > 1:
            rows.append(_seed_mean(method, label, finished))
    for row in rows:
        if row.ok:
            row.ci = {m: bootstrap_ci(list(row.scores[m].values()), cfg.bootstrap_samples, cfg.bootstrap_seed,
                                      cfg.level) for m in METRICS}
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _reference(row: Row, rows: list[Row], method: str) -> Row | None:
    """The row `row` is compared with: the `method` run of the same seed (seed-mean rows: its seed-mean row)."""
    for other in rows:
        if other.ok and other.method == method and other.seed == row.seed and other is not row:
            return other
    return None


def _delta(row: Row, ref: Row | None, metric: str, cfg: StudyConfig) -> str:
    if ref is None or not row.ok:
        return "—"
    try:
        return paired_bootstrap(row.scores[metric], ref.scores[metric], cfg.bootstrap_samples, cfg.bootstrap_seed,
                                cfg.level).format(signed=True)
    except QalignError:
        return "no shared questions"


def results_table(rows: list[Row], cfg: StudyConfig) -> list[str]:
    """The main table and the paired-differences table (markdown lines)."""
    pct = f"{100 * cfg.level:g}%"
    lines = ["| method | n | SubEM | EM | F1 | no answer | words | training | status |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        cells = ([str(row.ci["subem"].n), *(row.ci[m].format() for m in METRICS), f"{row.no_answer:g}",
                  f"{row.words:.1f}"] if row.ok else ["—"] * 6)
        lines.append("| " + " | ".join(_cell(c) for c in [row.label, *cells, training_cell(row, rows), row.status])
                     + " |")
    lines += ["", f"Scores in % of test questions with {pct} percentile-bootstrap intervals over questions "
                  f"({cfg.bootstrap_samples} resamples, seed {cfg.bootstrap_seed}). no answer = predictions with no "
                  "extractable answer (an unclosed <think> without the answer marker, nothing after the marker, "
                  "empty), scored 0; words = mean answer length in normalised words (no answer: 0): a gain bought "
                  "with longer answers shows here. training = the run's verdict in Training health: a row marked "
                  "**did not learn** is not a method's effect.", "",
              f"### Differences (paired bootstrap, {pct})", "",
              "| method | " + " | ".join(f"Δ{METRIC_LABELS[m]} vs base" for m in METRICS) + " | "
              + " | ".join(f"Δ{METRIC_LABELS[m]} vs SFT" for m in METRICS) + " |",
              "|---|" + "---:|" * 6]
    base = rows[0] if rows and rows[0].ok else None
    for row in rows[1:]:
        if not row.ok:
            continue
        sft = None if row.method == "sft" else _reference(row, rows, "sft")
        cells = [_delta(row, base, m, cfg) for m in METRICS] + [_delta(row, sft, m, cfg) for m in METRICS]
        flat = row.health is not None and not row.health.learned
        label = f"{row.label} (**{row.health.verdict}**)" if flat and row.health else row.label
        lines.append("| " + " | ".join(_cell(c) for c in [label, *cells]) + " |")
    lines += ["", "Δ = method − reference in points, on the questions both answered (joined by id); the interval "
                  "resamples questions, the same ones for both. vs SFT compares with the SFT run of the same seed."]
    return lines


def wins_losses(rows: list[Row]) -> list[str]:
    """SubEM win counts between every pair of runs, then up to 3 examples each way for base -> best method."""
    runs = [row for row in rows if row.ok and row.run]
    if len(runs) < 2:
        return ["Fewer than two evaluated runs: nothing to compare."]
    lines = ["Cell = questions the row's method gets right (SubEM 1) and the column's method gets wrong.", "",
             "| wins ↓ over → | " + " | ".join(_cell(r.label) for r in runs) + " |", "|---|" + "---:|" * len(runs)]
    for a in runs:
        counts = ["—" if a is b else str(sum(1 for q, s in a.scores["subem"].items()
                                                if s == 1 and b.scores["subem"].get(q) == 0)) for b in runs]
        lines.append(f"| {_cell(a.label)} | " + " | ".join(counts) + " |")
    base = runs[0] if runs[0].method == "base" else None
    others = [r for r in runs if r.method != "base"]
    if base is None or not others:
        return lines
    best = max(others, key=lambda r: (r.ci["subem"].mean, r.ci["f1"].mean))
    lines += ["", f"Examples, base → best method by SubEM (`{best.label}`):"]
    for title, want in (("wins (base wrong, best right)", (0, 1)), ("losses (base right, best wrong)", (1, 0))):
        ids = [q for q, s in best.scores["subem"].items() if (base.scores["subem"].get(q), s) == want]
        lines += ["", f"**{len(ids)} {title}**" + (":" if ids else "."), ""]
        for qid in ids[:_EXAMPLES]:
            detail = best.details[qid]
            golds = ", ".join(f'"{a}"' for a in detail.get("answers", [])[:3])
            lines += [f"- {_short(detail.get('question', qid))} — gold: {golds}",
                      f"  - base: \"{_short(base.details[qid].get('prediction', ''))}\"",
                      f"  - {best.label}: \"{_short(detail.get('prediction', ''))}\""]
    return lines


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def curves_section(cfg: StudyConfig, rows: list[Row]) -> list[str]:
    """Draw training_curves.png and list first/last loss (and reward) per trained run."""
    trained = [row.run for row in rows if row.run and row.seed is not None]
    histories = {run: read_history(run_dir(cfg, run) / "train") for run in trained}
    histories = {run: h for run, h in histories.items() if h}
    if not plot_training_curves(histories, cfg.output / CURVES_FILE):
        return ["No training logs found (no method was trained)."]
    lines = [f"![training curves]({CURVES_FILE})", "", "| run | logged steps | loss first → last | "
             "reward first → last |", "|---|---:|---|---|"]
    for run, history in histories.items():
        (steps, loss), (_, reward) = series(history, "loss"), series(history, "reward")
        trend = [f"{v[0]:.3f} → {v[-1]:.3f}" if v else "—" for v in (loss, reward)]
        lines.append(f"| {run} | {len(steps)} | {trend[0]} | {trend[1]} |")
    return lines


def teacher_section(cfg: StudyConfig, steps: list[Step], results: dict[str, StepResult]) -> list[str]:
    """The CoT teacher: who it was, and per CoT dataset the samples drawn, kept at the threshold and dropped why."""
    from qalign.converters.registry import read_dataset_info

    kind = cfg.teacher_kind
    if kind is None:
        return [NO_TEACHER.replace("not run: ", "CoT-SFT not run: ")]
    if not cfg.runs_cot:
        return ["CoT-SFT not run: cot is not among the methods asked for (add it to --methods to run it)."]
    if kind == "endpoint":
        who = f"the endpoint {_endpoint_label(cfg.cot_teacher)} (`qalign teach`)"
    elif kind == "self":
        sft = " + each seed's SFT adapter" if "cot" in cfg.from_sft else ""
        who = f"the study's model `{cfg.model}`{sft} (self-distillation, `qalign teach`)"
    else:
        who = f"teacher file `{cfg.cot_teacher}`"
    lines = [f"Teacher: {who}; prompt `{cfg.cot_prompt}`; a sample is kept when it has reasoning and its answer "
             f"reaches F1 >= {cfg.cot_min_f1:g} (the best one per question).", "",
             "| dataset | samples drawn | reached F1 threshold | kept rows | dropped (why) |",
             "|---|---:|---:|---:|---|"]
    try:
        info = read_dataset_info(".")
    except QalignError:
        info = {}
    for step in (s for s in steps if s.argv[:2] == ["convert", "cot"]):
        name = step.argv[step.argv.index("--dataset") + 1]
        meta = (info.get(name) or {}).get("qalign") or {}
        if "drawn" not in meta:
            result = results.get(step.name)
            why = result.reason if result and result.reason else "not converted yet"
            lines.append(f"| {name} | — | — | — | {_cell(why)} |")
            continue
        dropped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in meta.get("dropped", {}).items() if n) or "none"
        lines.append(f"| {name} | {meta['drawn']} | {meta.get('reached', '—')} | {meta['rows']} | {dropped} |")
    lines += ["", "Dropped: low f1 = answer below the threshold; no reasoning = no closed <think> block; duplicate = "
                  "another kept-quality sample of a question already kept; unmatched = not a training question."]
    return lines


def _endpoint_label(teacher: Any) -> str:
    model = f" (model `{teacher['served_model']}`)" if teacher.get("served_model") else ""
    return f"`{teacher['url']}`{model}"


def _results_json(rows: list[Row], cfg: StudyConfig, claims: list, flags: list[str]) -> dict[str, Any]:
    return {"test": cfg.test, "test_split": cfg.split,
            "rows": [{"label": r.label, "method": r.method, "seed": r.seed, "status": r.status, "run": r.run,
                      "training": r.health.verdict if r.health else None, **{m: vars(r.ci[m]) for m in r.ci},
                      **({"no_answer": r.no_answer, "answer_words": r.words} if r.ok else {})}
                     for r in rows],
            "training_health": [{"run": r.run, **r.health.as_dict()} for r in rows if r.health is not None],
            "claims": [claim.as_dict() for claim in claims], "length_flags": flags}


def split_line(cfg: StudyConfig) -> str:
    """Which split every run of this report was scored on (dev or test), and that nothing was chosen on it."""
    where = {"dev": "the **dev** split", "test": "the **test** split", "validation": "a **validation** slice"}
    return (f"Split: every run here (base and each seed) was scored on `{cfg.test}`, "
            f"{where.get(cfg.split, f'split `{cfg.split}`')} (`test_split`); no run was scored on another split.")


def retrieval_lines(cfg: StudyConfig) -> list[str]:
    """With a `retrieve:` block: the corpus and the answer recall@k of the retrieved train and test files."""
    if not cfg.retrieve:
        return []
    from qalign.paths import recall_file

    cells = []
    for what in ("train", "test"):
        try:
            recall = json.loads(recall_file(cfg.retrieve[f"{what}_output"]).read_text(encoding="utf-8"))["recall"]
            cells.append(f"{what} " + ", ".join(f"@{k} {v:.3f}" for k, v in recall.items()))
        except (OSError, ValueError, KeyError, AttributeError):
            cells.append(f"{what} not retrieved")
    return [f"Passages: BM25 top-{cfg.retrieve['top_k']} from `{cfg.retrieve['corpus']}` (`qalign retrieve`); "
            f"answer recall {'; '.join(cells)}.", ""]


def write_report(cfg: StudyConfig, steps: list[Step], results: dict[str, StepResult], argv: list[str]) -> Path:
    """Build report.md (+ results.json and the PNGs) in the study's output folder; return the report path."""
    rows = collect_rows(cfg, steps, results)
    bars = {r.label: {METRIC_LABELS[m]: (r.ci[m].mean, r.ci[m].low, r.ci[m].high) for m in METRICS}
            for r in rows if r.ok}
    drew = plot_methods(bars, cfg.output / METHODS_FILE)
    claims = all_claims(rows, cfg)
    flags = length_flags(rows, cfg)
    lines = [f"# Study `{cfg.name}`", "", f"Model `{cfg.model}` (template `{cfg.template}`, recipes `{cfg.recipes}`); "
             f"train `{cfg.train}`, test `{cfg.test}`; prompt `{cfg.prompt}`, top-{cfg.top_k} passages. "
             f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}.", "", split_line(cfg), "", *retrieval_lines(cfg),
             f"## Results on the {cfg.split} set",
             "", *results_table(rows, cfg), "", f"![methods]({METHODS_FILE})" if drew else "No method was evaluated.",
             "", "## CoT teacher", "", *teacher_section(cfg, steps, results), "",
             "## Training health", "", *health_section(rows), "", "## Claims (seeds pooled)", "",
             *claims_section(claims, cfg), *(["", *flags] if flags else []), "", "## Training curves", "",
             *curves_section(cfg, rows), "",
             "## Wins and losses (SubEM)", "", *wins_losses(rows), "", reproducibility(cfg, steps, results, argv)]
    atomic_write_json(cfg.output / RESULTS_FILE, _results_json(rows, cfg, claims, flags))
    path = cfg.output / REPORT_FILE
    atomic_write_text(path, "\n".join(lines))
    return path
