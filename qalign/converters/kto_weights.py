"""KTO class weights: the KTO paper's balance rule, and `kto_*_weight: auto` resolved at `qalign train` time.

KTO (Ethayarajh et al., 2024) keeps (w_d * n_d) / (w_u * n_u) within [1, 4/3], n_d / n_u being the desirable /
undesirable examples. `convert kto` records n_d and n_u in the dataset's registry entry (`desirable_rows`,
`undesirable_rows`); a recipe (or a `key=value` override) that says `kto_chosen_weight: auto` and/or
`kto_rejected_weight: auto` gets numbers from them before LLaMA-Factory, which types both keys as float, parses
anything. The module imports nothing heavy: it runs on `qalign train`'s hot path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qalign.errors import QalignError

WEIGHT_KEYS = ("kto_chosen_weight", "kto_rejected_weight")
LOW, HIGH = 1.0, 4 / 3  # the paper's range of (w_d * n_d) / (w_u * n_u)


def balance_weights(desirable: int, undesirable: int, chosen: float | None = None,
                    rejected: float | None = None) -> tuple[float, float]:
    """(kto_chosen_weight, kto_rejected_weight) that put the weighted ratio in [1, 4/3]; None = to be chosen.

    Both None: 1.0 each when the counts are already in range, else the minority label's weight raised until the
    ratio is 1 (what `convert kto` prints). One None: the value nearest 1.0 that puts the ratio in range, the other
    weight as given.
    """
    if desirable <= 0 or undesirable <= 0:
        raise ValueError(f"{desirable} desirable / {undesirable} undesirable examples: KTO needs both labels")
    if chosen is None and rejected is None:
        ratio = desirable / undesirable
        if ratio < LOW:
            return undesirable / desirable, 1.0
        if ratio > HIGH:
            return 1.0, desirable / undesirable
        return 1.0, 1.0
    if chosen is None:
        low = rejected * undesirable / desirable  # the chosen weight at which the ratio is 1
        return min(max(1.0, low), low * HIGH), rejected
    if rejected is None:
        high = chosen * desirable / undesirable  # the rejected weight at which the ratio is 1
        return chosen, min(max(1.0, high / HIGH), high)
    return chosen, rejected


def _label_counts(config: dict[str, Any]) -> tuple[int, int, str]:
    """Desirable and undesirable rows summed over the config's datasets, read from their registry entries."""
    from qalign.converters.registry import read_dataset_info
    from qalign.paths import DATASET_INFO

    raw = config.get("dataset") or ""
    names = [str(n).strip() for n in (raw if isinstance(raw, list) else str(raw).split(",")) if str(n).strip()]
    folder = str(config.get("dataset_dir") or "data")  # LLaMA-Factory's default
    if not names or folder == "ONLINE":
        raise QalignError("kto_*_weight=auto reads the label counts of a local dataset registered by `qalign convert "
                          "kto`; set `dataset` (and `dataset_dir`), or give the weights as numbers.")
    path = Path(folder) / DATASET_INFO
    info = read_dataset_info(folder)
    desirable = undesirable = 0
    for name in names:
        block = (info.get(name) or {}).get("qalign") or {}
        if not isinstance(block.get("desirable_rows"), int) or not isinstance(block.get("undesirable_rows"), int):
            raise QalignError(f"{path}: dataset {name!r} records no desirable_rows / undesirable_rows, so "
                              "kto_*_weight=auto cannot be resolved. Write it with `qalign convert kto`, or give "
                              "kto_chosen_weight / kto_rejected_weight as numbers.")
        desirable += block["desirable_rows"]
        undesirable += block["undesirable_rows"]
    return desirable, undesirable, ",".join(names)


def resolve_auto_weights(argv: list[str], config: dict[str, Any] | None) -> list[str]:
    """`RECIPE key=value ...` with every `kto_*_weight: auto` replaced by a number (an appended override, also
    written into `config`); printed with the counts it came from. Without `auto`, argv is returned unchanged."""
    auto = [key for key in WEIGHT_KEYS if config and str(config.get(key)).strip().lower() == "auto"]
    if not auto:
        return argv
    if str(config.get("stage")) != "kto":
        raise QalignError(f"{auto[0]}=auto: only `stage: kto` has KTO class weights (stage is "
                          f"{config.get('stage')!r}). Drop the key, or train with stage: kto.")
    desirable, undesirable, names = _label_counts(config)
    try:
        given = [None if key in auto else float(config.get(key, 1.0)) for key in WEIGHT_KEYS]
    except (TypeError, ValueError):
        raise QalignError(f"{', '.join(WEIGHT_KEYS)}: expected numbers or auto, got "
                          f"{[config.get(key) for key in WEIGHT_KEYS]}.") from None
    try:
        weights = dict(zip(WEIGHT_KEYS, balance_weights(desirable, undesirable, *given), strict=True))
    except ValueError as exc:
        raise QalignError(f"kto_*_weight=auto for dataset {names}: {exc}. Re-mine the data (more samples, another "
                          "--desirable policy), or give the weights as numbers.") from None
    ratio = weights["kto_chosen_weight"] * desirable / (weights["kto_rejected_weight"] * undesirable)
    chosen = ", ".join(f"{key}={weights[key]:.3f}" for key in auto)
    print(f"qalign: {chosen} (auto, from {names}: {desirable} desirable / {undesirable} undesirable rows; "
          f"weighted ratio {ratio:.2f}, the KTO paper's range is [1, 1.33])", file=sys.stderr, flush=True)
    config.update({key: weights[key] for key in auto})
    kept = [item for item in argv if item.partition("=")[0].strip() not in auto]
    return [*kept, *(f"{key}={weights[key]!r}" for key in auto)]
