"""Issue 15 Deliver 5: property-based tests (hypothesis) of the records reader, the record loader and the metrics:
no tracebacks, no silent drops, every valid record read back as written."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (the `dev` extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qalign.errors import QalignError  # noqa: E402
from qalign.evaluators.metrics import exact_match, f1_score, normalize_answer, substring_exact_match  # noqa: E402
from qalign.io import iter_json_records  # noqa: E402
from qalign.records import load_records  # noqa: E402
from qalign.text import ANSWER_MARKER, extract_answer  # noqa: E402

FAST = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # any Unicode except lone surrogates
FINITE = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | FINITE | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
OBJECTS = st.lists(st.dictionaries(TEXT, JSON, max_size=5), max_size=8)


def _tmp(suffix: str, data: bytes) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    handle.write(data)
    handle.close()
    return Path(handle.name)


@FAST
@given(OBJECTS, st.booleans(), st.sampled_from([".jsonl", ".jsonl.gz", ".json", ".json.gz"]))
def test_every_valid_record_is_read_back(objects: list[dict], ascii_only: bool, suffix: str) -> None:
    if ".jsonl" in suffix:
        text = "".join(json.dumps(o, ensure_ascii=ascii_only) + "\n" for o in objects)
    else:
        text = json.dumps(objects, ensure_ascii=ascii_only)
    data = text.encode("utf-8")
    path = _tmp(suffix, gzip.compress(data) if suffix.endswith(".gz") else data)
    try:
        assert [o for _, o in iter_json_records(path)] == objects
    finally:
        path.unlink()


@FAST
@given(OBJECTS, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       st.integers(0, 10**6), st.sampled_from([".jsonl", ".jsonl.gz", ".json"]))
def test_damaged_files_give_errors_not_tracebacks(objects: list[dict], flips: list[tuple[int, int]], cut: int,
                                                  suffix: str) -> None:
    text = ("".join(json.dumps(o) + "\n" for o in objects) if ".jsonl" in suffix else json.dumps(objects))
    data = bytearray(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    data = data[: cut % (len(data) + 1)] if cut % 3 == 0 else data
    path = _tmp(suffix, bytes(data))
    try:
        records = [o for _, o in iter_json_records(path)]
        assert all(isinstance(o, dict) for o in records)
    except QalignError as exc:
        assert str(exc).startswith(f"{path}:"), str(exc)  # file:line, always
    finally:
        path.unlink()


RECORD = st.fixed_dictionaries({}, optional={
    "question": st.none() | TEXT | st.sampled_from(["who wrote hamlet", "???", "the"]),
    "answers": st.none() | TEXT | st.lists(TEXT | st.integers() | st.floats(), max_size=4),
    "answer": st.lists(TEXT, max_size=3),
    "ctxs": st.lists(st.fixed_dictionaries({}, optional={"title": TEXT, "text": st.none() | TEXT}), max_size=3),
    "id": st.none() | st.integers(0, 3) | TEXT,
})


@FAST
@given(st.lists(RECORD, max_size=12))
def test_loader_counts_every_record(records: list[dict]) -> None:
    """read = kept + duplicates + skipped; or one QalignError naming file:line (e.g. a duplicate explicit id)."""
    path = _tmp(".jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    try:
        kept, stats = load_records(str(path))
    except QalignError as exc:
        assert str(exc).startswith(f"{path}:"), str(exc)
        return
    finally:
        path.unlink()
    assert stats.read == len(records)
    assert stats.read == stats.kept + stats.duplicates + stats.skipped_no_answer + stats.skipped_no_question
    assert len(kept) == stats.kept and len({r.id for r in kept}) == len(kept)
    assert all(r.question and r.answers and all(isinstance(a, str) and a for a in r.answers) for r in kept)


@FAST
@given(TEXT, st.lists(TEXT, max_size=4))
def test_metric_bounds_and_order(prediction: str, golds: list[str]) -> None:
    em, subem, f1 = exact_match(prediction, golds), substring_exact_match(prediction, golds), f1_score(prediction,
                                                                                                         golds)
    assert em in (0.0, 1.0) and subem in (0.0, 1.0) and 0.0 <= f1 <= 1.0
    assert em <= subem  # equal normalised strings contain each other
    if em:
        assert f1 == 1.0


@FAST
@given(st.lists(TEXT, min_size=1, max_size=4), st.data())
def test_a_gold_alias_scores_full_marks(golds: list[str], data: st.DataObject) -> None:
    alias = data.draw(st.sampled_from(golds))
    if normalize_answer(alias):  # aliases that normalise to nothing never match (and the loaders report them)
        assert exact_match(alias, golds) == substring_exact_match(alias, golds) == f1_score(alias, golds) == 1.0
    else:
        assert exact_match(alias, [alias]) == 0.0


@FAST
@given(TEXT)
def test_normalisation_is_idempotent(text: str) -> None:
    once = normalize_answer(text)
    assert normalize_answer(once) == once


PIECES = st.lists(st.sampled_from(["<think>", "</think>", ANSWER_MARKER, "the answer is:", "\n"]) | TEXT, max_size=6)


@FAST
@given(PIECES)
def test_extracted_answer_is_final(pieces: list[str]) -> None:
    """Any output: the answer is None or non-empty stripped text without think tags or the marker, and extracting
    it again gives it back (so re-scoring a scores.jsonl `prediction` agrees)."""
    answer = extract_answer("".join(pieces))
    if answer is not None:
        assert answer == answer.strip() and answer
        assert "<think>" not in answer and "</think>" not in answer and "the answer is:" not in answer.lower()
        assert extract_answer(answer) == answer


@FAST
@given(TEXT, TEXT)
def test_the_marker_never_counts_toward_the_answer(reasoning: str, gold: str) -> None:
    if normalize_answer(gold) and "\n" not in gold and "<think>" not in gold and "</think>" not in gold \
            and "answer is" not in gold.lower():
        for output in (f"<think>{reasoning}</think>{ANSWER_MARKER} {gold}", f"{ANSWER_MARKER} {gold}"):
            if "<think>" not in reasoning and "</think>" not in reasoning:
                assert exact_match(output, [gold]) == 1.0


WORDS = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12)


@FAST
@given(st.lists(st.tuples(st.lists(WORDS, min_size=1, max_size=5), st.lists(WORDS, min_size=1, max_size=3)),
                min_size=1, max_size=10))
def test_convert_writes_every_valid_record(items: list[tuple[list[str], list[str]]]) -> None:
    """Valid records with distinct questions: `convert eval` writes each one, with all its aliases, ids unique."""
    from qalign.converters.eval_set import convert_eval
    from qalign.converters.job import ConvertJob
    from qalign.records import question_key

    seen: set[str] = set()
    records = []
    for words, answers in items:
        question = "q " + " ".join(words)
        if question_key(question) not in seen:
            seen.add(question_key(question))
            records.append({"question": question, "answers": answers})
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        result = convert_eval(ConvertJob(str(source), "p", dataset_dir=folder))
        rows = json.loads((Path(folder) / "data/p.json").read_text(encoding="utf-8"))
    assert result.rows == len(rows) == len(records)
    assert [r["question"] for r in rows] == [r["question"] for r in records]
    assert [r["answers"] for r in rows] == [list(dict.fromkeys(a.strip() for a in r["answers"])) for r in records]
    assert len({r["id"] for r in rows}) == len(rows)
