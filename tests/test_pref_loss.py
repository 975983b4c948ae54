"""`pref_loss` trains what it names (qalign/lf/register.py patch points 7-9), on one hand-made batch of log-probs.

The trainers are real CustomDPOTrainer / CustomKTOTrainer instances built without __init__ (no model): only the
attributes their loss code reads are set. Each expected value is the loss formula computed by hand here.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from qalign.errors import QalignError
from qalign.lf.register import register_all

register_all()
from llamafactory.hparams import FinetuningArguments  # noqa: E402  (patched on import)
from llamafactory.train.dpo.trainer import CustomDPOTrainer  # noqa: E402
from llamafactory.train.kto.trainer import CustomKTOTrainer  # noqa: E402

BETA, GAMMA = 0.1, 0.5
# two pairs: policy / reference log-probs of chosen and rejected (averages for orpo/simpo: all below 0)
PC, PR, RC, RR = [-2.0, -5.0], [-3.0, -4.0], [-2.5, -4.0], [-2.5, -4.5]
CPU = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _by_hand(loss: str) -> float:
    """The batch mean of each loss, written out per pair (TRL's dpo_loss / LLaMA-Factory's orpo and simpo)."""
    values = []
    for pc, pr, rc, rr in zip(PC, PR, RC, RR, strict=True):
        h = (pc - pr) - (rc - rr)  # DPO's logit: policy log-ratio minus reference log-ratio
        values.append({
            "sigmoid": -math.log(_sigmoid(BETA * h)),
            "ipo": (h - 1 / (2 * BETA)) ** 2,
            "hinge": max(0.0, 1 - BETA * h),
            "simpo": -math.log(_sigmoid(BETA * (pc - pr) - GAMMA)),
            "orpo": -pc - BETA * math.log(_sigmoid(
                (pc - pr) - (math.log(1 - math.exp(pc)) - math.log(1 - math.exp(pr))))),
        }[loss])
    return sum(values) / len(values)


def _dpo_trainer(loss: str, ftx: float = 0.0) -> CustomDPOTrainer:
    trainer = object.__new__(CustomDPOTrainer)
    args = FinetuningArguments(stage="dpo", pref_loss=loss, pref_beta=BETA, pref_ftx=ftx, simpo_gamma=GAMMA)
    trainer.__dict__.update(finetuning_args=args, loss_type=args.pref_loss, beta=BETA, ftx_gamma=ftx,
                            simpo_gamma=GAMMA, bco_gemma=0.0, label_smoothing=0.0, reference_free=False,
                            f_divergence_type="reverse_kl", accelerator=CPU)
    return trainer


def _tensors(*values: list[float]) -> list[torch.Tensor]:
    return [torch.tensor(v) for v in values]


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "simpo", "orpo"])
def test_each_pref_loss_is_its_own_formula(loss: str) -> None:
    trainer = _dpo_trainer(loss)
    refs = _tensors(RC, RR) if trainer.finetuning_args.use_ref_model else [None, None]
    losses, chosen, rejected = trainer.compute_preference_loss(*_tensors(PC, PR), *refs)
    assert losses.mean().item() == pytest.approx(_by_hand(loss), rel=1e-6)
    if loss in ("sigmoid", "ipo", "hinge"):  # TRL's rewards: beta * (policy - reference)
        assert chosen.tolist() == pytest.approx([BETA * (p - r) for p, r in zip(PC, RC, strict=True)])


def test_the_five_losses_differ_on_one_batch() -> None:
    # old LLaMA-Factory: ipo and hinge gave the sigmoid value (dpo_loss called without loss_type)
    values = {}
    for loss in ("sigmoid", "ipo", "hinge", "simpo", "orpo"):
        trainer = _dpo_trainer(loss)
        refs = _tensors(RC, RR) if trainer.finetuning_args.use_ref_model else [None, None]
        values[loss] = trainer.compute_preference_loss(*_tensors(PC, PR), *refs)[0].mean().item()
    assert len({round(v, 6) for v in values.values()}) == 5, values
    assert values["ipo"] == pytest.approx((16.0 + 42.25) / 2) and values["hinge"] == pytest.approx(1.025)


def test_kto_pair_is_refused_naming_the_bug_and_the_fix() -> None:
    with pytest.raises(QalignError) as refused:
        FinetuningArguments(stage="dpo", pref_loss="kto_pair")
    message = str(refused.value)
    assert "kto_pair" in message and "dpo_loss without loss_type" in message and "sigmoid" in message
    assert "stage: kto" in message
    FinetuningArguments(stage="kto", pref_loss="kto_pair")  # pref_loss is not read by stage kto: no error
    trainer = _dpo_trainer("sigmoid")
    trainer.loss_type = "kto_pair"  # a trainer built around the argument check is refused too
    with pytest.raises(QalignError, match="stage: kto"):
        trainer.compute_preference_loss(*_tensors(PC, PR, RC, RR))


def _fake_forward(trainer: CustomDPOTrainer, chosen_avg: list[float]) -> None:
    logits = torch.zeros(2, 3, 5)
    trainer.concatenated_forward = lambda model, batch: {
        "chosen_logps": torch.tensor(PC), "rejected_logps": torch.tensor(PR), "chosen_logits": logits,
        "rejected_logits": logits, "chosen_logps_avg": torch.tensor(chosen_avg)}
    trainer.compute_reference_log_probs = lambda model, batch: (torch.tensor(RC), torch.tensor(RR))


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_dpo_logs_its_preference_part_without_the_pref_ftx_term(loss: str) -> None:
    trainer = _dpo_trainer(loss, ftx=1.0)
    _fake_forward(trainer, chosen_avg=[-0.5, -1.5])  # SFT term = mean(-avg) = 1.0
    total, metrics = trainer.get_batch_loss_metrics(None, {}, train_eval="eval")
    assert metrics["eval_preference_loss"] == pytest.approx(_by_hand(loss), rel=1e-6)
    assert total.item() == pytest.approx(_by_hand(loss) + 1.0, rel=1e-6)


def test_orpo_logs_an_odds_ratio_term_without_the_pref_ftx_term() -> None:
    trainer = _dpo_trainer("orpo", ftx=2.0)
    _fake_forward(trainer, chosen_avg=PC)  # orpo/simpo/ipo: chosen_logps are already averages
    total, metrics = trainer.get_batch_loss_metrics(None, {})
    sft = -sum(PC) / 2
    assert total.item() == pytest.approx(_by_hand("orpo") + 2.0 * sft, rel=1e-6)
    assert metrics["preference_loss"] == pytest.approx(_by_hand("orpo"), rel=1e-6)
    # LLaMA-Factory's own value would be (orpo + 2 sft - sft) / beta: pref_ftx leaks into the odds-ratio term
    assert metrics["odds_ratio_loss"] == pytest.approx((_by_hand("orpo") - sft) / BETA, rel=1e-5)


def test_kto_logs_its_weighted_mean_preference_part() -> None:
    trainer = object.__new__(CustomKTOTrainer)
    wd, wu = 2.0, 0.5
    trainer.__dict__.update(beta=BETA, desirable_weight=wd, undesirable_weight=wu, ftx_gamma=1.0, loss_type="kto",
                            calculate_KL=False, accelerator=CPU)
    # batch: two desirable examples (PC vs RC) and one undesirable (-4 vs ref -3)
    trainer.concatenated_forward = lambda model, batch: (
        torch.tensor(PC), torch.tensor([-4.0]), torch.zeros(2, 3), torch.zeros(1, 3), torch.zeros(3),
        torch.tensor([-1.0, -2.0]))
    trainer.compute_reference_log_probs = lambda model, batch: (torch.tensor(RC), torch.tensor([-3.0]),
                                                                torch.zeros(3))
    total, metrics = trainer.get_batch_loss_metrics(None, {"labels": torch.zeros(3, 4)})
    desirable = [1 - _sigmoid(BETA * (p - r)) for p, r in zip(PC, RC, strict=True)]
    undesirable = 1 - _sigmoid(BETA * (0.0 - (-4.0 + 3.0)))  # KL 0: 1 - sigmoid(beta (kl - logratio))
    weighted = wd * sum(desirable) + wu * undesirable
    assert metrics["preference_loss"] == pytest.approx(weighted / (2 * wd + wu), rel=1e-6)
    # the trained loss: LLaMA-Factory's mean over examples plus pref_ftx * SFT rescaled by batch / chosen
    assert total.item() == pytest.approx(weighted / 3 + 1.0 * 1.5 / 2 * 3, rel=1e-6)
