"""Preference / KTO mining: pair building and cleaning on hand-made samples, then the real sampler on a tiny
random Qwen3 (pairs' invariants, LLaMA-Factory loading, resume after an interruption)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qalign.cli import main as qalign_main
from qalign.converters.job import ConvertJob
from qalign.converters.kto import Example, clean_examples, is_degenerate, kept_counts, kto_mean_words, label_examples
from qalign.converters.preference import build_pairs, pair_mean_words, pair_summary
from qalign.errors import QalignError
from qalign.evaluators.metrics import exact_match, f1_score
from qalign.generate.sampling import Question, ensure_samples, load_questions, read_cache, row_seed

CAPITALS = [("france", ["Paris"]), ("japan", ["Tokyo"]), ("italy", ["Rome", "Roma"]), ("peru", ["Lima"]),
            ("kenya", ["Nairobi"]), ("the united states", ["Washington, D.C.", "Washington"])]


def write_raw(path: Path) -> Path:
    with path.open("w") as handle:
        for country, answers in CAPITALS:
            ctxs = [{"title": country.title(), "text": f"{answers[0]} is the capital of {country}."}]
            handle.write(json.dumps({"question": f"what is the capital of {country}", "answers": answers,
                                     "ctxs": ctxs}) + "\n")
    return path


def write_cache(path: Path, raw: Path, samples: dict[str, list[str]], top_k: int = 5) -> Path:
    """A sample cache by hand (no header): what a previous run would have left, keyed by question text."""
    questions, _ = load_questions(ConvertJob(str(raw), "cache", top_k=top_k))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for q in questions:
            row = {"id": q.id, "question": q.question, "answers": q.answers, "prompt": q.prompt,
                   "samples": [{"text": t} for t in samples[q.question]]}
            handle.write(json.dumps(row) + "\n")
    return path


# --- pair building on hand-made samples (F1 values computed by hand) -----------------------------------------


def test_subem_pairs_best_correct_sample_against_distinct_wrong_ones() -> None:
    """The old rule (--strategy subem), pinned: a correct-but-verbose sample is never a rejected one."""
    answers = ["Jane Austen", "Austen"]
    texts = ["it was jane austen who wrote it",  # correct, F1 = 2*(2/7)*1/(2/7+1) = 4/9
             "Jane Austen",                       # correct, F1 1.0 -> chosen
             "Charlotte Bronte", "charlotte  bronte!",  # wrong; the second is a duplicate after normalisation
             "", "Austin",                        # empty (skipped), wrong
             "Jane Eyre"]                         # wrong, F1 = 0.5 (1 of 2 tokens both ways): over the cap of 2
    pairs, counts = build_pairs(texts, answers, strategy="subem", max_pairs=2)
    assert [(p.chosen, p.rejected, p.rejected_f1) for p in pairs] == [
        ("Jane Austen", "Charlotte Bronte", 0.0), ("Jane Austen", "Austin", 0.0)]
    assert all(p.chosen_f1 == 1.0 and p.chosen_from == "sample" for p in pairs)
    assert f1_score(texts[0], answers) == pytest.approx(4 / 9)
    assert counts["dropped_duplicate"] == 1 and counts["dropped_over_cap"] == 1 and counts["pairs"] == 2


def test_subem_pairs_fall_back_to_gold_and_drop_ties_and_inversions() -> None:
    pairs, counts = build_pairs(["Lyon", "Marseille", "lyon"], ["Paris"], strategy="subem", max_pairs=5)
    assert [(p.chosen, p.chosen_from, p.rejected) for p in pairs] == [("Paris", "gold", "Lyon"),
                                                                     ("Paris", "gold", "Marseille")]
    assert counts["questions_gold_chosen"] == 1 and counts["dropped_duplicate"] == 1

    answers = ["New York City"]
    texts = ["it is new york city",     # correct (SubEM), F1 = 2*(3/5)*1/(3/5+1) = 0.75 -> chosen
             "city new york in usa",    # wrong (no gold substring), F1 = 0.75: a tie
             "new york",                # wrong, F1 = 2*1*(2/3)/(1+2/3) = 0.8: better than chosen
             "boston"]                  # wrong, F1 0
    pairs, counts = build_pairs(texts, answers, strategy="subem")
    assert [(p.chosen, p.rejected) for p in pairs] == [("it is new york city", "boston")]
    assert pairs[0].chosen_f1 == pytest.approx(0.75)
    assert counts["dropped_tie"] == 1 and counts["dropped_inverted"] == 1


def test_f1_strategy_never_rejects_a_sample_that_holds_the_answer() -> None:
    answers = ["Jane Austen"]
    long_right = "she thinks it was jane austen who wrote it in 1813"  # F1 4/13 < 0.5: not correct under f1
    pairs, counts = build_pairs([long_right, "Dickens"], answers, strategy="f1", threshold=0.5)
    assert [p.rejected for p in pairs] == ["Dickens"] and pairs[0].chosen_from == "gold"
    assert counts["dropped_contains_gold"] == 1


# --- strategy em (default): the exact short answer against everything a margin below it, verbose ones included --


def test_em_pairs_shortest_exact_chosen_and_verbose_sample_rejected() -> None:
    answers = ["Washington, D.C.", "Washington"]
    texts = ["Washington D.C.",                       # exact, 2 words
             "It is Washington, D.C., the capital",   # verbose: SubEM 1, EM 0; "it is washington dc capital":
                                                      # F1 = 2*(2/5)*1/(2/5+1) = 4/7
             "washington",                            # exact, 1 word -> chosen (same F1, fewer words)
             "Seattle"]                               # wrong, F1 0
    pairs, counts = build_pairs(texts, answers, max_pairs=5)
    assert [(p.chosen, p.rejected) for p in pairs] == [("washington", texts[1]), ("washington", "Seattle")]
    assert pairs[0].rejected_f1 == pytest.approx(4 / 7) and pairs[0].chosen_from == "sample"
    assert (counts["rejected_verbose"], counts["rejected_wrong"], counts["questions_with_correct"]) == (1, 1, 1)
    assert (counts["words_chosen"], counts["words_rejected"]) == (1 + 1, 5 + 1)
    assert "mean words chosen 1.0 / rejected 3.0" in pair_summary(counts)
    assert "rejected: 1 wrong, 1 verbose" in pair_summary(counts)
    # the old rule on the same samples: the verbose one counts as correct, the first best-F1 sample is chosen
    old, old_counts = build_pairs(texts, answers, strategy="subem", max_pairs=5)
    assert [(p.chosen, p.rejected) for p in old] == [("Washington D.C.", "Seattle")]
    assert old_counts["rejected_verbose"] == 0 and old_counts["rejected_wrong"] == 1


def test_em_pairs_gold_chosen_margin_duplicates_and_cap() -> None:
    answers = ["New York City"]
    texts = ["new york",                          # F1 = 2*1*(2/3)/(1+2/3) = 0.8: within 0.3 of gold's 1.0 -> near
             "i think it is new york city",       # verbose, 7 words: F1 = 2*(3/7)/(3/7+1) = 0.6 -> rejected
             "Boston", "boston.",                 # wrong (F1 0), then its duplicate
             "the city of new york in the usa"]   # "city of new york in usa": F1 = 2*(1/2)/(3/2) = 2/3: over the cap
    pairs, counts = build_pairs(texts, answers, max_pairs=2)
    assert [(p.chosen, p.chosen_from, p.rejected) for p in pairs] == [
        ("New York City", "gold", "i think it is new york city"), ("New York City", "gold", "Boston")]
    assert pairs[0].chosen_f1 == 1.0 and pairs[0].rejected_f1 == pytest.approx(0.6)
    assert {k: v for k, v in counts.items() if k.startswith("dropped_")} == {
        "dropped_near_chosen": 1, "dropped_duplicate": 1, "dropped_over_cap": 1}
    assert (counts["questions_gold_chosen"], counts["rejected_verbose"], counts["rejected_wrong"]) == (1, 1, 1)
    assert pair_mean_words(counts) == {"chosen": 3.0, "rejected": 4.0}  # (3 + 3) / 2, (7 + 1) / 2
    wide, _ = build_pairs(texts, answers, max_pairs=5, margin=0.1)  # 0.8 <= 1.0 - 0.1: now a negative
    assert [p.rejected for p in wide] == ["new york", texts[1], "Boston", texts[4]]
    exact, _ = build_pairs(texts, answers, max_pairs=5, margin=0.2)  # a difference equal to the margin reaches it
    assert [p.rejected for p in exact][0] == "new york"
    with pytest.raises(ValueError, match="outside"):
        build_pairs(texts, answers, margin=0.0)


def test_em_labels_exact_desirable_verbose_undesirable_near_dropped() -> None:
    texts = ["The city of Paris",   # "city of paris": F1 0.5, verbose
             "Paris",               # exact
             "it is paris",         # F1 0.5, verbose
             "Lyon",                # wrong
             "Paris France",        # F1 = 2*(1/2)/(3/2) = 2/3: verbose; within a margin of 0.4 of 1.0
             "lyon"]                # duplicate
    labelled = label_examples(texts, ["Paris"], margin=0.4)
    assert [(e.text, e.desirable, e.near) for e in labelled] == [
        ("Paris", True, False), ("The city of Paris", False, False), ("it is paris", False, False),
        ("Lyon", False, False), ("Paris France", False, True), ("lyon", False, False)]
    kept, dropped = clean_examples(labelled, ["Paris"], max_per_question=3)
    assert [e.text for e in kept] == ["Paris", "The city of Paris", "it is paris", "Lyon"]
    assert dropped == {("undesirable", "near_desirable"): 1, ("undesirable", "duplicate"): 1}
    counts = kept_counts(kept, ["Paris"])
    assert counts == {"desirable": 1, "undesirable": 3, "words_desirable": 1, "words_undesirable": 3 + 3 + 1,
                      "undesirable_verbose": 2, "undesirable_wrong": 1}
    assert kto_mean_words(counts) == {"desirable": 1.0, "undesirable": 2.33}
    # at the default margin 0.3, 2/3 is far enough below 1.0: "Paris France" is a negative too
    assert not any(e.near for e in label_examples(texts, ["Paris"]))
    # shortest exact first; the gold alias only when no sample is exact
    order = label_examples(["Washington, D.C.", "washington", "Seattle"], ["Washington, D.C.", "Washington"])
    assert [e.text for e in order if e.desirable] == ["washington", "Washington, D.C."]
    old = label_examples(["Washington, D.C.", "washington"], ["Washington, D.C.", "Washington"], strategy="subem")
    assert [e.text for e in old] == ["Washington, D.C.", "washington"]
    assert [(e.text, e.source, e.desirable) for e in label_examples(["it is paris", "Lyon"], ["Paris"])] == [
        ("Paris", "gold", True), ("it is paris", "sample", False), ("Lyon", "sample", False)]


def _france_planted(tmp_path: Path) -> tuple[Path, Path]:
    raw = write_raw(tmp_path / "raw.jsonl")
    planted = {"what is the capital of france": ["Paris", "i am not sure but maybe paris or lyon", "Lyon"]}
    samples = {f"what is the capital of {c}": planted.get(f"what is the capital of {c}", ["Oslo", "oslo"])
               for c, _ in CAPITALS}
    return raw, write_cache(tmp_path / "cache.jsonl", raw, samples)


def test_em_cli_records_kinds_and_mean_words(tmp_path: Path, capsys) -> None:
    raw, cache = _france_planted(tmp_path)
    common = ["--input", str(raw), "--samples", str(cache), "--dataset-dir", str(tmp_path)]
    assert qalign_main(["convert", "kto", "--dataset", "k", *common]) == 0
    out = capsys.readouterr().out
    # desirable: Paris and the 5 gold answers (Washington, D.C. = 2 words): 7 words / 6; undesirable: the planted
    # verbose one (9 words), Lyon, 5 x Oslo: 15 words / 7
    assert "kto balance: 6 desirable / 7 undesirable (6 wrong, 1 verbose); mean words desirable 1.17 / " \
           "undesirable 2.14; dropped: 5 undesirable duplicate; to balance, train with kto_chosen_weight=1.17" in out
    rows = json.loads((tmp_path / "data/k.json").read_text())
    assert {(r["output"], r["kto_tag"]) for r in rows if r["question"].endswith("france")} == {
        ("Paris", True), ("i am not sure but maybe paris or lyon", False), ("Lyon", False)}
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["k"]["qalign"]
    assert (entry["strategy"], entry["margin"], entry["desirable_rows"], entry["undesirable_rows"]) == ("em", 0.3, 6, 7)
    assert entry["mean_words"] == {"desirable": 1.17, "undesirable": 2.14}
    assert entry["undesirable_kinds"] == {"wrong": 6, "verbose": 1}

    assert qalign_main(["convert", "preference", "--dataset", "p", *common]) == 0
    out = capsys.readouterr().out
    # France: Paris vs the planted one and Lyon; the others: gold vs Oslo. chosen words 1+1+1+1+1+1+2 = 8 / 7 pairs,
    # rejected 9+1+5 = 15 / 7
    assert "mined 7 pairs (rejected: 6 wrong, 1 verbose)" in out and "mean words chosen 1.14 / rejected 2.14" in out
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["p"]["qalign"]
    assert entry["mean_words"] == {"chosen": 1.14, "rejected": 2.14} and entry["strategy"] == "em"
    assert entry["rejected_kinds"] == {"wrong": 6, "verbose": 1} and entry["margin"] == 0.3
    assert qalign_main(["convert", "preference", "--dataset", "p", "--strategy", "subem", *common]) == 0
    assert "mined 6 pairs (rejected: 6 wrong, 0 verbose)" in capsys.readouterr().out  # the planted one: dropped
    with pytest.raises(SystemExit):
        qalign_main(["convert", "preference", "--dataset", "p", "--margin", "1.5", *common])
    assert "--margin 1.5: margin 1.5 is outside (0, 1]" in capsys.readouterr().err


# --- KTO labelling and cleaning ---------------------------------------------------------------------------------


def test_degenerate() -> None:
    assert is_degenerate("paris paris paris paris")
    assert is_degenerate("to be to be to be to be, that is it")
    assert is_degenerate(" ".join(["one two three four"] * 5))  # 20 words, 4 distinct
    assert not is_degenerate("paris paris paris") and not is_degenerate("Jane Austen wrote Pride and Prejudice")


def test_cleaning_removes_a_planted_negative_that_holds_the_gold_answer() -> None:
    answers = ["Jane Austen", "Austen"]
    planted = Example("I believe the author is Austen.", desirable=False, f1=0.0, source="sample")
    examples = [Example("Jane Austen", True, 1.0, "gold"), planted,
                Example("Dickens", False, 0.0, "sample"), Example("dickens.", False, 0.0, "sample"),
                Example("no no no no", False, 0.0, "sample"), Example("the", False, 0.0, "sample"),
                Example("Bronte", False, 0.0, "sample"), Example("Tolstoy", False, 0.0, "sample")]
    kept, dropped = clean_examples(examples, answers, max_per_question=2, strategy="subem")
    assert [e.text for e in kept] == ["Jane Austen", "Dickens", "Bronte"]
    assert planted not in kept
    assert dropped == {("undesirable", "contains_gold"): 1, ("undesirable", "duplicate"): 1,
                       ("undesirable", "degenerate"): 1, ("undesirable", "empty"): 1,
                       ("undesirable", "over_cap"): 1}
    kept, dropped = clean_examples(examples, answers, max_per_question=2)  # em: the planted one is a negative
    assert [e.text for e in kept] == ["Jane Austen", planted.text, "Dickens"]
    assert dropped == {("undesirable", "duplicate"): 1, ("undesirable", "degenerate"): 1,
                       ("undesirable", "empty"): 1, ("undesirable", "over_cap"): 2}


def test_labelling_policies() -> None:
    texts = ["Paris", "it is paris", "Lyon"]
    assert [(e.text, e.desirable) for e in label_examples(texts, ["Paris"], strategy="subem")] == [
        ("Paris", True), ("it is paris", True), ("Lyon", False)]
    assert [(e.text, e.desirable) for e in label_examples(texts, ["Paris"])] == [  # em: the verbose one is negative
        ("Paris", True), ("it is paris", False), ("Lyon", False)]
    assert [e.text for e in label_examples(texts, ["Paris"], strategy="subem", desirable="gold")] == ["Paris", "Lyon"]
    assert [e.text for e in label_examples(texts, ["Paris"], desirable="gold")] == ["Paris", "it is paris", "Lyon"]
    for strategy in ("subem", "em"):
        assert [e.source for e in label_examples(["Lyon"], ["Paris"], strategy=strategy, desirable="samples")] == [
            "sample"]
        assert [e.source for e in label_examples(["Lyon"], ["Paris"], strategy=strategy)] == ["gold", "sample"]


def test_kto_cli_cleans_planted_negative_from_cached_samples(tmp_path: Path, capsys) -> None:
    raw = write_raw(tmp_path / "raw.jsonl")
    planted = {"what is the capital of france": ["Paris", "i am not sure but maybe paris or lyon", "Lyon"]}
    samples = {f"what is the capital of {c}": planted.get(f"what is the capital of {c}", ["Oslo", "oslo"])
               for c, _ in CAPITALS}
    cache = write_cache(tmp_path / "cache.jsonl", raw, samples)
    assert qalign_main(["convert", "kto", "--input", str(raw), "--dataset", "k", "--samples", str(cache),
                        "--strategy", "f1", "--dataset-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 undesirable contains gold" in out and "5 undesirable duplicate" in out
    rows = json.loads((tmp_path / "data/k.json").read_text())
    texts = {(r["question"], r["output"]): r["kto_tag"] for r in rows}
    assert ("what is the capital of france", "i am not sure but maybe paris or lyon") not in texts
    assert texts[("what is the capital of france", "Paris")] is True
    assert texts[("what is the capital of france", "Lyon")] is False
    # interleaved: neighbouring rows come from different questions (LLaMA-Factory's KTO KL term)
    assert len(rows) == 12 and all(a["id"] != b["id"] for a, b in zip(rows, rows[1:], strict=False))
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["k"]
    assert entry["columns"]["kto_tag"] == "kto_tag" and entry["qalign"]["kind"] == "kto"


def test_cache_reader_tolerates_a_partial_last_line(tmp_path: Path) -> None:
    cache = tmp_path / "c.jsonl"
    cache.write_text('{"qalign_samples": 1}\n{"id": "a", "samples": []}\n{"id": "b", "sam')
    header, rows, complete = read_cache(cache)
    assert header == {"qalign_samples": 1} and list(rows) == ["a"]
    assert complete == len('{"qalign_samples": 1}\n{"id": "a", "samples": []}\n')
    cache.write_text('{"id": "a", "samples": []}\nnot json\n{"id": "b", "samples": []}\n')
    with pytest.raises(QalignError, match=r"c.jsonl:2: malformed"):
        read_cache(cache)
    with pytest.raises(QalignError, match="Pass --model"):
        ensure_samples([Question("zz", "q", ["a"], "p")], tmp_path / "missing.jsonl", None)
    assert row_seed(1, "a", 0) != row_seed(1, "a", 1) and row_seed(1, "a", 0) == row_seed(1, "a", 0)


# --- the real sampler on the tiny Qwen3 --------------------------------------------------------------------------


def _mine(tiny: Path, raw: Path, out: Path, *extra: str) -> None:
    args = ["convert", "preference", "--model", str(tiny), "--template", "qwen3_nothink", "--input", str(raw),
            "--dataset", "pref", "--dataset-dir", str(out), "--num-samples", "4", "--max-new-tokens", "8",
            "--batch-size", "2", "--seed", "7", "--device", "cpu", *extra]
    assert qalign_main(args) == 0


def test_mining_invariants_llamafactory_loading_and_resume(tiny_qwen3: Path, tmp_path: Path, capsys) -> None:
    raw = write_raw(tmp_path / "raw.jsonl")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _mine(tiny_qwen3, raw, whole)
    rows = json.loads((whole / "data/pref.json").read_text())
    answers = {country: a for country, a in CAPITALS}
    assert len({r["id"] for r in rows}) == 6 and len(rows) <= 12
    for row in rows:
        golds = answers[row["question"].removeprefix("what is the capital of ")]
        assert f1_score(row["chosen"], golds) >= f1_score(row["rejected"], golds)
        assert f1_score(row["chosen"], golds) - f1_score(row["rejected"], golds) >= 0.3 - 1e-9  # the margin
        assert exact_match(row["rejected"], golds) == 0.0 and row["chosen_f1"] == 1.0
    cached = [json.loads(line) for line in (whole / "data/pref.samples.jsonl").open()]
    assert cached[0]["num_samples"] == 4 and all(len(r["samples"]) == 4 for r in cached[1:])

    # LLaMA-Factory reads it as pairwise data: one prompt, two responses
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    (attr,) = get_dataset_list(["pref"], str(whole))
    assert attr.ranking and (attr.chosen, attr.rejected) == ("chosen", "rejected")
    aligned = _load_single_dataset(attr, ModelArguments(model_name_or_path="unused", cache_dir=str(tmp_path / "hf")),
                                   DataArguments(dataset_dir=str(whole)),
                                   Seq2SeqTrainingArguments(output_dir=str(tmp_path / "o"), report_to="none"))
    assert aligned.num_rows == len(rows)
    assert [m["content"] for m in aligned[0]["_response"]] == [rows[0]["chosen"], rows[0]["rejected"]]

    # interrupted: 3 questions done, then killed while writing the 4th line; the rerun finishes the other 3
    _mine(tiny_qwen3, raw, resumed, "--limit", "3")
    cache = resumed / "data/pref.samples.jsonl"
    fourth = (whole / "data/pref.samples.jsonl").read_text().splitlines()[4]
    with cache.open("a") as handle:
        handle.write(fourth[: len(fourth) // 2])
    capsys.readouterr()
    _mine(tiny_qwen3, raw, resumed)
    assert "3 of 6 questions cached" in capsys.readouterr().out
    for name in ("data/pref.samples.jsonl", "data/pref.json"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    for folder in (whole, resumed):  # the registry records the settings the samples were drawn with
        entry = json.loads((folder / "dataset_info.json").read_text())["pref"]["qalign"]
        assert entry["sampling"] == cached[0] and entry["samples"].endswith("pref.samples.jsonl")

    # settings changed under an existing cache: refuse instead of mixing samples
    (whole / "data/pref.samples.jsonl").write_text("\n".join(cache.read_text().splitlines()[:3]) + "\n")
    from qalign.converters.preference import convert_preference
    from qalign.generate.sampling import SamplingConfig

    with pytest.raises(QalignError, match="temperature: 1.0 -> 0.5"):
        convert_preference(ConvertJob(str(raw), "pref", dataset_dir=whole), sampling=SamplingConfig(
            model=str(tiny_qwen3), template="qwen3_nothink", num_samples=4, max_new_tokens=8, seed=7,
            temperature=0.5))
