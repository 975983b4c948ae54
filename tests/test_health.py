"""The training-health rule on hand-made trainer logs (values computed by hand below)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from qalign.health import (
    DPO_MARGIN,
    FLAT,
    KTO_MARGIN,
    LEARNED,
    RULES,
    UNMEASURED,
    LossTerms,
    judge,
    read_history,
    report_config,
    stage_of,
    tenths,
)


def _dpo(losses: list[float], accuracies: list[float]) -> list[dict]:
    rows = [{"step": 5 * (i + 1), "loss": loss, "rewards/accuracies": acc, "rewards/margins": 0.1 * i,
             "logps/chosen": -20.0, "logps/rejected": -30.0 - i} for i, (loss, acc) in
            enumerate(zip(losses, accuracies, strict=True))]
    return [*rows, {"step": 5 * len(rows), "train_loss": 0.69, "train_runtime": 1.0}]  # the summary row is skipped


def test_tenths_are_means_of_the_first_and_last_ceil_n_over_10_rows() -> None:
    assert tenths([1.0, 2.0, 3.0]) == (1.0, 3.0)
    assert tenths([float(v) for v in range(11)]) == (0.5, 9.5)  # ceil(11/10) = 2 rows each side


def test_a_flat_dpo_log_did_not_learn_and_a_moving_one_did() -> None:
    flat = judge(_dpo([0.695, 0.693, 0.692, 0.691], [0.5, 0.5, 0.75, 0.5]), "dpo")
    assert flat.verdict == FLAT and flat.steps == 4
    assert flat.signals["loss"] == (0.695, 0.691) and flat.signals["rewards/accuracies"] == (0.5, 0.5)
    assert "loss ends 0.691 (-0.3% from ln 2" in flat.reason and "accuracy ends 0.50" in flat.reason
    moving = judge(_dpo([0.693, 0.60, 0.45, 0.30], [0.5, 0.7, 0.8, 0.9]), "dpo")
    assert moving.verdict == LEARNED and moving.learned
    assert moving.signals["rewards/margins"] == pytest.approx((0.0, 0.3))
    assert moving.signals["logps/rejected"] == (-30.0, -33.0)
    # the loss moved but the pairs are still ordered at chance: did not learn
    assert judge(_dpo([0.693, 0.5, 0.4, 0.3], [0.5, 0.5, 0.55, 0.55]), "dpo").verdict == FLAT
    # within 5% of ln 2 (0.6585 is the bound): 0.66 is still flat even with high accuracy
    assert judge(_dpo([0.693, 0.68, 0.67, 0.66], [0.5, 0.8, 0.9, 0.9]), "dpo").verdict == FLAT
    assert judge(_dpo([0.7, 0.6], [0.5, 0.9]), None).stage == "dpo"  # stage from the keys


def test_orpo_reads_its_odds_ratio_term_and_kto_its_margin() -> None:
    orpo = [{"loss": 2.0 - 0.1 * i, "odds_ratio_loss": 0.69 - 0.1 * i, "rewards/accuracies": 0.5 + 0.1 * i}
            for i in range(4)]
    health = judge(orpo, "orpo")
    assert health.verdict == LEARNED and health.signals["odds_ratio_loss"] == pytest.approx((0.69, 0.39))
    assert judge([{**r, "odds_ratio_loss": 0.69} for r in orpo], "orpo").verdict == FLAT
    kto = [{"loss": loss, "kl": 0.0, "rewards/chosen": 0.1 * i, "rewards/rejected": -0.1 * i,
            "rewards/margins": 0.2 * i} for i, loss in enumerate([0.5, 0.45, 0.40])]
    assert judge(kto, "kto").verdict == LEARNED  # 0.40 < 0.475 and margin 0.4 > 0
    flat_kto = [{**row, "loss": loss} for row, loss in zip(kto, [0.500, 0.495, 0.492], strict=True)]
    assert judge(flat_kto, "kto").verdict == FLAT and "loss ends 0.492" in judge(flat_kto, "kto").reason


def test_grpo_needs_plus_0_05_reward_and_sft_a_10_percent_drop() -> None:
    def grpo(rewards: list[float]) -> list[dict]:
        return [{"step": i + 1, "loss": 0.0, "reward": r, "reward_std": 0.2, "frac_reward_zero_std": 0.5,
                 "completions/mean_length": 10.0 - i, "completions/clipped_ratio": 0.0} for i, r in enumerate(rewards)]

    # 20 rows: first tenth = rows 1-2, last tenth = rows 19-20
    flat = judge(grpo([0.02, 0.03] + [0.05] * 16 + [0.06, 0.07]), "grpo")
    assert flat.signals["reward"] == pytest.approx((0.025, 0.065)) and flat.verdict == FLAT
    assert "+0.040; needs +0.05" in flat.reason
    moving = judge(grpo([0.02, 0.03] + [0.1] * 16 + [0.2, 0.3]), "grpo")
    assert moving.verdict == LEARNED and moving.signals["completions/mean_length"] == (9.5, -8.5)
    assert set(moving.signals) == {"reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
                                   "completions/clipped_ratio"}
    assert judge(grpo([0.1]), "grpo").verdict == UNMEASURED  # one logged step: nothing to compare
    sft = [{"loss": v} for v in (2.30, 1.5, 0.9, 0.59)]
    assert judge(sft, "sft").verdict == LEARNED and judge([{"loss": 2.3}, {"loss": 2.2}], "sft").verdict == FLAT


def test_logs_are_read_from_trainer_state_else_trainer_log_jsonl(tmp_path: Path, capsys) -> None:
    rows = [{"current_steps": 1, "loss": 0.693, "accuracy": 0.5}, {"current_steps": 2, "loss": 0.69, "accuracy": 0.5}]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_history(tmp_path)[1] == {"current_steps": 2, "loss": 0.69, "rewards/accuracies": 0.5, "step": 2}
    config = {"stage": "dpo", "do_train": True, "output_dir": str(tmp_path)}
    assert report_config(config).verdict == FLAT
    assert "training health (dpo, 2 logged steps): DID NOT LEARN" in capsys.readouterr().out
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": _dpo([0.6, 0.3], [0.7, 0.9])}))
    assert report_config(config).verdict == LEARNED  # trainer_state.json wins
    assert report_config(config, since=time.time() + 60) is None  # logs older than this run: not reported
    assert report_config({**config, "do_train": False}) is None and stage_of({"stage": "dpo", "pref_loss": "orpo"}) \
        == "orpo"


def _rows(**series: list[float]) -> list[dict]:
    """Log rows from per-key series of equal length (step i+1)."""
    n = len(next(iter(series.values())))
    return [{"step": i + 1, **{key.replace("__", "/"): values[i] for key, values in series.items()}} for i in range(n)]


def test_dpo_with_pref_ftx_reads_the_preference_part_not_the_total_loss() -> None:
    ftx = LossTerms(pref_ftx=1.0)
    # the run: accuracy 0.61 -> 0.75, total loss = DPO + SFT stays far above ln 2
    learned = _rows(loss=[2.10, 1.80, 1.60, 1.45], preference_loss=[0.693, 0.62, 0.55, 0.50],
                    rewards__accuracies=[0.61, 0.68, 0.72, 0.75], rewards__margins=[0.0, 0.1, 0.2, 0.3])
    total_only = [{k: v for k, v in row.items() if k != "preference_loss"} for row in learned]
    assert judge(total_only, "dpo").verdict == FLAT  # the old reading: `loss` 1.45 is not below 0.658
    health = judge(learned, "dpo", ftx)
    assert health.verdict == LEARNED and "preference_loss ends 0.500" in health.reason
    assert health.signals["preference_loss"] == (0.693, 0.50)
    flat = [{**row, "preference_loss": 0.69} for row in learned]
    assert judge(flat, "dpo", ftx).verdict == FLAT  # accuracy rose but the policy never left ln 2
    # without pref_ftx the logged preference_loss equals loss and decides the same way
    pure = _rows(loss=[0.693, 0.6, 0.5], preference_loss=[0.693, 0.6, 0.5], rewards__accuracies=[0.5, 0.7, 0.8])
    assert judge(pure, "dpo").verdict == LEARNED and judge(pure, "dpo", ftx).verdict == LEARNED


def test_an_older_dpo_run_with_pref_ftx_falls_back_to_accuracy_and_margin() -> None:
    ftx = LossTerms(pref_ftx=1.0)
    old = _rows(loss=[2.10, 1.80, 1.60, 1.45], rewards__accuracies=[0.61, 0.68, 0.72, 0.75],
                rewards__margins=[0.0, 0.1, 0.2, 0.3])
    health = judge(old, "dpo", ftx)
    assert health.verdict == LEARNED and f"margin ends 0.300 (needs ≥ {DPO_MARGIN:.3f})" in health.reason
    assert "`loss` carries pref_ftx 1" in health.reason
    tiny_margin = [{**row, "rewards/margins": 0.05} for row in old]  # ordered, but by less than 0.0705
    assert judge(tiny_margin, "dpo", ftx).verdict == FLAT
    chance = [{**row, "rewards/accuracies": 0.5} for row in old]
    assert judge(chance, "dpo", ftx).verdict == FLAT
    assert judge([{k: v for k, v in r.items() if k != "rewards/margins"} for r in old], "dpo", ftx).verdict \
        == UNMEASURED
    assert DPO_MARGIN == pytest.approx(0.0705, abs=1e-4)  # -log sigmoid(0.0705) = 0.95 ln 2
    assert -math.log(1 / (1 + math.exp(-DPO_MARGIN))) == pytest.approx(0.95 * math.log(2))


def test_orpo_with_pref_ftx_trusts_only_the_odds_ratio_term_qalign_logged() -> None:
    ftx = LossTerms(pref_loss="orpo", pref_ftx=1.0)
    # older run: LLaMA-Factory's odds_ratio_loss carries pref_ftx * sft / beta, far above ln 2
    old = _rows(loss=[3.0, 2.8, 2.6], odds_ratio_loss=[20.0, 19.0, 18.0], rewards__accuracies=[0.5, 0.7, 0.8],
                rewards__margins=[-0.2, -0.1, 0.1])
    assert judge(old, "orpo").verdict == FLAT and judge(old, "orpo", ftx).verdict == LEARNED
    assert judge([{**r, "rewards/margins": -0.2} for r in old], "orpo", ftx).verdict == FLAT
    new = [{**r, "odds_ratio_loss": v, "preference_loss": 1.0} for r, v in zip(old, [0.69, 0.6, 0.5], strict=True)]
    assert judge(new, "orpo", ftx).verdict == LEARNED
    assert judge([{**r, "odds_ratio_loss": 0.69} for r in new], "orpo", ftx).verdict == FLAT


def test_kto_with_pref_ftx_or_class_weights_reads_the_weight_normalised_preference_part() -> None:
    kto = dict(kl=[0.0] * 3, rewards__chosen=[0.0, 0.1, 0.2], rewards__rejected=[0.0, -0.1, -0.2],
               rewards__margins=[0.0, 0.2, 0.4])
    for terms in (LossTerms(pref_ftx=1.0), LossTerms(kto_weights=(2.0, 1.0)),
                  LossTerms(pref_ftx=0.5, kto_weights=(1.0, 1.33))):
        learned = _rows(loss=[1.6, 1.4, 1.3], preference_loss=[0.5, 0.46, 0.44], **kto)
        total_only = [{k: v for k, v in row.items() if k != "preference_loss"} for row in learned]
        assert judge(total_only, "kto").verdict == FLAT  # the old reading: loss 1.3 is not below 0.475
        assert judge(learned, "kto", terms).verdict == LEARNED
        flat = _rows(loss=[1.6, 1.5, 1.5], preference_loss=[0.5, 0.499, 0.495], **kto)
        assert judge(flat, "kto", terms).verdict == FLAT and "preference_loss ends 0.495" in \
            judge(flat, "kto", terms).reason
        # an older run logs only the total: the margin decides (0.4 ≥ 0.200 learned; 0.1 not)
        old = _rows(loss=[1.6, 1.4, 1.3], **kto)
        assert judge(old, "kto", terms).verdict == LEARNED
        assert f"needs ≥ {KTO_MARGIN:.3f}" in judge(old, "kto", terms).reason
        small = [{**row, "rewards/margins": 0.1} for row in old]
        assert judge(small, "kto", terms).verdict == FLAT
    # weights 2 / 1 and no pref_ftx: the loss at the reference is 0.5 * mean weight, not 0.5
    weighted = _rows(loss=[0.75, 0.74, 0.73], **{**kto, "rewards__margins": [0.0, 0.02, 0.03]})
    assert judge(weighted, "kto", LossTerms(kto_weights=(2.0, 1.0))).verdict == FLAT
    pure = _rows(loss=[0.5, 0.45, 0.40], **kto)  # unit weights, no pref_ftx: `loss` is the KTO term
    assert judge(pure, "kto", LossTerms()).verdict == LEARNED and "loss ends 0.400" in judge(pure, "kto").reason


def test_loss_terms_come_from_the_config_and_reach_report_config(tmp_path: Path) -> None:
    assert LossTerms.of({"stage": "kto", "pref_ftx": 1, "kto_chosen_weight": 2.0}) == \
        LossTerms("sigmoid", 1.0, (2.0, 1.0))
    assert LossTerms.of({"pref_loss": "IPO", "pref_ftx": None}) == LossTerms("ipo", 0.0, (1.0, 1.0))
    history = _rows(loss=[2.0, 1.6, 1.4], rewards__accuracies=[0.6, 0.7, 0.8], rewards__margins=[0.0, 0.2, 0.4])
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    config = {"stage": "dpo", "do_train": True, "output_dir": str(tmp_path)}
    assert report_config(config).verdict == FLAT
    assert report_config({**config, "pref_ftx": 1.0}).verdict == LEARNED


def test_row_health_reads_pref_ftx_from_recipe_overrides_and_sweep_grid(tmp_path: Path) -> None:
    from qalign.study.claims import row_health
    from qalign.study.config import build_config

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "dpo.yaml").write_text("stage: dpo\npref_ftx: 1.0\n")
    (recipes / "kto.yaml").write_text("stage: kto\n")
    train = tmp_path / "train"
    train.mkdir()
    history = _rows(loss=[2.0, 1.6, 1.4], rewards__accuracies=[0.6, 0.7, 0.8], rewards__margins=[0.0, 0.2, 0.4])
    (train / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    base = {"name": "u", "model": "m", "template": "smollm2", "recipes": str(recipes), "train": "a", "test": "b"}
    assert row_health(build_config(base), "dpo", train).verdict == LEARNED  # the recipe's pref_ftx
    no_ftx = build_config({**base, "overrides": {"dpo": {"pref_ftx": 0.0}}})
    assert row_health(no_ftx, "dpo", train).verdict == FLAT  # the override wins: `loss` is read as pure DPO
    assert row_health(no_ftx, "dpo", train, {"pref_ftx": 0.5}).verdict == LEARNED  # a sweep point's key wins
    kto = _rows(loss=[0.75, 0.7, 0.66], kl=[0.0] * 3, rewards__margins=[0.0, 0.2, 0.3])
    (train / "trainer_state.json").write_text(json.dumps({"log_history": kto}))
    weighted = build_config({**base, "train_args": {"kto_chosen_weight": 2.0}})
    assert row_health(build_config(base), "kto", train).verdict == FLAT
    assert row_health(weighted, "kto", train).verdict == LEARNED


def test_the_rules_say_how_large_run_to_run_noise_is() -> None:
    assert "3.3 SubEM on 300 questions" in RULES and "full_determinism" in RULES


def test_a_study_hands_full_determinism_to_every_training_run() -> None:
    from qalign.lf.recipe_checks import llamafactory_fields
    from qalign.study.config import build_config
    from qalign.study.plan import build_plan

    cfg = build_config({"name": "u", "model": "m", "template": "smollm2", "recipes": "recipes/smollm2-135m",
                        "train": "a", "test": "b", "methods": ["sft", "dpo"], "train_args": {"full_determinism": True}})
    trains = [step for step in build_plan(cfg) if step.name.startswith("train ")]
    assert trains and all(step.recipe.keys["full_determinism"] is True for step in trains)  # in each recipe file
    assert "full_determinism" in llamafactory_fields()  # a key `qalign train` accepts (HF TrainingArguments)
