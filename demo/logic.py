"""Page logic of the inference demo, free of Streamlit: configuration, adapter discovery, prompts, eval records, scores.

The prompt is built exactly as for training and prediction: a bundled `qalign/prompts/*.txt` template filled by
`qalign.converters.prompts.render_prompt`; `demo/engine.py` then wraps it in the LLaMA-Factory chat template.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qalign.converters.prompts import available_prompts, load_prompt, render_prompt
from qalign.errors import QalignError
from qalign.evaluators.metrics import extract_answer, score_all
from qalign.overrides import read_recipe
from qalign.records import QARecord

BASE_LABEL = "base"
ENV_PREFIX = "QALIGN_DEMO_"
DEFAULT_NEW_TOKENS = 32
_PASSAGE_LINE = re.compile(r"^Passage \d+(?: \((?P<title>.*?)\))?: (?P<text>.*)$")
_TITLE_SEPARATOR = " | "
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")
_TRUE = ("1", "true", "yes", "on")


class DemoError(Exception):
    """A problem to show in the page (bad configuration or input), never a traceback."""


@dataclass(frozen=True)
class DemoConfig:
    """What `make demo` passes after `--` (or QALIGN_DEMO_* environment variables)."""

    model: str
    template: str
    outputs: Path
    data: Path
    prompt: str
    trust_remote_code: bool
    max_input_chars: int
    max_new_tokens: int
    threads: int


def default_threads() -> int:
    """CPU threads for generation: all cores but one, left to the web server and the browser.

    Measured on a 2-core machine with the browser on it: SmolLM2 answered 32 tokens in 2.4 s with one thread and
    in 12 to 38 s with two, which fought Chromium and the server for the cores.
    """
    return max(1, (os.cpu_count() or 2) - 1)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise DemoError(f"demo arguments: {message}\n{self.format_usage()}")


def _recipe_values(path: str) -> dict[str, Any]:
    """`model_name_or_path` and `template` of a LLaMA-Factory recipe (so the page uses the predict recipe's)."""
    try:
        return read_recipe(path)  # as `qalign predict` and LLaMA-Factory read it
    except QalignError as exc:
        raise DemoError(f"cannot read the recipe: {exc}") from None


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> DemoConfig:
    """Parse the page's arguments. Each falls back to QALIGN_DEMO_<NAME> in `environ`, then (model and template)
    to the `--recipe` YAML, then to the offline default (SmolLM2-135M-Instruct)."""
    env = os.environ if environ is None else environ

    def default(name: str, fallback: str | None = None) -> str | None:
        return env.get(ENV_PREFIX + name, fallback)

    parser = _Parser(prog="demo/app.py", description="qalign inference page (pass after `streamlit run ... --`)")
    parser.add_argument("--recipe", default=default("RECIPE"), help="LLaMA-Factory YAML giving model and template")
    parser.add_argument("--model", default=default("MODEL"), help="base model folder or hub id")
    parser.add_argument("--template", default=default("TEMPLATE"), help="LLaMA-Factory chat template")
    parser.add_argument("--outputs", default=default("OUTPUTS", "outputs"), help="folder searched for adapters")
    parser.add_argument("--data", default=default("DATA", "data"), help="folder of converted eval sets (*.json)")
    parser.add_argument("--prompt", default=default("PROMPT", "answer_only"), help="prompt name (qalign/prompts/)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        default=(default("TRUST_REMOTE_CODE") or "0").lower() in _TRUE,
                        help="run the model repository's own code (off by default)")
    parser.add_argument("--max-input-chars", type=int, default=default("MAX_INPUT_CHARS", "8000"),
                        help="longest prompt accepted, in characters")
    parser.add_argument("--max-new-tokens", type=int, default=default("MAX_NEW_TOKENS", "256"),
                        help="cap on the generation length the page offers")
    parser.add_argument("--threads", type=int, default=default("THREADS", str(default_threads())),
                        help="CPU threads for generation (default: all cores but one)")
    args = parser.parse_args(list(argv))
    if min(args.max_input_chars, args.max_new_tokens, args.threads) < 1:
        raise DemoError("demo arguments: --max-input-chars, --max-new-tokens and --threads must be positive")
    recipe = _recipe_values(args.recipe) if args.recipe else {}
    return DemoConfig(
        model=str(args.model or recipe.get("model_name_or_path") or "models/smollm2-135m-instruct"),
        template=str(args.template or recipe.get("template") or "smollm2"),
        outputs=Path(args.outputs),
        data=Path(args.data),
        prompt=args.prompt,
        trust_remote_code=args.trust_remote_code,
        max_input_chars=args.max_input_chars,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
    )


@dataclass(frozen=True)
class Adapter:
    """A trained adapter: `label` is its folder relative to the outputs root (e.g. `smollm2-135m/sft`)."""

    label: str
    path: Path
    base_model: str | None


def discover_adapters(root: Path) -> list[Adapter]:
    """Every folder under `root` (itself included) that holds an `adapter_config.json`, sorted by label."""
    if not root.is_dir():
        return []
    found = []
    for config_file in root.rglob("adapter_config.json"):
        folder = config_file.parent
        try:
            base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError):
            base = None  # loading it will report the problem in the page
        label = folder.relative_to(root).as_posix()
        found.append(Adapter(label=label if label != "." else folder.name, path=folder, base_model=base))
    return sorted(found, key=lambda adapter: adapter.label)


