"""What every `qalign convert` format is asked to do: read QA records from a source, render their prompts, write
`<dataset_dir>/data/<name>.json` and register `name` in `<dataset_dir>/dataset_info.json`.

The format-specific part (rows, counts, extra provenance) stays in each converter module.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.converters.prompts import CLOSED_BOOK, load_prompt, prompt_name
from qalign.converters.registry import ConversionResult, alpaca_entry, check_target, validate_name, write_dataset
from qalign.errors import QalignError
from qalign.records import LoadStats, QARecord, load_records

# `qalign convert FORMAT` -> the kind its registry entry gets (checked before any input is read)
FORMAT_KINDS = {"alpaca": "sft", "eval": "eval", "grpo": "grpo", "preference": "preference", "kto": "kto",
                "cot": "cot"}


@dataclass(frozen=True)
class ConvertJob:
    """The options every converter shares (the `qalign convert` common flags)."""

    source: str
    name: str
    dataset_dir: str | Path = "."
    top_k: int = 5
    prompt: str = "answer_only"
    limit: int | None = None
    offset: int = 0
    split: str = "train"
    strict: bool = False
    force: bool = False
    kind: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.name)  # a bad name fails before a large input is read
        if self.limit is not None and self.limit < 1:
            raise QalignError(f"--limit {self.limit}: nothing would be converted; pass --limit 1 or more, or drop it.")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ConvertJob:
        return cls(args.input, args.dataset, dataset_dir=args.dataset_dir, top_k=args.top_k, prompt=args.prompt,
                   limit=args.limit, offset=getattr(args, "offset", 0) or 0, split=args.split, strict=args.strict,
                   force=getattr(args, "force", False),
                   kind=FORMAT_KINDS.get(getattr(args, "convert_format", None) or ""))

    def load(self) -> tuple[str, list[QARecord], LoadStats]:
        """The prompt template and the records. The prompt, the output folder and the registry entry are checked
        first, so a bad prompt or a refused name fails before a large input is read."""
        template = load_prompt(self.prompt)
        check_target(self.dataset_dir, self.name, self.kind, self.force, self.source)
        records, stats = load_records(self.source, self.strict, split=self.split, limit=self.limit,
                                      offset=self.offset)
        return template, records, stats

    def entry(self, kind: str, rows: int, **extra: Any) -> dict[str, Any]:
        """The dataset_info.json entry with this job's provenance (source, prompt, top_k) and `extra`."""
        prompt = prompt_name(self.prompt)
        if self.top_k == 0 and "{passages}" in load_prompt(self.prompt):
            prompt = CLOSED_BOOK  # render_prompt falls back to it for every record
        return alpaca_entry(kind, self.source, rows, prompt, top_k=self.top_k, **extra)

    def write(self, rows: list[dict[str, Any]], entry: dict[str, Any], stats: LoadStats) -> ConversionResult:
        return write_dataset(self.dataset_dir, self.name, rows, entry, stats, force=self.force)
