"""`make demo`: the base model and trained adapters answer one question side by side, streamed, with scores.

Run: streamlit run demo/app.py --server.address 127.0.0.1 -- [--model PATH --template NAME --outputs DIR ...]
The logic lives in demo/logic.py (inputs, prompts, scores) and demo/engine.py (models, generation).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `streamlit run` puts demo/ on sys.path, not the repository root
    sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402

from demo import logic  # noqa: E402
from demo.engine import Answer, Engine  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@st.cache_resource(show_spinner="Loading the base model (once per server) ...")
def get_engine(model: str, template: str, trust_remote_code: bool, threads: int) -> Engine:
    return Engine(model, template, trust_remote_code=trust_remote_code, threads=threads)


@st.cache_data(show_spinner=False)
def eval_records(path: str, mtime: float) -> list[dict]:
    return logic.load_eval_records(Path(path))


def fill_from_record(records: list[dict]) -> None:
    """on_change of the record picker: copy its question, passages and gold answers into the inputs."""
    index = st.session_state.get("record")
    if index is None:
        return
    record = records[index]
    st.session_state.question = record["question"]
    st.session_state.passages = record["passages"]
    st.session_state.golds = " | ".join(record["answers"])


def use_eval_set_prompt(sets: dict[str, Path]) -> None:
    """on_change of the eval-set picker: forget the record, and use the prompt the set was converted with."""
    st.session_state.record = None
    chosen = sets.get(st.session_state.get("eval_set") or "")
    prompt = logic.eval_set_prompt(chosen) if chosen else None
    if prompt:
        st.session_state.prompt = prompt


def show_answer(answer: Answer, golds: list[str], index: int) -> None:
    """The final state of one model's column: answer, error, scores and latency."""
    with st.container(key=f"answer_{index}"):
        text = answer.text.strip()
        st.markdown(logic.escape_markdown(text) if text else "_(empty answer)_")
        if answer.error:
            st.error(answer.error)
        scored = logic.scored_answer_line(answer.text) if not answer.error else None
        if scored:
            st.caption(logic.escape_markdown(scored))
        score = logic.scores(answer.text, golds)
        if score and not answer.error:
            st.markdown(f"**SubEM** {score['subem']:.0f} · **EM** {score['em']:.0f} · **F1** {score['f1']:.2f}")
        first = f"{answer.first_token_seconds:.2f} s" if answer.first_token_seconds is not None else "—"
        cap = " · stopped at max new tokens" if answer.hit_cap else ""
        st.caption(f"latency {answer.seconds:.2f} s · first token {first} · {answer.new_tokens} tokens "
                   f"({answer.tokens_per_second:.1f} tok/s){cap}")


def summary_rows(answers: list[Answer], golds: list[str]) -> list[dict]:
    rows = []
    for answer in answers:
        score = logic.scores(answer.text, golds) if not answer.error else None
        rows.append({
            "model": answer.label,
            "SubEM": f"{score['subem']:.0f}" if score else "—",
            "EM": f"{score['em']:.0f}" if score else "—",
            "F1": f"{score['f1']:.2f}" if score else "—",
            "latency s": f"{answer.seconds:.2f}",
            "tokens": answer.new_tokens,
            "tok/s": f"{answer.tokens_per_second:.1f}",
        })
    return rows


