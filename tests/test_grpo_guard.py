"""The GRPO stage's non-finite gradient guard: a NaN step changes nothing, finite steps train, a streak stops."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from qalign.grpo.guard import NonFiniteGradientGuard
from qalign.grpo.trainer import stage_callbacks


def _step(guard: NonFiniteGradientGuard, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state,
          grad_value: float) -> None:
    """One optimizer step as the Trainer takes it: backward, clip (which spreads a NaN), guard, step."""
    optimizer.zero_grad()
    (model(torch.ones(1, 2)).sum() * grad_value).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    guard.on_pre_optimizer_step(None, state, None, model=model)
    optimizer.step()
    state.global_step += 1


def test_a_nan_step_leaves_the_weights_and_the_momentum_alone_and_a_streak_stops_the_run(capsys) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    guard, state = NonFiniteGradientGuard(max_in_a_row=2), SimpleNamespace(global_step=0)
    _step(guard, model, optimizer, state, 1.0)
    trained = [p.detach().clone() for p in model.parameters()]
    moments = [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()]
    _step(guard, model, optimizer, state, float("nan"))
    assert all(torch.equal(a, p) for a, p in zip(trained, model.parameters(), strict=True))
    assert all(torch.equal(m, optimizer.state[p]["exp_avg"]) for m, p in zip(moments, model.parameters(), strict=True))
    assert guard.skipped == [2] and "step 2: the gradient is not finite" in capsys.readouterr().out
    _step(guard, model, optimizer, state, 1.0)  # a finite step trains again and ends the streak
    assert not torch.equal(trained[0], model.weight) and torch.isfinite(model.weight).all()
    _step(guard, model, optimizer, state, float("inf"))
    with pytest.raises(RuntimeError, match=r"not finite 2 steps in a row \(skipped steps \[2, 4, 5\]\).*"
                                           r"Lower learning_rate"):
        _step(guard, model, optimizer, state, float("nan"))
    guard.on_train_end(None, state, None)
    assert "3 of 4 steps skipped" in capsys.readouterr().out


def test_the_stage_installs_the_guard_first() -> None:
    args = SimpleNamespace(pissa_convert=False, use_swanlab=False)
    callbacks = stage_callbacks(SimpleNamespace(), SimpleNamespace(), SimpleNamespace(), args, SimpleNamespace())
    assert isinstance(callbacks[0], NonFiniteGradientGuard)


def test_a_skipped_step_dumps_its_micro_batches_and_a_finite_one_forgets_them(tmp_path, capsys) -> None:
    from qalign.grpo.probe import summarize_microbatch

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    guard, state, records = NonFiniteGradientGuard(), SimpleNamespace(global_step=0), []
    guard.attach(records, str(tmp_path))
    # two micro-batches as TRL 0.24 hands them out: left-padded prompts, right-padded completions
    batch = {"prompt_mask": torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
             "completion_mask": torch.tensor([[1, 1, 0], [0, 0, 0]]),  # row 2 truncated and masked
             "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(5)}
    records.append({**summarize_microbatch(0, batch), "grads_finite_after": True})
    records.append({**summarize_microbatch(1, batch), "grads_finite_after": True})
    _step(guard, model, optimizer, state, 1.0)  # finite: nothing written, the records are cleared for the next step
    assert records == [] and not list(tmp_path.iterdir())

    records.append({**summarize_microbatch(0, batch), "grads_finite_after": True})
    records.append({**summarize_microbatch(1, batch), "grads_finite_after": False})
    _step(guard, model, optimizer, state, float("nan"))
    dump = json.loads((tmp_path / "nonfinite_step_2.json").read_text())
    assert dump["step"] == 2 and dump["first_micro_batch_with_nonfinite_grad"] == 1
    first = dump["micro_batches"][0]
    assert first["prompt_lengths"] == [2, 4] and first["left_pad_max"] == 2
    assert first["completion_tokens_kept"] == [2, 0] and first["rows_fully_masked"] == 1
    assert (first["num_items_in_batch"], first["advantages_min"], first["advantages_max"]) == (5.0, -0.5, 0.5)
    assert records == [] and "micro-batches in " in capsys.readouterr().out


def test_the_probe_names_the_parameters_whose_gradient_broke_and_keeps_the_rows() -> None:
    from qalign.grpo.probe import batch_tokens, nonfinite_grads

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model(torch.ones(4, 3)).sum().backward()
    assert nonfinite_grads(model) == {"nonfinite_params": 0, "first_nonfinite": []}
    model[1].weight.grad[0, 0] = float("nan")
    model[1].bias.grad[0] = float("inf")
    assert nonfinite_grads(model) == {"nonfinite_params": 2, "first_nonfinite": [
        {"name": "1.weight", "nan": 1, "inf": 0}, {"name": "1.bias", "nan": 0, "inf": 1}]}
    assert nonfinite_grads(model, limit=1)["first_nonfinite"] == [{"name": "1.weight", "nan": 1, "inf": 0}]
    inputs = {"completion_ids": torch.tensor([[5, 6], [7, 2]]), "prompt_ids": torch.arange(60).reshape(2, 30)}
    rows = batch_tokens(inputs, tail=3)
    assert rows == {"completion_ids": [[5, 6], [7, 2]], "prompt_tail_ids": [[27, 28, 29], [57, 58, 59]]}
