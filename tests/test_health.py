"""The training-health rule on hand-made trainer logs (values computed by hand below)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qalign.health import FLAT, LEARNED, UNMEASURED, judge, read_history, report_config, stage_of, tenths


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
