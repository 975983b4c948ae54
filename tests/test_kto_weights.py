"""`kto_chosen_weight: auto` / `kto_rejected_weight: auto`: the KTO paper's balance rule, resolved from a hand-made
registry entry before LLaMA-Factory parses the (float-typed) keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qalign.cli import main as qalign_main
from qalign.converters.kto_weights import balance_weights, resolve_auto_weights
from qalign.errors import QalignError

REPO = Path(__file__).resolve().parents[1]


def test_balance_rule() -> None:
    assert balance_weights(100, 300) == (3.0, 1.0)  # too few desirable: raise their weight to a ratio of 1
    assert balance_weights(300, 100) == (1.0, 3.0)
    assert balance_weights(120, 100) == (1.0, 1.0)  # 1.2 is within [1, 4/3]: left alone
    # one weight given: the other is the value nearest 1.0 that puts (w_d n_d) / (w_u n_u) in [1, 4/3]
    assert balance_weights(300, 100, chosen=1.0) == (1.0, pytest.approx(2.25))  # 300 / (2.25 * 100) = 4/3
    assert balance_weights(300, 100, rejected=1.0) == (pytest.approx(4 / 9), 1.0)  # (4/9 * 300) / 100 = 4/3
    assert balance_weights(100, 120, rejected=1.0) == (pytest.approx(1.2), 1.0)
    assert balance_weights(110, 100, chosen=1.0) == (1.0, 1.0)
    with pytest.raises(ValueError, match="KTO needs both labels"):
        balance_weights(0, 5)


def _registry(folder: Path, **entries: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_info.json").write_text(json.dumps(
        {name: {"file_name": f"data/{name}.json", "qalign": block} for name, block in entries.items()}))
    return folder


def test_auto_weights_from_a_hand_made_registry(tmp_path: Path, capsys) -> None:
    folder = _registry(tmp_path, a={"kind": "kto", "desirable_rows": 40, "undesirable_rows": 100},
                       b={"kind": "kto", "desirable_rows": 10, "undesirable_rows": 50}, plain={"kind": "sft"})
    config = {"stage": "kto", "dataset": "a,b", "dataset_dir": str(folder), "kto_chosen_weight": "auto",
              "kto_rejected_weight": "auto"}
    argv = resolve_auto_weights(["kto.yaml", "kto_chosen_weight=auto", "max_steps=3"], config)
    # 50 desirable / 150 undesirable over both datasets: desirable weight 3, ratio (3 * 50) / (1 * 150) = 1
    assert argv == ["kto.yaml", "max_steps=3", "kto_chosen_weight=3.0", "kto_rejected_weight=1.0"]
    assert (config["kto_chosen_weight"], config["kto_rejected_weight"]) == (3.0, 1.0)
    err = capsys.readouterr().err
    assert "kto_chosen_weight=3.000, kto_rejected_weight=1.000 (auto, from a,b: 50 desirable / 150 undesirable" in err
    # only one auto: the given weight stays, the other is chosen against it
    config = {"stage": "kto", "dataset": ["a"], "dataset_dir": str(folder), "kto_chosen_weight": "auto",
              "kto_rejected_weight": 2.0}
    assert resolve_auto_weights(["kto.yaml"], config) == ["kto.yaml", "kto_chosen_weight=5.0"]  # 2 * 100 / 40
    same = ["kto.yaml", "kto_chosen_weight=1.5"]
    assert resolve_auto_weights(same, {"stage": "kto", "kto_chosen_weight": 1.5}) is same
    assert resolve_auto_weights(same, None) is same
    for config, message in [
        ({"stage": "kto", "dataset": "plain", "dataset_dir": str(folder)}, "records no desirable_rows"),
        ({"stage": "kto", "dataset": "missing", "dataset_dir": str(folder)}, "records no desirable_rows"),
        ({"stage": "dpo", "dataset": "a", "dataset_dir": str(folder)}, "only `stage: kto`"),
        ({"stage": "kto", "dataset_dir": str(folder)}, "set `dataset`"),
    ]:
        with pytest.raises(QalignError, match=message):
            resolve_auto_weights(["kto.yaml"], {**config, "kto_rejected_weight": "auto"})
    folder = _registry(tmp_path / "one", c={"desirable_rows": 0, "undesirable_rows": 9})
    with pytest.raises(QalignError, match="KTO needs both labels"):
        resolve_auto_weights(["kto.yaml"], {"stage": "kto", "dataset": "c", "dataset_dir": str(folder),
                                            "kto_chosen_weight": "auto"})


def test_qalign_train_resolves_auto_before_llamafactory(tmp_path: Path, capsys) -> None:
    """The call site: `qalign train` fails on an unresolvable `auto` before LLaMA-Factory is imported or parses."""
    folder = _registry(tmp_path, nq_kto={"kind": "sft"})
    code = qalign_main(["train", str(REPO / "recipes/smollm2-135m/kto.yaml"), f"dataset_dir={folder}"])
    assert code == 2 and "dataset 'nq_kto' records no desirable_rows" in capsys.readouterr().err
