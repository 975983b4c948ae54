"""study.yaml: what a method-comparison study runs (model, data, methods, seeds, overrides), with CLI overrides.

Relative paths are read from the current folder (the repo root, where dataset_info.json lives); `recipes` and
`cot_teacher` also fall back to the repository holding qalign, so a study can be started from elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import qalign
from qalign.errors import QalignError, checked_number
from qalign.io import read_yaml_mapping
from qalign.overrides import apply_dotlist, deep_merge

METHODS = ("sft", "dpo", "orpo", "kto", "grpo", "cot")
RECIPE_FILE = {"sft": "sft.yaml", "cot": "sft.yaml", "dpo": "dpo.yaml", "orpo": "orpo.yaml", "kto": "kto.yaml",
               "grpo": "grpo.yaml", "predict": "predict.yaml"}
REPO_ROOT = Path(qalign.__file__).resolve().parents[1]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# methods that can continue the SFT adapter instead of starting from the base model (`from_sft`); for cot
# (teacher `self`) the SFT model of the seed is the teacher
FROM_SFT_METHODS = ("dpo", "orpo", "kto", "grpo", "cot")
SELF_TEACHER = "self"
_ENDPOINT_KEYS = ("url", "served_model", "api_key_env")
# Teacher = str (a teacher file), "self" (the study's model), or {url, served_model?, api_key_env?} (an endpoint)
Teacher = str | dict[str, str] | None
SPLITS = ("dev", "test", "validation")


@dataclass
class StudyFile:
    """The keys of a study file as written. The fields without a default are required; every other field's default
    is that key's default (build_config checks each value)."""

    name: Any
    model: Any
    template: Any
    recipes: Any
    train: Any
    test: Any
    top_k: Any = 5
    prompt: Any = "answer_only"
    methods: Any = field(default_factory=lambda: ["sft", "dpo", "orpo", "kto", "grpo"])
    seeds: Any = field(default_factory=lambda: [42])
    cot_teacher: Any = None
    cot_prompt: Any = "think_then_answer"
    cot_min_f1: Any = 0.9
    train_limit: Any = None
    test_limit: Any = None
    output: Any = None  # default: reports/NAME
    bootstrap: Any = field(default_factory=dict)  # Bootstrap's keys
    train_args: Any = field(default_factory=dict)
    predict_args: Any = field(default_factory=dict)
    mining_args: Any = field(default_factory=dict)
    overrides: Any = field(default_factory=dict)
    from_sft: Any = field(default_factory=list)
    teach_args: Any = field(default_factory=dict)
    test_split: Any = None  # default: from the test file's name
    val_limit: Any = None
    retrieve: Any = None


@dataclass
class Bootstrap:
    """The `bootstrap:` block of a study file, with its defaults."""

    samples: Any = 1000
    seed: Any = 0
    level: Any = 0.95


