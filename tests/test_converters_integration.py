"""Converters against real NQ data, LLaMA-Factory's own dataset loader, and the shipped sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qalign.converters.alpaca import convert_alpaca
from qalign.converters.eval_set import convert_eval
from qalign.converters.job import ConvertJob
from qalign.evaluators.metrics import normalize_answer
from qalign.records import load_records
from scripts.make_sample import DEV, SAMPLE_DIR, TRAIN, build_records, has_answer, write_sample


def test_real_nq_top5_dev(shared_data: Path, tmp_path: Path) -> None:
    real_dev = shared_data / "nq-open-top5.dev.jsonl.gz"
    result = convert_eval(ConvertJob(str(real_dev), "nq-top5-dev", dataset_dir=tmp_path))
    rows = json.loads(result.path.read_text(encoding="utf-8"))
    assert len(rows) == result.rows == 300
    assert result.stats.duplicates == 0 and result.stats.skipped_no_answer == 0
    assert len({row["id"] for row in rows}) == 300
    for row in rows:
        numbers = [int(n) for n in re.findall(r"^Passage (\d+) \(", row["instruction"], flags=re.MULTILINE)]
        assert numbers == [1, 2, 3, 4, 5]
        assert row["output"] == row["answers"][0]


def test_llamafactory_loads_converted_dataset(tmp_path: Path) -> None:
    from datasets import load_dataset
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    sample = SAMPLE_DIR / "nq-sample.train.jsonl"
    convert_alpaca(ConvertJob(str(sample), "sample-sft", dataset_dir=tmp_path, top_k=3))
    (attr,) = get_dataset_list(["sample-sft"], str(tmp_path))
    assert (attr.load_from, attr.formatting, attr.dataset_name) == ("file", "alpaca", "data/sample-sft.json")
    assert (attr.prompt, attr.query, attr.response) == ("instruction", "input", "output")

    raw = load_dataset("json", data_files=str(tmp_path / attr.dataset_name), split="train",
                       cache_dir=str(tmp_path / "cache"))
    assert raw.num_rows == 60 and {"id", "question", "instruction", "input", "output"} <= set(raw.column_names)

    # LLaMA-Factory's own loading + alignment into its internal _prompt/_response format.
    aligned = _load_single_dataset(
        attr,
        ModelArguments(model_name_or_path="unused", cache_dir=str(tmp_path / "cache")),
        DataArguments(dataset_dir=str(tmp_path)),
        Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), report_to="none"),
    )
    assert aligned.num_rows == 60
    first = aligned[0]
    assert first["_prompt"][0]["role"] == "user" and "Passage 3 (" in first["_prompt"][0]["content"]
    assert first["_response"] == [{"role": "assistant", "content": raw[0]["output"]}]


@pytest.mark.parametrize(("split", "facts", "count"), [("train", TRAIN, 60), ("dev", DEV, 30)])
def test_shipped_sample(split: str, facts: list, count: int, tmp_path: Path) -> None:
    path = SAMPLE_DIR / f"nq-sample.{split}.jsonl"
    records, stats = load_records(str(path), strict=True)
    assert len(records) == count and stats.duplicates == 0
    for record in records:
        assert record.question == record.question.lower() and "?" not in record.question
        assert len(record.ctxs) == 3
        holding = [ctx for ctx in record.ctxs if has_answer(ctx["text"], record.answers)]
        assert len(holding) == 1 and holding[0]["isgold"] and holding[0]["hasanswer"]
    # The shipped files are exactly what the generator writes.
    assert path.read_text(encoding="utf-8") == "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                       for r in build_records(facts, split))
    written = write_sample(tmp_path)
    assert [p.name for p in written] == ["nq-sample.train.jsonl", "nq-sample.dev.jsonl"]


def test_sample_splits_do_not_overlap() -> None:
    train = {normalize_answer(q) for q, *_ in TRAIN}
    dev = {normalize_answer(q) for q, *_ in DEV}
    assert len(train) == 60 and len(dev) == 30 and not train & dev
