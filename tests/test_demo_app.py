"""The Streamlit page (demo/app.py) driven by Streamlit's AppTest on the tiny Qwen3 model and a tiny LoRA adapter."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from demo import logic
from demo.engine import Engine
from qalign.evaluators.metrics import score_all
from tests.test_demo_fixtures import TEMPLATE, build_tiny_adapter, write_eval_set

APP = Path(__file__).resolve().parents[1] / "demo" / "app.py"
MAX_NEW = 16


@pytest.fixture(scope="module")
def workspace(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-app")
    build_tiny_adapter(tiny_qwen3, root / "outputs" / "tiny" / "sft")
    write_eval_set(root)
    return root


def _page(monkeypatch: pytest.MonkeyPatch, model: Path, root: Path, *extra: str) -> AppTest:
    argv = ["demo/app.py", "--model", str(model), "--template", TEMPLATE, "--outputs", str(root / "outputs"),
            "--data", str(root / "data"), "--max-new-tokens", str(MAX_NEW), *extra]
    monkeypatch.setattr(sys, "argv", argv)  # AppTest runs the script in this process
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_answers_an_eval_record_with_every_model(monkeypatch: pytest.MonkeyPatch, tiny_qwen3: Path,
                                                      workspace: Path) -> None:
    at = _page(monkeypatch, tiny_qwen3, workspace, "--prompt", "closed_book")
    assert at.multiselect(key="models").options == ["base", "tiny/sft"]
    assert at.multiselect(key="models").value == ["base", "tiny/sft"]
    assert at.selectbox(key="eval_set").options == ["demo_dev.json"]  # not_eval.json has no answers
    assert at.selectbox(key="prompt").value == "closed_book"

    at.selectbox(key="eval_set").select("demo_dev.json").run()
    assert at.selectbox(key="prompt").value == "answer_only"  # the prompt the eval set was converted with
    at.selectbox(key="record").select(0).run()
    row = json.loads((workspace / "data" / "demo_dev.json").read_text())[0]
    assert at.text_input(key="question").value == row["question"]
    assert at.text_input(key="golds").value == "Jane Austen | Austen"
    assert "Pride and Prejudice | Pride and Prejudice is a novel by Jane Austen." in at.text_area(key="passages").value
    at.number_input(key="max_new_tokens").set_value(MAX_NEW)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)

    # each column shows what the model itself answers to the converted instruction, scored against the gold
    engine = Engine(str(tiny_qwen3), TEMPLATE)
    expected = [engine.generate("base", None, row["instruction"], MAX_NEW),
                engine.generate("tiny/sft", workspace / "outputs" / "tiny" / "sft", row["instruction"], MAX_NEW)]
    shown = [element.value for element in at.markdown]
    table = at.table[0].value
    assert list(table["model"]) == ["base", "tiny/sft"]
    for index, answer in enumerate(expected):
        assert logic.escape_markdown(answer.text.strip()) in shown
        assert table["tokens"][index] == answer.new_tokens
        assert table["F1"][index] == f"{score_all(answer.text, row['answers'])['f1']:.2f}"
    captions = [element.value for element in at.caption if element.value.startswith("latency")]
    assert len(captions) == 2 and all("first token" in caption and "tok/s" in caption for caption in captions)
    assert "<|im_start|>user\n" + row["instruction"] in at.expander[0].children[0].value

    at.text_input(key="golds").set_value("Austen").run()  # a rerun keeps the answers on the page
    assert len(at.table[0].value) == 2 and not at.exception


def test_page_shows_errors_instead_of_crashing(monkeypatch: pytest.MonkeyPatch, tiny_qwen3: Path,
                                               workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "errors"
    shutil.copytree(workspace / "outputs", root / "outputs")
    at = _page(monkeypatch, tiny_qwen3, root, "--max-input-chars", "600")
    (root / "outputs" / "tiny" / "sft" / "adapter_model.safetensors").unlink()  # an interrupted training run
    at.text_input(key="question").set_value("who wrote pride and prejudice").run()
    at.button(key="generate").click().run()
    assert not at.exception
    errors = [element.value for element in at.error]
    assert len(errors) == 1 and errors[0].startswith(f"tiny/sft: adapter could not be loaded ({root / 'outputs'}")
    assert errors[0].endswith("Retrain it or pick another one.")
    assert list(at.table[0].value["model"]) == ["base", "tiny/sft"]  # the base model still answered

    at.text_area(key="passages").set_value("T | " + "x" * 700).run()
    at.button(key="generate").click().run()
    assert "this page accepts at most 600 (--max-input-chars)" in at.error[0].value and not at.exception

    at = _page(monkeypatch, tmp_path / "no-such-model", root)
    assert "Could not load the base model" in at.error[0].value and "make model" in at.error[0].value

    at = _page(monkeypatch, tiny_qwen3, root, "--max-new-tokens", "x")
    assert "demo arguments: argument --max-new-tokens: invalid int value: 'x'" in at.error[0].value