def _keys(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


_REQUIRED = tuple(f.name for f in fields(StudyFile) if f.default is MISSING and f.default_factory is MISSING)


@dataclass(kw_only=True)
class StudyConfig:
    """A resolved study: every key of study.yaml after defaults (StudyFile's) and command-line overrides."""

    name: str
    model: str
    template: str
    recipes: Path
    train: str
    test: str
    output: Path
    source: Path | None
    top_k: int
    prompt: str
    methods: list[str]
    seeds: list[int]
    cot_teacher: Teacher
    cot_prompt: str
    cot_min_f1: float
    train_limit: int | None
    test_limit: int | None
    bootstrap_samples: int
    bootstrap_seed: int
    level: float
    train_args: dict[str, Any]
    predict_args: dict[str, Any]
    mining_args: dict[str, Any]
    overrides: dict[str, dict[str, Any]]
    from_sft: list[str]
    teach_args: dict[str, Any]
    split: str  # what `test` is: dev, test or validation (the report says which)
    val_limit: int | None  # score on the val_limit train-file questions after the first train_limit
    raw: dict[str, Any]  # the study file's keys after defaults and overrides
    methods_exact: bool  # `methods` came from --methods (or methods=...): exactly the rows, no implied cot
    # the `retrieve:` block resolved (corpus, top_k, index, and the raw train/test it retrieves for); `train` and
    # `test` above are then the retrieved files under OUTPUT/retrieved/
    retrieve: dict[str, Any] | None

    def dataset(self, what: str) -> str:
        """Study-namespaced dataset name, e.g. `<name>_train`."""
        return f"{self.name}_{what}"

    def recipe(self, method: str) -> Path:
        return self.recipes / RECIPE_FILE[method]

    @property
    def row_methods(self) -> list[str]:
        """The table's methods: `methods` (sft first when others continue it), then cot: when asked for (trained
        only with a `cot_teacher`), or as a hint row when the methods came from the study file."""
        methods = [m for m in self.methods if m != "cot"]
        if self.from_sft:
            methods.sort(key=lambda m: m != "sft")
        return methods + (["cot"] if "cot" in self.methods or not self.methods_exact else [])

    @property
    def runs_cot(self) -> bool:
        """The CoT row (teacher, CoT data, base_model_cot, cot-s*) is planned: cot is a method and has a teacher."""
        return "cot" in self.methods and bool(self.cot_teacher)

    def label(self, method: str) -> str:
        """The method's name in the report: `dpo (from sft)` when it continues the SFT adapter."""
        if method == "cot" and method in self.from_sft:
            return "cot (sft teacher)"
        return f"{method} (from sft)" if method in self.from_sft else method

    @property
    def teacher_kind(self) -> str | None:
        """None, `file`, `self` or `endpoint`."""
        if not self.cot_teacher:
            return None
        if isinstance(self.cot_teacher, dict):
            return "endpoint"
        return "self" if self.cot_teacher == SELF_TEACHER else "file"


def _resolve(path: str) -> Path:
    candidate = Path(path)
    if candidate.exists() or candidate.is_absolute():
        return candidate
    in_repo = REPO_ROOT / candidate
    return in_repo if in_repo.exists() else candidate


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise QalignError(f"{where}: `{key}` must be a mapping, e.g. {key}: {{max_steps: 20}}.")
    return dict(value)


def _int_list(value: Any, key: str, where: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise QalignError(f"{where}: `{key}` must be a list of integers, got {value!r}.") from None
    if not out:
        raise QalignError(f"{where}: `{key}` is empty; give at least one, e.g. {key}: [42].")
    return out


def _number(value: Any, key: str, where: str, kind: type, low: float | None = None, high: float | None = None,
            *, optional: bool = False, open_range: bool = False) -> Any:
    """qalign's number check (qalign.errors.checked_number) as a study file error at `where`."""
    try:
        return checked_number(value, key, kind, low, high, low_open=open_range, high_open=open_range,
                              optional=optional)
    except ValueError as exc:
        raise QalignError(f"{where}: {exc}") from None


def _from_sft(value: Any, methods: list[str], where: str) -> list[str]:
    """`from_sft`: the preference methods that mine from and continue the SFT run of the same seed."""
    chosen = [str(m).lower() for m in (value if isinstance(value, list) else [value] if value else [])]
    bad = [m for m in chosen if m not in FROM_SFT_METHODS]
    if bad:
        raise QalignError(f"{where}: from_sft: {', '.join(bad)} cannot start from SFT; choose from "
                          f"{', '.join(FROM_SFT_METHODS)}, e.g. from_sft: [dpo, orpo, kto].")
    if chosen and "sft" not in methods:
        raise QalignError(f"{where}: from_sft: {', '.join(chosen)} continue the SFT run, but sft is not in methods; "
                          "add it, e.g. methods: [sft, dpo].")
    return [m for m in dict.fromkeys(chosen) if m in methods or m == "cot"]


def _teacher(value: Any, where: str) -> Teacher:
    """`cot_teacher`: null, a teacher file, `self`, or an endpoint mapping {url, served_model, api_key_env}."""
    if value in (None, ""):
        return None
    if isinstance(value, dict):
        stray = sorted(set(value) - set(_ENDPOINT_KEYS))
        url = str(value.get("url") or "")
        if stray or not url.startswith(("http://", "https://")):
            raise QalignError(f"{where}: cot_teacher: an endpoint is a mapping {{url: http(s)://HOST/v1, served_model: "
                              f"NAME, api_key_env: VAR}} (got {value!r}); the key itself stays in that variable.")
        return {k: str(v) for k, v in value.items() if v not in (None, "")}
    text = str(value)
    if text == SELF_TEACHER:
        return SELF_TEACHER
    if text.startswith(("http://", "https://")):
        raise QalignError(f"{where}: cot_teacher: write an endpoint as a mapping, e.g. cot_teacher: {{url: {text}, "
                          "served_model: NAME}}.")
    return str(_resolve(text))


def _split(value: Any, test: str, where: str) -> str:
    """`test_split`, or from the test file's name: `dev` in it -> dev, else test."""
    if value is None:
        name = Path(test).name.lower()
        return "dev" if "dev" in name else "validation" if "val" in name else "test"
    if str(value) not in SPLITS:
        raise QalignError(f"{where}: test_split must be one of {', '.join(SPLITS)}, got {value!r}.")
    return str(value)


_RETRIEVE_KEYS = ("corpus", "top_k", "index", "title_weight")


def _retrieve(value: Any, train: str, test: str, output: Path, top_k: int, where: str) -> dict[str, Any] | None:
    """`retrieve: {corpus, top_k, index, title_weight}`: BM25 passages for train and test from the user's corpus."""
    if value in (None, {}):
        return None
    block = _mapping(value, "retrieve", where)
    stray = sorted(set(block) - set(_RETRIEVE_KEYS))
    if stray or not block.get("corpus"):
        raise QalignError(f"{where}: retrieve: needs `corpus` (known keys: {', '.join(_RETRIEVE_KEYS)}), got "
                          f"{block!r}; e.g. retrieve: {{corpus: my-passages.jsonl, top_k: 20}}.")
    k = _number(block.get("top_k", max(top_k, 20)), "retrieve.top_k", where, int, 1)
    if k < top_k:
        raise QalignError(f"{where}: retrieve.top_k {k} is below top_k {top_k} (the passages a prompt shows).")
    corpus = str(_resolve(str(block["corpus"])))
    folder = output / "retrieved"
    index = str(block.get("index") or f"indexes/{Path(corpus).name}.bm25")  # as `qalign retrieve` defaults it
    return {"corpus": corpus, "top_k": k, "index": index,
            "title_weight": _number(block.get("title_weight", 1), "retrieve.title_weight", where, int, 0),
            "train": train, "test": test, "train_output": str(folder / "train.jsonl"),
            "test_output": str(folder / "test.jsonl")}


def merge_overrides(base: Any, path: str | Path) -> dict[str, Any]:
    """`base` overrides with the `overrides` of file `path` on top, method by method and key by key."""
    extra = read_yaml_mapping(path, "overrides file", "reports/nq-top5-sweep/best.yaml", ("overrides",))
    if "overrides" not in extra:
        raise QalignError(f"{path}:1: an overrides file holds `overrides: {{METHOD: {{key: value}}}}`, as the "
                          "best.yaml of `qalign sweep` does.")
    where = f"{path}: overrides"
    merged = dict(_mapping(base, "overrides", "study file"))
    for method, keys in _mapping(extra["overrides"], "overrides", str(path)).items():
        merged[method] = deep_merge(_mapping(merged.get(method), f"overrides.{method}", "study file"),
                                    _mapping(keys, method, where))
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a study file into a mapping, with `file:line` errors."""
    return read_yaml_mapping(path, "study file", "recipes/smollm2-135m/study.yaml", _REQUIRED)


def build_config(spec: dict[str, Any], source: Path | None = None, *, exact_methods: bool = False) -> StudyConfig:
    """Validate a study mapping (defaults filled in) and resolve it into a `StudyConfig`. A study file that names a
    `cot_teacher` asks for the cot row; with `exact_methods` (--methods) `methods` is the whole list."""
    where = str(source or "study")
    known = _keys(StudyFile)
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise QalignError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join((*_REQUIRED, *(k for k in known if k not in _REQUIRED)))}.")
    missing = [key for key in _REQUIRED if spec.get(key) in (None, "")]
    if missing:
        raise QalignError(f"{where}: missing key(s) {', '.join(missing)}; see recipes/smollm2-135m/study.yaml.")
    given = StudyFile(**spec)
    merged = {**{k: getattr(given, k) for k in known if k not in _REQUIRED}, **spec}  # defaults first, as written
    name = str(merged["name"])
    if not _NAME.match(name):
        raise QalignError(f"{where}: name {name!r} must use letters, digits, '.', '_' or '-' (it prefixes datasets).")
    methods = merged["methods"] if isinstance(merged["methods"], list) else [merged["methods"]]
    methods = [str(m).lower() for m in methods]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise QalignError(f"{where}: unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}.")
    overrides = _mapping(merged["overrides"], "overrides", where)
    for method, value in overrides.items():
        if method not in (*METHODS, "base"):
            raise QalignError(f"{where}: overrides.{method}: not a method; use one of {', '.join(METHODS)}, base.")
        overrides[method] = _mapping(value, f"overrides.{method}", where)
    block = _mapping(merged["bootstrap"], "bootstrap", where)
    stray = sorted(set(block) - set(_keys(Bootstrap)))
    if stray:
        raise QalignError(f"{where}: bootstrap: unknown key(s) {', '.join(stray)}; known: "
                          f"{', '.join(_keys(Bootstrap))}.")
    boot = Bootstrap(**block)
    teacher = _teacher(merged["cot_teacher"], where)
    if teacher and not exact_methods and "cot" not in methods:
        methods.append("cot")
    from_sft = _from_sft(merged["from_sft"], methods, where)
    if "cot" in from_sft and teacher != SELF_TEACHER:
        raise QalignError(f"{where}: from_sft: cot makes each seed's SFT model the teacher; that needs "
                          "cot_teacher: self.")
    val_limit = _number(merged["val_limit"], "val_limit", where, int, 1, optional=True)
    if val_limit and not merged["train_limit"]:
        raise QalignError(f"{where}: val_limit needs train_limit: the validation slice is the val_limit questions of "
                          "the train file after the first train_limit (the ones trained on); e.g. train_limit: 1024.")
    output, top_k = Path(merged["output"] or f"reports/{name}"), _number(merged["top_k"], "top_k", where, int, 0)
    retrieve = _retrieve(merged["retrieve"], str(merged["train"]), str(merged["test"]), output, top_k, where)
    return StudyConfig(
        name=name, model=str(merged["model"]), template=str(merged["template"]),
        recipes=_resolve(str(merged["recipes"])), train=retrieve["train_output"] if retrieve else str(merged["train"]),
        test=retrieve["test_output"] if retrieve else str(merged["test"]), output=output, source=source,
        top_k=top_k, prompt=str(merged["prompt"]), retrieve=retrieve,
        methods=list(dict.fromkeys(methods)),
        seeds=list(dict.fromkeys(_int_list(merged["seeds"], "seeds", where))),
        cot_teacher=teacher,
        cot_prompt=str(merged["cot_prompt"]),
        cot_min_f1=_number(merged["cot_min_f1"], "cot_min_f1", where, float, 0, 1),
        train_limit=_number(merged["train_limit"], "train_limit", where, int, 1, optional=True),
        test_limit=_number(merged["test_limit"], "test_limit", where, int, 1, optional=True),
        bootstrap_samples=_number(boot.samples, "bootstrap.samples", where, int, 1),
        bootstrap_seed=_number(boot.seed, "bootstrap.seed", where, int, 0),
        level=_number(boot.level, "bootstrap.level", where, float, 0, 1, open_range=True),
        train_args=_mapping(merged["train_args"], "train_args", where),
        predict_args=_mapping(merged["predict_args"], "predict_args", where),
        mining_args=_mapping(merged["mining_args"], "mining_args", where), overrides=overrides,
        from_sft=from_sft, teach_args=_mapping(merged["teach_args"], "teach_args", where), val_limit=val_limit,
        raw=merged, split="validation" if val_limit else _split(merged["test_split"], str(merged["test"]), where),
        methods_exact=exact_methods,
    )


def load_study(
    path: str | Path,
    assignments: list[str] | None = None,
    *,
    seeds: list[int] | None = None,
    methods: list[str] | None = None,
    output: str | None = None,
    cot_teacher: Teacher = None,
    overrides_file: str | Path | None = None,
) -> StudyConfig:
    """Read study.yaml, merge an overrides file's `overrides` (a sweep's best.yaml) over it, apply `key=value`
    assignments, then the command-line flags (which win)."""
    spec = read_yaml(path)
    if overrides_file:
        spec["overrides"] = merge_overrides(spec.get("overrides"), overrides_file)
    spec = apply_dotlist(spec, assignments or [])
    for key, value in (("seeds", seeds), ("methods", methods), ("output", output), ("cot_teacher", cot_teacher)):
        if value:
            spec[key] = value
    # a subset given on the command line is the whole list of rows, cot included
    exact = bool(methods) or any(a.partition("=")[0].strip() == "methods" for a in assignments or [])
    return build_config(spec, Path(path), exact_methods=exact)
