"""The rows of datasets registered in dataset_info.json, in the order LLaMA-Factory loads them.

LLaMA-Factory's `align_dataset` keeps only the columns its formats know, so what qalign adds to a row (the record
`id`, the gold `answers`) is read back from the same file rows here and paired with LLaMA-Factory's rows by index.
"""

from __future__ import annotations

import os
from typing import Any

from qalign.io import iter_json_records


def registered_rows(names: list[str] | None, dataset_dir: str, max_samples: int | None,
                    purpose: str) -> list[tuple[str, dict[str, Any], Any]]:
    """(file:line, record, dataset attributes) for every row of the named datasets; `purpose` says who needs them
    (in the error when a dataset is not a plain local file LLaMA-Factory reads whole)."""
    from llamafactory.data.parser import get_dataset_list

    rows: list[tuple[str, dict[str, Any], Any]] = []
    for attr in get_dataset_list(names, dataset_dir):
        path = os.path.join(dataset_dir, attr.dataset_name)
        if attr.load_from != "file" or not os.path.isfile(path) or attr.num_samples is not None:
            raise ValueError(f"Dataset `{attr}`: {purpose} reads its rows from a local .json/.jsonl file "
                             f"registered in {dataset_dir}/dataset_info.json without `num_samples` "
                             "(make one with `qalign convert eval --dataset NAME`).")
        records = list(iter_json_records(path))
        if max_samples is not None:
            records = records[:max_samples]
        rows += [(f"{path}:{line}", record, attr) for line, record in records]
    return rows