def base_mismatch(adapter: Adapter, model: str) -> bool:
    """True when the adapter says it was trained on another base model (compared by folder/repo name)."""
    if not adapter.base_model:
        return False
    return Path(adapter.base_model.rstrip("/")).name != Path(model.rstrip("/")).name


def parse_passages(text: str) -> list[dict[str, str]]:
    """One passage per non-empty line: `Title | text`, `| text` (no title), `Passage N (Title): text`, or text."""
    ctxs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _PASSAGE_LINE.match(line)
        if match:
            ctxs.append({"title": match.group("title") or "", "text": match.group("text")})
        elif line.startswith(_TITLE_SEPARATOR.lstrip()):  # `| text`: no title, text may hold ' | '
            ctxs.append({"title": "", "text": line[len(_TITLE_SEPARATOR.lstrip()):].strip()})
        elif _TITLE_SEPARATOR in line:
            title, body = line.split(_TITLE_SEPARATOR, 1)
            ctxs.append({"title": title.strip(), "text": body.strip()})
        else:
            ctxs.append({"title": "", "text": line})
    return ctxs


def passages_to_text(ctxs: Sequence[Mapping[str, Any]]) -> str:
    """The editable form of passages: `Title | text` lines (the inverse of `parse_passages`)."""
    lines = []
    for ctx in ctxs:
        title = " ".join(str(ctx.get("title") or "").split())
        text = " ".join(str(ctx.get("text") or "").split())
        if title or _TITLE_SEPARATOR in text:
            lines.append(f"{title}{_TITLE_SEPARATOR}{text}".lstrip())
        else:
            lines.append(text)
    return "\n".join(lines)


def passages_from_instruction(instruction: str) -> list[dict[str, str]]:
    """The passages of a rendered eval-set instruction (its `Passage N (Title): text` lines)."""
    return [
        {"title": match.group("title") or "", "text": match.group("text")}
        for line in instruction.splitlines()
        if (match := _PASSAGE_LINE.match(line.strip()))
    ]


def parse_golds(text: str) -> list[str]:
    """Gold answer aliases typed as `alias one | alias two`."""
    return [alias.strip() for alias in text.split("|") if alias.strip()]


def build_prompt(prompt_template: str, question: str, passages: str, max_chars: int) -> str:
    """The instruction the model sees, rendered as the converters render training data; checks the length cap."""
    question = question.strip()  # as the converters clean it
    if not question:
        raise DemoError("Type a question (or pick a record of an eval set).")
    ctxs = parse_passages(passages)
    record = QARecord(id="demo", question=question, answers=[], ctxs=ctxs)
    prompt = render_prompt(load_prompt(prompt_template), record, top_k=len(ctxs))
    if len(prompt) > max_chars:
        raise DemoError(
            f"The prompt is {len(prompt):,} characters; this page accepts at most {max_chars:,} "
            "(--max-input-chars). Shorten the passages or restart the page with a larger cap."
        )
    return prompt


def prompt_choices(default: str) -> list[str]:
    """Shipped prompt names, with `default` first (it may also be a path to a template file)."""
    names = available_prompts()
    return [default, *[name for name in names if name != default]]


def list_eval_sets(data_dir: Path) -> list[Path]:
    """Converted eval sets in `data_dir`: json lists whose records carry `question` and `answers`."""
    found = []
    for path in sorted(data_dir.glob("*.json")) if data_dir.is_dir() else []:
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and {"question", "answers"} <= rows[0].keys():
            found.append(path)
    return found


def load_eval_records(path: Path) -> list[dict[str, Any]]:
    """The records of one eval set, each reduced to question, editable passages and gold answers."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [
        {
            "id": str(row.get("id", index)),
            "question": str(row["question"]),
            "passages": passages_to_text(passages_from_instruction(str(row.get("instruction", "")))),
            "answers": [str(alias) for alias in row["answers"]],
        }
        for index, row in enumerate(rows)
    ]


def eval_set_prompt(path: Path) -> str | None:
    """The prompt an eval set was converted with, read from the `dataset_info.json` beside its `data/` folder."""
    registry = path.parent.parent / "dataset_info.json"
    try:
        entries = json.loads(registry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for entry in entries.values() if isinstance(entries, dict) else []:
        if isinstance(entry, dict) and Path(str(entry.get("file_name", ""))).name == path.name:
            prompt = (entry.get("qalign") or {}).get("prompt")
            return prompt if prompt in available_prompts() else None
    return None


def scores(answer: str, golds: Sequence[str]) -> dict[str, float] | None:
    """SubEM / EM / F1 of one answer (its extracted answer, as `qalign eval` scores it), or None without golds."""
    return score_all(answer, list(golds)) if golds else None


def scored_answer_line(text: str) -> str | None:
    """What the scores read when it is not the whole output: `scored answer: X`, or that there is none."""
    answer = extract_answer(text)
    if answer is None:
        return "no answer to score (an unclosed <think>, nothing after the answer marker, or empty)"
    return None if answer == text.strip() else f"scored answer: {answer}"


def escape_markdown(text: str) -> str:
    """Show model output literally in `st.markdown` (no emphasis, links or headings from the model)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def throttle(update: Callable[[str], None], interval: float = 0.1) -> Callable[[str], None]:
    """Call `update` at most once per `interval` seconds (page updates hold the GIL the generator needs)."""
    last = -interval

    def call(text: str) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= interval:
            last = now
            update(text)

    return call
