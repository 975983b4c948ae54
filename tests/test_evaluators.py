"""Evaluators: metrics against hand-computed values, alignment, scoring files, report, CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest

from qalign.cli import main
from qalign.errors import QalignError
from qalign.evaluators.metrics import (
    exact_match,
    extract_answer,
    f1_score,
    normalize_answer,
    score_all,
    strip_think,
    substring_exact_match,
)
from qalign.evaluators.predictions import align, load_aligned, load_gold, load_predictions, prompt_contains
from qalign.evaluators.report import build_report, load_scores
from qalign.evaluators.scoring import evaluate, score_pairs, summarize

# ---------------------------------------------------------------- metrics


def test_normalize_punctuation_articles_case():
    assert normalize_answer("Hello, World!") == "hello world"
    assert normalize_answer("  The   Eiffel\tTower. ") == "eiffel tower"
    assert normalize_answer("A an THE apple") == "apple"
    # articles only as whole words: "theatre" and "anna" stay
    assert normalize_answer("The theatre of Anna") == "theatre of anna"


def test_normalize_unicode():
    # accented letters are letters: kept (and lowercased); curly quotes and en dash are punctuation: dropped
    assert normalize_answer("Wilhelm Conrad Röntgen") == "wilhelm conrad röntgen"
    assert normalize_answer("“Ole Einar Bjørndalen”") == "ole einar bjørndalen"
    assert normalize_answer("‘Élan’ 1914–1918") == "élan 19141918"
    assert exact_match("“Röntgen”", ["Röntgen"]) == 1.0
    assert exact_match("Rontgen", ["Röntgen"]) == 0.0


def test_punctuation_and_articles_in_scores():
    assert score_all("The Paris.", ["paris"]) == {"subem": 1.0, "em": 1.0, "f1": 1.0}


def test_several_aliases():
    golds = ["Ole Einar Bjørndalen", "Norway"]
    # SubEM: "norway" is in "norway won" -> 1; EM: neither alias equals "norway won" -> 0
    # F1 vs "norway": overlap 1, P = 1/2, R = 1/1 -> 2*(1/2)*1 / (3/2) = 2/3; vs the other alias 0 -> max 2/3
    scores = score_all("Norway won", golds)
    assert scores["subem"] == 1.0
    assert scores["em"] == 0.0
    assert scores["f1"] == pytest.approx(2 / 3)
    # EM is "any alias": the second one matches exactly
    assert exact_match("norway", golds) == 1.0
    # F1 is the max over aliases: "ole bjørndalen" vs alias 1: overlap 2, P = 2/2, R = 2/3 -> 2*(2/3)/(5/3) = 4/5
    assert f1_score("Ole Bjørndalen", golds) == pytest.approx(0.8)


def test_empty_prediction_scores_zero():
    assert score_all("", ["Paris"]) == {"subem": 0.0, "em": 0.0, "f1": 0.0}
    assert score_all("   ", ["Paris", "France"]) == {"subem": 0.0, "em": 0.0, "f1": 0.0}
    assert score_all("Paris", []) == {"subem": 0.0, "em": 0.0, "f1": 0.0}


def test_empty_gold_alias_never_matches():
    # "" is a substring of everything and equals an empty prediction; it must still score 0
    assert score_all("Paris", ["", "London"]) == {"subem": 0.0, "em": 0.0, "f1": 0.0}
    assert score_all("", [""]) == {"subem": 0.0, "em": 0.0, "f1": 0.0}
    # "The" normalises to "" as well
    assert score_all("the", ["The"]) == {"subem": 0.0, "em": 0.0, "f1": 0.0}


def test_think_tags_stripped():
    assert strip_think("<think>maybe London</think>\n\nParis") == "Paris"
    assert score_all("<think>maybe London</think>Paris", ["Paris"]) == {"subem": 1.0, "em": 1.0, "f1": 1.0}
    # the answer only inside the reasoning does not count
    assert score_all("<think>I guess Paris</think> London", ["Paris"]) == {"subem": 0.0, "em": 0.0, "f1": 0.0}
    # unclosed <think> without the answer marker: the model never answered (was "Answer:", the text before it)
    assert strip_think("Answer: <think>Paris is") == ""
    assert score_all("<think>Paris is the capital", ["Paris"]) == {"subem": 0.0, "em": 0.0, "f1": 0.0}


@pytest.mark.parametrize(("output", "answer"), [
    ("<think>\nThe answer is: 1913", "1913"),  # unclosed block, marker inside: the GPU study's 163 "empty" answers
    ("<think>r</think>\n\nThe answer is: 2013", "2013"),  # the marker is never part of the answer
    ("The answer is: 2013", "2013"),
    ("the answer is : no, THE ANSWER  IS: Rome\nQuestion: next one", "Rome"),  # the last marker, its line only
    ("The answer is:\n  Lyon\n", "Lyon"),  # a marker alone on its line: the next line
    ("<think>The answer is: Rome</think>Paris", "Paris"),  # a marker inside a closed block is reasoning
    ("reasoning the chat template opened</think>Paris", "Paris"),  # a stray </think>: what follows it
    ("Paris", "Paris"),
    ("  Paris is the capital.  ", "Paris is the capital."),
    ("<think>\nstill thinking, cut at the cap", None),  # unclosed, no marker: no answer, never ""
    ("Paris <think>hmm", None),
    ("<think>r</think>The answer is:", None),  # nothing after the marker
    ("<think>r</think>\n", None),
    ("", None),
])
def test_extract_answer(output, answer):
    assert extract_answer(output) == answer
    assert strip_think(output) == (answer or "")


def test_marker_answers_score_full_marks():
    # today: the first scored "" (EM 0), the second kept the marker (EM 0, F1 0.5)
    assert score_all("<think>\nThe answer is: 1913", ["1913"]) == {"subem": 1.0, "em": 1.0, "f1": 1.0}
    assert score_all("<think>r</think>The answer is: 2013", ["2013"]) == {"subem": 1.0, "em": 1.0, "f1": 1.0}
    assert extract_answer("Answer: Rome", marker="Answer:") == "Rome" and extract_answer("Answer: Rome", None) == \
        "Answer: Rome"


def test_f1_repeated_tokens():
    # pred {paris: 3}, gold {paris: 1}: common = min(3, 1) = 1; P = 1/3, R = 1 -> 2*(1/3)*1 / (4/3) = 1/2
    assert f1_score("Paris Paris Paris", ["Paris"]) == pytest.approx(0.5)
    # pred {new: 2, york: 2}, gold {new, york, city}: common = 2; P = 2/4, R = 2/3 -> (2/3) / (7/6) = 4/7
    assert f1_score("New York New York", ["New York City"]) == pytest.approx(4 / 7)
    assert substring_exact_match("New York New York", ["new york"]) == 1.0


# ---------------------------------------------------------------- fixtures

QUESTIONS = [
    ("q1", "who wrote hamlet", ["William Shakespeare", "Shakespeare"]),
    ("q2", "capital of france", ["Paris"]),
    ("q3", "when did ww2 end", ["1945", "2 September 1945"]),
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def _eval_set(path: Path, questions=QUESTIONS) -> Path:
    rows = [
        {
            "id": i,
            "question": q,
            "instruction": f"Answer briefly.\nQuestion: {q}",
            "input": "",
            "output": a[0],
            "answers": a,
        }
        for i, q, a in questions
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _prompt(question: str) -> str:
    # what LLaMA-Factory decodes: chat template around the instruction (newlines inside the question too)
    return (
        f"<|im_start|>user\nAnswer briefly.\nQuestion: {question.replace(' ', '  ', 1)}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def _generated(path: Path, questions: list[str], answers: list[str]) -> Path:
    return _write_jsonl(
        path, [{"prompt": _prompt(q), "predict": a, "label": ""} for q, a in zip(questions, answers, strict=True)]
    )


# ---------------------------------------------------------------- alignment


def test_align_by_id_any_order(tmp_path):
    gold = load_gold(_eval_set(tmp_path / "eval.json"))
    preds = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "q3", "prediction": "1945"},
            {"id": "q1", "prediction": "Shakespeare"},
            {"id": "q2", "prediction": "x"},
        ],
    )
    pairs = align(load_predictions(preds), gold, preds, tmp_path / "eval.json")
    assert [(g.id, p.text) for g, p in pairs] == [("q1", "Shakespeare"), ("q2", "x"), ("q3", "1945")]


def test_align_by_order_checks_prompts(tmp_path):
    gold_path = _eval_set(tmp_path / "eval.json")
    preds = _generated(tmp_path / "generated_predictions.jsonl", [q for _, q, _ in QUESTIONS], ["a", "b", "c"])
    pairs = load_aligned(preds, gold_path)
    assert [(g.id, p.text) for g, p in pairs] == [("q1", "a"), ("q2", "b"), ("q3", "c")]


def test_prompt_contains_whitespace_and_decode_cleanup():
    assert prompt_contains("Q:  who\n wrote   hamlet ?", "who wrote hamlet ?")
    assert prompt_contains("Q: what's the name?", "what 's the name ?")
    assert not prompt_contains("Q: who wrote macbeth", "who wrote hamlet")


def test_align_by_order_misaligned_names_line(tmp_path):
    gold_path = _eval_set(tmp_path / "eval.json")
    swapped = [QUESTIONS[0][1], QUESTIONS[2][1], QUESTIONS[1][1]]
    preds = _generated(tmp_path / "generated_predictions.jsonl", swapped, ["a", "b", "c"])
    with pytest.raises(QalignError) as info:
        load_aligned(preds, gold_path)
    message = str(info.value)
    assert f"{preds}:2:" in message
    assert "'capital of france'" in message
    assert "ids" in message  # the fix


def test_align_count_mismatch(tmp_path):
    gold_path = _eval_set(tmp_path / "eval.json")
    preds = _generated(tmp_path / "generated_predictions.jsonl", [QUESTIONS[0][1], QUESTIONS[1][1]], ["a", "b"])
    with pytest.raises(QalignError, match=r"2 predictions but .* has 3 gold questions.*max_samples"):
        load_aligned(preds, gold_path)


def test_align_unknown_and_missing_ids(tmp_path):
    gold_path = _eval_set(tmp_path / "eval.json")
    preds = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "q1", "prediction": "a"},
            {"id": "q2", "prediction": "b"},
            {"id": "zzz", "prediction": "c"},
        ],
    )
    with pytest.raises(QalignError) as info:
        load_aligned(preds, gold_path)
    message = str(info.value)
    assert "1 of 3 prediction ids are not in the gold file" in message
    assert f"{preds}:3" in message and "'zzz'" in message
    assert "1 of 3 gold ids have no prediction: 'q3'" in message


def test_predictions_without_id_or_prompt_rejected(tmp_path):
    gold_path = _eval_set(tmp_path / "eval.json")
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a"}] * 3)
    with pytest.raises(QalignError, match=r"p\.jsonl:1: .*neither `id` nor `prompt`"):
        load_aligned(preds, gold_path)
    mixed = _write_jsonl(tmp_path / "m.jsonl", [{"id": "q1", "prediction": "a"}, {"prediction": "b"}])
    with pytest.raises(QalignError, match=r"m\.jsonl:2: some predictions have an `id`"):
        load_predictions(mixed)
    bad = _write_jsonl(tmp_path / "b.jsonl", [{"id": "q1", "text": "a"}])
    with pytest.raises(QalignError, match=r"b\.jsonl:1: no `prediction` or `predict` field"):
        load_predictions(bad)


# ---------------------------------------------------------------- gold files


def test_raw_gold_jsonl_gz_matches_eval_set(tmp_path):
    raw = _write_jsonl(
        tmp_path / "raw.jsonl.gz",
        [
            {"question": "Who wrote Hamlet?", "answers": ["William Shakespeare", "Shakespeare"], "ctxs": []},
            {"question": "no answer here", "answers": [], "ctxs": []},
            {"question": "who wrote  hamlet", "answers": ["someone else"]},  # same normalized question: dropped
            {"question": "capital of france", "answer": ["Paris"]},  # NQ-open style
            {"id": "dev-7", "question": "when did ww2 end", "answers": ["1945"]},
        ],
    )
    gold = load_gold(raw)
    # sha1("who wrote hamlet") / sha1("capital of france"), first 12 hex digits
    ids = [
        "nq-" + hashlib.sha1(b"who wrote hamlet").hexdigest()[:12],
        "nq-" + hashlib.sha1(b"capital of france").hexdigest()[:12],
        "dev-7",
    ]
    assert [g.id for g in gold] == ids
    assert [g.question for g in gold] == ["Who wrote Hamlet?", "capital of france", "when did ww2 end"]
    assert gold[0].answers == ["William Shakespeare", "Shakespeare"] and gold[1].answers == ["Paris"]

    # the eval set the converters would write from it scores identically
    eval_set = _eval_set(tmp_path / "eval.json", [(g.id, g.question, g.answers) for g in gold])
    preds = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": ids[0], "prediction": "Shakespeare"},
            {"id": ids[1], "prediction": "Lyon"},
            {"id": "dev-7", "prediction": "in 1945"},
        ],
    )
    from_raw = score_pairs(load_aligned(preds, raw))
    from_eval = score_pairs(load_aligned(preds, eval_set))
    assert from_raw == from_eval
    assert [r["subem"] for r in from_raw] == [1.0, 0.0, 1.0]


def test_real_nq_raw_file_vs_converted_eval_set(shared_data, tmp_path):
    from qalign.converters.eval_set import convert_eval
    from qalign.converters.job import ConvertJob

    raw = shared_data / "nq-open-gold.dev.jsonl.gz"
    gold = load_gold(raw)
    assert len(gold) == 300
    assert all(g.id.startswith("nq-") and len(g.id) == 15 and g.answers for g in gold)
    convert_eval(ConvertJob(str(raw), "nq_dev", dataset_dir=tmp_path))
    converted_path = tmp_path / "data" / "nq_dev.json"
    converted = load_gold(converted_path)
    assert [(g.id, g.question, g.answers) for g in converted] == [(g.id, g.question, g.answers) for g in gold]
    assert [g.line for g in converted] == list(range(1, 301))

    # predictions in eval-set order, matched by their prompts, against either gold file
    rows = json.loads(converted_path.read_text())
    preds = _write_jsonl(
        tmp_path / "generated_predictions.jsonl",
        [{"prompt": f"<|im_start|>user\n{r['instruction']}<|im_end|>", "predict": r["output"]} for r in rows],
    )
    assert summarize(score_pairs(load_aligned(preds, raw)))["em"] == 1.0
    assert summarize(score_pairs(load_aligned(preds, converted_path)))["n"] == 300
    shuffled = _write_jsonl(tmp_path / "shuffled.jsonl", [json.loads(x) for x in preds.read_text().splitlines()][::-1])
    with pytest.raises(QalignError, match=rf"shuffled\.jsonl:1: .*\({re.escape(str(raw))}, id {gold[0].id}\)"):
        load_aligned(shuffled, raw)
    with pytest.raises(QalignError, match=rf"shuffled\.jsonl:1: .*\({re.escape(str(converted_path))}:1\)"):
        load_aligned(shuffled, converted_path)


def test_eval_set_duplicate_id_rejected(tmp_path):
    path = _eval_set(tmp_path / "eval.json", [("a", "q one", ["x"]), ("a", "q two", ["y"])])
    with pytest.raises(QalignError, match=r"eval\.json:2: id 'a' already used at line 1"):
        load_gold(path)


# ---------------------------------------------------------------- scoring files

PREDICTIONS = ["<think>hmm</think>Shakespeare wrote it", "Lyon", "1945"]
# q1: SubEM 1 ("shakespeare" in "shakespeare wrote it"), EM 0, F1 vs "Shakespeare": P 1/3, R 1 -> (2/3)/(4/3) = 1/2
# q2: all 0.  q3: all 1.
# means: SubEM 2/3, EM 1/3, F1 (0.5 + 0 + 1) / 3 = 0.5


def _evaluated_run(tmp_path: Path, name: str, answers: list[str]) -> Path:
    run = tmp_path / name
    run.mkdir()
    gold_path = _eval_set(tmp_path / "eval.json")
    _generated(run / "generated_predictions.jsonl", [q for _, q, _ in QUESTIONS], answers)
    evaluate(run / "generated_predictions.jsonl", gold_path)
    return run


def test_summary_and_scores_files(tmp_path):
    run = _evaluated_run(tmp_path, "sft", PREDICTIONS)
    summary = json.loads((run / "summary.json").read_text())
    # words: "shakespeare wrote it" 3, "lyon" 1, "1945" 1
    assert summary == {"n": 3, "subem": pytest.approx(2 / 3), "em": pytest.approx(1 / 3), "f1": pytest.approx(0.5),
                       "no_answer": 0, "answer_words": pytest.approx(5 / 3)}
    rows = load_scores(run)
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[0] == {
        "id": "q1",
        "question": "who wrote hamlet",
        "prediction": "Shakespeare wrote it",
        "answers": ["William Shakespeare", "Shakespeare"],
        "subem": 1.0,
        "em": 0.0,
        "f1": 0.5,
        "no_answer": False,
        "words": 3,
    }
    assert summarize(rows) == summary
    assert not list(run.glob(".*.tmp"))


def test_summary_counts_predictions_with_no_answer(tmp_path):
    # q1 unclosed think with the marker -> "Shakespeare" (EM 1); q2 unclosed, no marker -> no answer;
    # q3 nothing after the marker -> no answer
    run = _evaluated_run(tmp_path, "cot", ["<think>\nPassage 2 says so. The answer is: Shakespeare",
                                           "<think>\nParis or Lyon, let me check the",
                                           "<think>r</think>The answer is:"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary == {"n": 3, "subem": pytest.approx(1 / 3), "em": pytest.approx(1 / 3), "f1": pytest.approx(1 / 3),
                       "no_answer": 2, "answer_words": pytest.approx(1 / 3)}
    rows = load_scores(run)
    assert [(r["prediction"], r["no_answer"], r["words"]) for r in rows] == [("Shakespeare", False, 1), ("", True, 0),
                                                                             ("", True, 0)]
    table = build_report([f"cot={run}"]).splitlines()
    assert table[0] == "| method | n | SubEM | EM | F1 | no answer | words | ΔSubEM | ΔF1 |"
    assert table[2] == "| cot | 3 | 33.3 | 33.3 | 33.3 | 2 | 0.3 | — | — |"
    # a summary written before the counts existed still reports, with "—" in their cells
    (run / "summary.json").write_text(json.dumps({"n": 3, "subem": 0.5, "em": 0.5, "f1": 0.5}))
    assert build_report([f"old={run}"]).splitlines()[2] == "| old | 3 | 50.0 | 50.0 | 50.0 | — | — | — | — |"


# ---------------------------------------------------------------- report


def test_report_values_and_deltas(tmp_path):
    base = _evaluated_run(tmp_path, "base", ["no idea", "Lyon", "1944"])  # all zero
    sft = _evaluated_run(tmp_path, "sft", PREDICTIONS)
    table = build_report([f"base={base}", f"sft={sft}"])
    lines = table.splitlines()
    assert lines[0] == "| method | n | SubEM | EM | F1 | no answer | words | ΔSubEM | ΔF1 |"
    assert lines[2] == "| base | 3 | 0.0 | 0.0 | 0.0 | 0 | 1.3 | — | — |"  # words (2 + 1 + 1) / 3
    # 2/3 = 66.7 %, 1/3 = 33.3 %, 0.5 = 50.0 %; deltas vs 0; words (3 + 1 + 1) / 3
    assert lines[3] == "| sft | 3 | 66.7 | 33.3 | 50.0 | 0 | 1.7 | +66.7 | +50.0 |"
    reverse = build_report([f"sft={sft}", f"base={base}"]).splitlines()
    assert reverse[3] == "| base | 3 | 0.0 | 0.0 | 0.0 | 0 | 1.3 | -66.7 | -50.0 |"


def test_report_missing_summary(tmp_path):
    with pytest.raises(QalignError, match=r"nowhere/summary\.json: not found.*qalign eval"):
        build_report([f"x={tmp_path / 'nowhere'}"])


# ---------------------------------------------------------------- CLI


def test_cli_eval_and_report(tmp_path, capsys):
    gold_path = _eval_set(tmp_path / "eval.json")
    preds = _generated(tmp_path / "generated_predictions.jsonl", [q for _, q, _ in QUESTIONS], PREDICTIONS)
    assert main(["eval", "--predictions", str(preds), "--gold", str(gold_path), "--output", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"SubEM +66\.7\n", out) and re.search(r"EM +33\.3\n", out) and re.search(r"F1 +50\.0\n", out)
    assert "summary.json" in out and "scores.jsonl" in out
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["n"] == 3

    report = tmp_path / "report.md"
    assert main(["report", "--run", f"sft={tmp_path / 'o'}", "--output", str(report)]) == 0
    assert "| sft | 3 | 66.7 | 33.3 | 50.0 | 0 | 1.7 | — | — |" in capsys.readouterr().out
    assert "| sft | 3 | 66.7 | 33.3 | 50.0 | 0 | 1.7 | — | — |" in report.read_text()


def test_cli_errors_exit_2(tmp_path, capsys):
    gold_path = _eval_set(tmp_path / "eval.json")
    preds = _generated(tmp_path / "generated_predictions.jsonl", [QUESTIONS[0][1]], ["a"])
    assert main(["eval", "--predictions", str(preds), "--gold", str(gold_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qalign: error: ") and "max_samples" in err and "Traceback" not in err
    assert not (tmp_path / "summary.json").exists()

    assert main(["report", "--run", f"base={tmp_path / 'missing'}"]) == 2
    assert "qalign eval" in capsys.readouterr().err
