"""Where qalign's files live: the one home of every path convention (below converters, study, sweep and bench).

Datasets are registered in `<dataset_dir>/dataset_info.json` (LLaMA-Factory's registry; qalign keeps it at the top
of the dataset dir, LLaMA-Factory's `dataset_dir`) and stored as `<dataset_dir>/data/<name>.json`; mined samples sit
beside them as `<name>.samples.jsonl`.
"""

from __future__ import annotations

import os
from pathlib import Path

DATASET_INFO = "dataset_info.json"
DATA_FOLDER = "data"


def dataset_file_name(name: str) -> str:
    """The `file_name` a dataset's registry entry records (relative to the dataset dir)."""
    return f"{DATA_FOLDER}/{name}.json"


def dataset_file(name: str, dataset_dir: str | os.PathLike = ".") -> Path:
    """The data file of dataset `name`."""
    return Path(dataset_dir) / dataset_file_name(name)


def jsonl_file(stem: str, dataset_dir: str | os.PathLike = ".") -> Path:
    """A jsonl beside the datasets: a sample cache (`<name>.samples`, or a study's shared `<study>_samples`)."""
    return Path(dataset_dir) / DATA_FOLDER / f"{stem}.jsonl"


def summary_path(output: str | os.PathLike) -> Path:
    """`TEACHER.summary.json`, written by `qalign teach` when every question is done (the study's done-marker)."""
    return Path(output).with_suffix(".summary.json")


def recall_file(output: str | os.PathLike) -> Path:
    """The recall@k summary `qalign retrieve` writes beside OUTPUT: `x.jsonl` -> `x.recall.json`."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".recall.json")