def main() -> None:
    st.set_page_config(page_title="qalign demo", layout="wide")
    st.title("qalign: answers side by side")
    try:
        config = logic.parse_config(sys.argv[1:])
    except logic.DemoError as exc:
        st.error(str(exc))
        st.stop()
    try:
        engine = get_engine(config.model, config.template, config.trust_remote_code, config.threads)
    except Exception as exc:  # a missing or unreadable model: say so in the page
        st.error(f"Could not load the base model '{config.model}' (template '{config.template}'): "
                 f"{type(exc).__name__}: {exc}. Build the default with `make model`, or pass `-- --model PATH`.")
        st.stop()

    adapters = {adapter.label: adapter for adapter in logic.discover_adapters(config.outputs)}
    options = [logic.BASE_LABEL, *adapters]
    with st.sidebar:
        st.header("Models")
        selected = st.multiselect("Compare", options, default=options[:3], key="models")
        st.caption(f"Base: `{config.model}` · template `{config.template}` · loaded in {engine.load_seconds:.1f} s")
        if not adapters:
            st.info(f"No adapters under `{config.outputs}/` yet (folders with adapter_config.json): run `make sft`.")
        for label in selected:
            if label in adapters and logic.base_mismatch(adapters[label], config.model):
                st.warning(f"`{label}` was trained on `{adapters[label].base_model}`, not on this base model.")
        st.header("Generation")
        choices = logic.prompt_choices(config.prompt)
        st.selectbox("Prompt template", choices, key="prompt")
        max_new = st.number_input("Max new tokens (greedy)", 1, config.max_new_tokens,
                                  min(logic.DEFAULT_NEW_TOKENS, config.max_new_tokens), key="max_new_tokens")
        if st.get_option("server.address") not in LOOPBACK:
            st.warning(f"Served on {st.get_option('server.address') or 'every address'}: reachable from the network.")

    sets = {path.name: path for path in logic.list_eval_sets(config.data)}
    left, right = st.columns([1, 2])
    with left:
        st.selectbox("Eval set", list(sets), index=None, placeholder="none: type your own", key="eval_set",
                     on_change=use_eval_set_prompt, args=(sets,))
        chosen = sets.get(st.session_state.get("eval_set") or "")
        records = eval_records(str(chosen), chosen.stat().st_mtime) if chosen else []
        st.selectbox("Record", list(range(len(records))), index=None, key="record", placeholder="pick a question",
                     format_func=lambda i: f"{i + 1}. {records[i]['question']}", on_change=fill_from_record,
                     args=(records,), disabled=not records)
        st.text_input("Gold answers (optional, `a | b`)", key="golds")
    with right:
        st.text_input("Question", key="question", max_chars=config.max_input_chars)
        st.text_area("Passages: one per line, `Title | text`", key="passages", height=160,
                     max_chars=config.max_input_chars)
    clicked = st.button("Generate", type="primary", key="generate", disabled=not selected)

    golds = logic.parse_golds(st.session_state.get("golds", ""))
    if clicked:
        try:
            prompt = logic.build_prompt(st.session_state.prompt, st.session_state.get("question", ""),
                                        st.session_state.get("passages", ""), config.max_input_chars)
        except Exception as exc:  # DemoError, or a bad prompt template file
            st.error(str(exc))
            st.stop()
        boxes = []
        for column, label in zip(st.columns(len(selected)), selected, strict=True):
            with column:
                st.subheader(label)
                boxes.append(st.empty())
                boxes[-1].caption("waiting for its turn ...")
        answers = []
        for index, (box, label) in enumerate(zip(boxes, selected, strict=True)):  # one model at a time
            adapter = adapters[label].path if label in adapters else None
            stream = logic.throttle(lambda text, box=box: box.markdown(logic.escape_markdown(text)))
            answer = engine.generate(label, adapter, prompt, int(max_new), on_text=stream)
            with box.container():
                show_answer(answer, golds, index)
            answers.append(answer)
        st.session_state.results = {"answers": answers, "golds": golds, "prompt": prompt}
    elif results := st.session_state.get("results"):
        for index, (column, answer) in enumerate(zip(st.columns(len(results["answers"])), results["answers"],
                                                     strict=True)):
            with column:
                st.subheader(answer.label)
                show_answer(answer, results["golds"], index)
    if results := st.session_state.get("results"):
        st.table(summary_rows(results["answers"], results["golds"]), hide_index=True)
        with st.expander("Prompt, as the models see it (chat template applied)"):
            st.code(engine.tokenizer.decode(engine.encode(results["prompt"])), language=None, wrap_lines=True)


main()
