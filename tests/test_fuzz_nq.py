"""Issue 15 Deliver 5/6: 10,000 mutated real NQ records through `qalign convert`'s loader. Every outcome is a kept
record, a counted skip, or an error naming file:line — never a traceback. The Reliability page's figures
(docs/reliability.md) are these counts (fixed seed); this test checks that they still match."""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

from qalign.errors import QalignError
from qalign.records import load_records

REPO = Path(__file__).resolve().parents[1]
N = 10_000


def _mutate(rng: random.Random, record: dict) -> str:
    """One damaged (or intact) JSON line: field-level and byte-level mutations of the kinds issue 15 found."""
    rec = json.loads(json.dumps(record))
    kind = rng.randrange(16)
    line = None
    if kind == 0:
        rec["answers"] = [float("nan")] if rng.random() < 0.5 else [float("inf"), *rec["answers"]]
    elif kind == 1:
        rec["answers"] = rng.choice([None, [], "", ["the"], [""], 5, [True], {"a": 1}])
    elif kind == 2:
        rec["question"] = rng.choice([None, "", "???", 7, ["q"], " " * 3, rec["question"].upper() + "?"])
    elif kind == 3:
        rec["ctxs"] = rng.choice([None, "text", [{"title": "t"}], [{"text": None}], [7], [{"text": 3}]])
    elif kind == 4:
        rec["id"] = rng.choice([0, "", None, "dup", 1.5])
    elif kind == 5:
        line = "[" * rng.choice([10, 2000, 100_000]) + "]" * 10
    elif kind == 6:
        line = json.dumps(rec)[:-1] + ', "n": ' + "9" * rng.choice([10, 5000]) + "}"
    elif kind == 7:
        line = json.dumps(rec).replace(rec["question"][:1], "\\ud800", 1) if rec["question"] else json.dumps(rec)
    elif kind == 8:
        raw = json.dumps(rec)
        cut = rng.randrange(len(raw))
        line = raw[:cut]
    elif kind == 9:
        raw = list(json.dumps(rec))
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.choice('{}[]",:\\x0')
        line = "".join(raw)
    elif kind == 10:
        line = "\ufeff" + json.dumps(rec)
    elif kind == 11:
        line = json.dumps(rng.choice([[rec], "text", 42, None]))
    elif kind == 12:
        rec.pop("answers")
        rec["answer"] = record["answers"]
    elif kind == 13:
        rec["answers"], rec["answer"] = None, record["answers"]
    return line if line is not None else json.dumps(rec, ensure_ascii=rng.random() < 0.5)


def test_ten_thousand_mutated_nq_records(shared_data: Path, tmp_path: Path) -> None:
    with gzip.open(shared_data / "nq-open-top5.dev.jsonl.gz", "rt", encoding="utf-8") as handle:
        real = [json.loads(line) for line in handle][:200]
    rng = random.Random(15)
    path = tmp_path / "one.jsonl"
    outcomes: Counter[str] = Counter()
    for _ in range(N):
        path.write_text(_mutate(rng, rng.choice(real)) + "\n", encoding="utf-8", errors="surrogatepass")
        try:
            records, stats = load_records(str(path))
        except QalignError as exc:
            assert str(exc).startswith(f"{path}:1: "), str(exc)  # file:line and a fix, no traceback
            outcomes["error"] += 1
            continue
        assert stats.read == 1 and stats.read == stats.kept + stats.skipped_no_answer + stats.skipped_no_question
        outcomes["kept" if records else "skipped"] += 1
        outcomes["noted"] += bool(stats.notes())
    assert outcomes["kept"] + outcomes["skipped"] + outcomes["error"] == N
    figures = (f"{N:,} mutated records: {outcomes['kept']:,} kept ({outcomes['noted']:,} with a note), "
               f"{outcomes['skipped']:,} skipped and counted, {outcomes['error']:,} file:line errors, 0 tracebacks")
    print(figures)
    page = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert figures in page, f"docs/reliability.md should say: {figures}"


def test_reliability_page_names_this_test() -> None:
    assert re.search(r"tests/test_fuzz_nq\.py", (REPO / "docs" / "reliability.md").read_text(encoding="utf-8"))
