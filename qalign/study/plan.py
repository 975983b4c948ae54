"""The study as a list of named steps: convert the data, mine preference/KTO data, train, predict, evaluate.

Each step is one `qalign ...` command with a done-marker (the file it writes) and the steps it needs; a data step
is done only when its registry entry describes that file exactly (so a kill between writing and registering it
reruns the step). Runs live in OUTPUT/runs/<run>/{train,predict,eval}; <run> is `base` or `<method>-s<seed>`.
A train or predict step runs `qalign train|predict OUTPUT/runs/<run>/{train,predict}/recipe.yaml`: the model's
recipe with the study's keys merged on top (`RecipeFile`), written when the step runs and kept beside its outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qalign.overrides import override_args, override_value, read_recipe
from qalign.paths import dataset_file, jsonl_file
from qalign.study.config import StudyConfig

# Only these keys of `mining_args` reach `qalign convert preference|kto`, as --dashed-options.
_MINING_KEYS = ("num_samples", "temperature", "top_p", "max_new_tokens", "batch_size", "batch_tokens", "seed",
                "device", "strategy", "threshold", "margin")
# ... and these keys of `teach_args` reach `qalign teach` (teacher `self` or an endpoint)
TEACH_KEYS = ("num_samples", "temperature", "top_p", "max_new_tokens", "answer_tokens", "prefix", "seed",
              "batch_size", "batch_tokens", "device", "timeout", "retries", "concurrency")


RECIPE_NAME = "recipe.yaml"  # a train/predict step's merged recipe, in its output folder


@dataclass(frozen=True)
class RecipeFile:
    """A train/predict step's recipe: `source` (the model's recipe) with `keys` (the study's, later layers already
    merged in) on top, written to `path`, as LLaMA-Factory keeps training_args.yaml beside the run."""

    path: Path
    source: Path
    keys: dict[str, Any]

    def content(self) -> dict[str, Any]:
        """The merged recipe (qalign.overrides.read_recipe: the file, then the keys)."""
        return read_recipe(self.source, layers=[self.keys])

    def write(self) -> None:
        """Write the merged recipe atomically, unless the file already holds exactly that."""
        import yaml

        from qalign.io import atomic_write_text

        text = (f"# {self.source} with the study's keys on top (written by `qalign study` for this step)\n"
                + yaml.safe_dump(self.content(), sort_keys=False, allow_unicode=True))
        try:
            if self.path.read_text(encoding="utf-8") == text:
                return
        except OSError:
            pass
        atomic_write_text(self.path, text)

    def record(self) -> dict[str, Any]:
        """What the step record keeps of it: a changed source or key runs the step again, as a changed argv does."""
        return {"from": str(self.source), "keys": self.keys}

    def legacy_argv(self, command: str) -> list[str]:
        """The argv such a step had before recipe files (recipe + key=value): its old records still count as done."""
        return [command, str(self.source), *override_args(self.keys)]


@dataclass
class Step:
    """One command of the study: `qalign ARGV`, done when `done` exists (and `verify` holds); `check` says why it
    cannot run; `recipe`, for a train/predict step, is the recipe file ARGV names, written before it runs."""

    name: str
    argv: list[str]
    done: Path
    needs: tuple[str, ...] = ()
    run: str | None = None  # the table row (run id) this step produces
    check: Callable[[], str | None] = field(default=lambda: None, repr=False)
    verify: Callable[[], bool] | None = field(default=None, repr=False)  # more than `done` existing
    recipe: RecipeFile | None = None

    def is_done(self) -> bool:
        """The done-marker exists and, for a data step, the registry entry describes it exactly."""
        return self.done.exists() and (self.verify is None or self.verify())

    def peak_argv(self) -> list[str]:
        """The argv the GPU budget keys peaks by: a train step by its model recipe (sft, dpo, ...), not recipe.yaml."""
        return [self.argv[0], str(self.recipe.source)] if self.recipe else self.argv


def recipe_step(name: str, command: str, source: Path, folder: Path, keys: dict[str, Any], done: Path,
                needs: tuple[str, ...], run: str, check: Callable[[], str | None]) -> Step:
    """`qalign COMMAND FOLDER/recipe.yaml`, the recipe being `source` with `keys` on top."""
    recipe = RecipeFile(folder / RECIPE_NAME, source, keys)
    return Step(name, [command, str(recipe.path)], done, needs, run, check, recipe=recipe)


BASE_COT = "base_cot"  # the run id of the base model with the CoT prompt


def run_id(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def run_dir(cfg: StudyConfig, run: str) -> Path:
    return cfg.output / "runs" / run


def _file_check(path: Path, what: str) -> Callable[[], str | None]:
    return lambda: None if path.is_file() else f"{path} not found ({what})"


def _converter_check(fmt: str) -> Callable[[], str | None]:
    def check() -> str | None:
        from qalign.converters.job import FORMAT_KINDS

        if fmt not in FORMAT_KINDS:
            return f"`qalign convert {fmt}` is not available in this qalign"
        return None

    return check


def _all(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    return lambda: next((msg for msg in (check() for check in checks) if msg), None)


def _convert(cfg: StudyConfig, fmt: str, source: str, what: str, limit: int | None, extra: list[str],
             prompt: list[str]) -> Step:
    """`qalign convert FMT` into the study-namespaced dataset `<name>_<what>`."""
    from qalign.converters.job import FORMAT_KINDS
    from qalign.converters.registry import describes_file

    name = cfg.dataset(what)
    argv = ["convert", fmt, "--input", source, "--dataset", name, "--top-k", str(cfg.top_k),
            *prompt, *(["--limit", str(limit)] if limit else []), *extra]
    return Step(f"data {what}", argv, dataset_file(name), check=_converter_check(fmt),
                verify=lambda: describes_file(".", name, FORMAT_KINDS.get(fmt)))


def _used_by(cfg: StudyConfig, step: Step, *users: str) -> Step:
    """Skip building a training set when no method that trains on it has a recipe (mining is costly)."""
    recipes = [cfg.recipe(m) for m in users if m in cfg.methods or m == "cot"]
    missing = f"no recipe uses it ({', '.join(map(str, recipes))} not found)"
    step.check = _all(step.check, lambda: None if any(r.is_file() for r in recipes) else missing)
    return step


def mining_options(mining_args: dict[str, Any]) -> list[str]:
    """The `mining_args` that `qalign convert preference|kto` takes, as --dashed-options."""
    return [arg for key in _MINING_KEYS if key in mining_args
            for arg in (f"--{key.replace('_', '-')}", override_value(mining_args[key]))]


def train_overrides(cfg: StudyConfig, method: str) -> dict[str, Any]:
    """overrides.METHOD's training keys (its `predict:` block is for the predictions)."""
    return {k: v for k, v in cfg.overrides.get(method, {}).items() if k != "predict"}


def predict_overrides(cfg: StudyConfig, method: str) -> dict[str, Any]:
    """overrides.METHOD.predict: the keys of that method's prediction runs."""
    return cfg.overrides.get(method, {}).get("predict") or {}


def _mined_steps(cfg: StudyConfig, methods: set[str], suffix: str, adapter: Path | None) -> list[Step]:
    """DPO/ORPO pairs and KTO labels from the model's own samples (drawn once, shared by both through one cache);
    with `adapter`, sampled from the model + that LoRA adapter. Datasets `<name>_pref<suffix>`, `<name>_kto<suffix>`."""
    mining = ["--model", cfg.model, "--template", cfg.template,
              "--samples", str(jsonl_file(f"{cfg.name}_samples{suffix}"))]  # one cache shared by pref and kto
    if adapter is not None:
        mining += ["--adapter", str(adapter)]
    mining += mining_options(cfg.mining_args)
    prompt, steps = ["--prompt", cfg.prompt], []
    if methods & {"dpo", "orpo"}:
        pref = _convert(cfg, "preference", cfg.train, f"pref{suffix}", cfg.train_limit, mining, prompt)
        steps.append(_used_by(cfg, pref, *sorted(methods & {"dpo", "orpo"})))
    if "kto" in methods:
        kto = _used_by(cfg, _convert(cfg, "kto", cfg.train, f"kto{suffix}", cfg.train_limit, mining, prompt), "kto")
        kto.needs = tuple(step.name for step in steps)  # after the pairs: it reads the samples they drew
        steps.append(kto)
    return steps


def _scored(cfg: StudyConfig, cot: bool = False) -> tuple[str, str, int | None, list[str]]:
    """(source, dataset, limit, extra options) of the set every run is scored on: the test file (`test`), or with
    `val_limit` the validation slice `val` (the train-file questions after the first train_limit, never trained on)."""
    what = ("val" if cfg.val_limit else "test") + ("_cot" if cot else "")
    if cfg.val_limit:
        return cfg.train, what, cfg.val_limit, ["--offset", str(cfg.train_limit)]
    return cfg.test, what, cfg.test_limit, []


def _retrieved(cfg: StudyConfig, steps: list[Step]) -> list[Step]:
    """With a `retrieve:` block: `retrieve train` and `retrieve test` (BM25 from the corpus) first, and every step
    reading a retrieved file waits for them. Test retrieval follows train's: the first builds the index."""
    spec = cfg.retrieve
    if not spec:
        return steps
    found = []
    for what in ("train",) if cfg.val_limit else ("train", "test"):  # val_limit: scored on the train file
        argv = ["retrieve", "--corpus", spec["corpus"], "--input", spec[what], "--output", spec[f"{what}_output"],
                "--top-k", str(spec["top_k"]), "--index", spec["index"], "--title-weight", str(spec["title_weight"])]
        found.append(Step(f"retrieve {what}", argv, Path(spec[f"{what}_output"]), tuple(s.name for s in found)))
    outputs = {spec["train_output"]: "retrieve train", spec["test_output"]: "retrieve test"}
    for step in steps:
        step.needs = (*step.needs, *(name for path, name in outputs.items() if path in step.argv))
    return found + steps


def _data_steps(cfg: StudyConfig) -> list[Step]:
    prompt = ["--prompt", cfg.prompt]
    methods = set(cfg.methods)
    steps = [_convert(cfg, "eval", *_scored(cfg), prompt)]
    if "sft" in methods:
        steps.append(_used_by(cfg, _convert(cfg, "alpaca", cfg.train, "train", cfg.train_limit, [], prompt), "sft"))
    if "grpo" in methods:
        steps.append(_used_by(cfg, _convert(cfg, "grpo", cfg.train, "grpo", cfg.train_limit, [], prompt), "grpo"))
    steps += _mined_steps(cfg, methods - set(cfg.from_sft), "", None)  # from the base model
    if cfg.runs_cot:
        if "cot" not in cfg.from_sft:
            steps += cot_steps(cfg, "", None)
        if cfg.cot_prompt != cfg.prompt:  # the CoT model is tested with the prompt it was trained on
            steps.append(_convert(cfg, "eval", *_scored(cfg, cot=True), ["--prompt", cfg.cot_prompt]))
    return steps


def teacher_file(cfg: StudyConfig, suffix: str) -> Path:
    """The teacher file: cot_teacher itself, or the one `qalign teach` writes for teacher self / an endpoint."""
    if cfg.teacher_kind == "file":
        return Path(str(cfg.cot_teacher))
    return jsonl_file(f"{cfg.name}_teacher{suffix}")


def _teach_step(cfg: StudyConfig, suffix: str, adapter: Path | None) -> Step:
    """`qalign teach` from the study's model (+ the seed's SFT adapter) or from the endpoint."""
    from qalign.paths import summary_path

    output = teacher_file(cfg, suffix)
    argv = ["teach", "--input", cfg.train, "--output", str(output), "--prompt", cfg.cot_prompt, "--top-k",
            str(cfg.top_k), "--min-f1", str(cfg.cot_min_f1), *(["--limit", str(cfg.train_limit)] if cfg.train_limit
                                                                else [])]
    if isinstance(cfg.cot_teacher, dict):
        argv += ["--url", cfg.cot_teacher["url"]]
        for key in ("served_model", "api_key_env"):
            if key in cfg.cot_teacher:
                argv += [f"--{key.replace('_', '-')}", cfg.cot_teacher[key]]
    else:
        argv += ["--model", cfg.model, "--template", cfg.template, *(["--adapter", str(adapter)] if adapter else [])]
    for key in TEACH_KEYS:
        if key in cfg.teach_args:
            argv += [f"--{key.replace('_', '-')}", override_value(cfg.teach_args[key])]
    return Step(f"teach{suffix}", argv, summary_path(output))


def cot_steps(cfg: StudyConfig, suffix: str, adapter: Path | None) -> list[Step]:
    """The CoT-SFT data `<name>_cot<suffix>`: the teacher file (asked for when the teacher is self or an endpoint),
    filtered at F1 >= cot_min_f1."""
    teacher = teacher_file(cfg, suffix)
    steps = [] if cfg.teacher_kind == "file" else [_teach_step(cfg, suffix, adapter)]
    cot = _convert(cfg, "cot", cfg.train, f"cot{suffix}", cfg.train_limit,
                   ["--teacher", str(teacher), "--min-f1", str(cfg.cot_min_f1)], ["--prompt", cfg.cot_prompt])
    if steps:
        cot.needs = (steps[0].name,)
    else:
        cot.check = _all(_file_check(teacher, "cot_teacher"), cot.check)
    return [*steps, _used_by(cfg, cot, "cot")]


_MINED = {"dpo", "orpo", "kto"}  # trained on data mined from the model's own samples
_TRAIN_DATA = {"sft": "train", "cot": "cot", "dpo": "pref", "orpo": "pref", "kto": "kto", "grpo": "grpo"}


def scored_set(cfg: StudyConfig, method: str) -> str:
    """The dataset (`test`, `val`, or their `_cot` twin) that `method`'s runs are scored on."""
    return _scored(cfg, cot=method == "cot" and cfg.cot_prompt != cfg.prompt)[1]


def _predict_eval(cfg: StudyConfig, run: str, method: str, adapter: Path | None, needs: tuple[str, ...]) -> list[Step]:
    folder = run_dir(cfg, run)
    test = scored_set(cfg, method)
    predict_over = predict_overrides(cfg, method)
    base_args = {"model_name_or_path": cfg.model, "template": cfg.template, "eval_dataset": cfg.dataset(test),
                 "output_dir": str(folder / "predict")}
    if adapter is not None:
        base_args["adapter_name_or_path"] = str(adapter)
    predictions = folder / "predict" / "generated_predictions.jsonl"
    recipe = cfg.recipe("predict")
    return [
        recipe_step(f"predict {run}", "predict", recipe, folder / "predict",
                    {**base_args, **cfg.predict_args, **predict_over}, predictions, (*needs, f"data {test}"), run,
                    _file_check(recipe, "the predict recipe")),
        Step(f"eval {run}", ["eval", "--predictions", str(predictions), "--gold",
                             str(dataset_file(cfg.dataset(test))), "--output", str(folder / "eval")],
             folder / "eval" / "summary.json", (f"predict {run}",), run),
    ]


def _method_steps(cfg: StudyConfig, steps: list[Step], method: str, seed: int, run: str,
                  grid: dict[str, Any] | None = None) -> None:
    """Append `run`'s train/predict/eval steps (and the mined data of its seed's SFT run when it continues it);
    `grid` (a sweep point's recipe keys) comes after the method's overrides, so it wins."""
    sft_run = run_id("sft", seed)
    sft_adapter = run_dir(cfg, sft_run) / "train"
    train_dir = run_dir(cfg, run) / "train"
    recipe = cfg.recipe(method)
    overrides = train_overrides(cfg, method) | (grid or {})
    mined = method in cfg.from_sft and method in _MINED  # GRPO's prompts do not depend on the SFT model
    taught = method == "cot" and method in cfg.from_sft  # the seed's SFT model teaches; CoT-SFT starts from base
    data = _TRAIN_DATA[method] + (f"_{sft_run}" if mined or taught else "")
    base_args = {"model_name_or_path": cfg.model, "template": cfg.template, "dataset": cfg.dataset(data),
                 "output_dir": str(train_dir), "seed": seed}
    needs: tuple[str, ...] = ()
    if mined and f"data {data}" not in {step.name for step in steps}:
        mined_steps = _mined_steps(cfg, set(cfg.from_sft) & _MINED, f"_{sft_run}", sft_adapter)
        steps += [replace(step, needs=(*step.needs, f"train {sft_run}")) for step in mined_steps]
    if taught:
        steps += [replace(step, needs=step.needs or (f"train {sft_run}",))
                  for step in cot_steps(cfg, f"_{sft_run}", sft_adapter)]
        needs = (f"train {sft_run}",)
    elif method in cfg.from_sft:
        # continue the SFT adapter; DPO/KTO's reference is base + that adapter (ORPO has none; GRPO's,
        # when beta > 0, is the adapter-disabled base)
        base_args["adapter_name_or_path"] = str(sft_adapter)
        if mined:
            base_args |= {"ref_model": cfg.model, "ref_model_adapters": str(sft_adapter)}
        needs = (f"train {sft_run}",)
    train = recipe_step(f"train {run}", "train", recipe, train_dir, {**base_args, **cfg.train_args, **overrides},
                        train_dir / "train_results.json", (f"data {data}", *needs), run,
                        _file_check(recipe, f"no {method.upper()} recipe for this model"))
    steps.append(train)
    steps += _predict_eval(cfg, run, method, train_dir, (train.name,))


def build_plan(cfg: StudyConfig) -> list[Step]:
    """Every step of the study in run order: data, base predictions, then per seed and method train/predict/eval
    (methods in `from_sft`: after SFT, their data mined from the SFT model, training continuing its adapter)."""
    steps = _retrieved(cfg, _data_steps(cfg))
    steps += _predict_eval(cfg, "base", "base", None, ())
    if cfg.runs_cot:  # the seed's base_model_cot: the base model allowed to reason (think prompt, no training)
        steps += _predict_eval(cfg, BASE_COT, "cot", None, ())
    for seed in cfg.seeds:
        for method in cfg.row_methods:
            if method != "cot" or cfg.runs_cot:
                _method_steps(cfg, steps, method, seed, run_id(method, seed))
    return steps


def build_sweep_plan(cfg: StudyConfig, points: list[tuple[str, str, dict[str, Any]]]) -> list[Step]:
    """A sweep: the study's data and base steps, then per seed every grid point (method, setting name, recipe
    keys) as run `<method>-<setting>-s<seed>`; methods that continue SFT get the default SFT run of their seed."""
    steps = _retrieved(cfg, _data_steps(cfg))
    steps += _predict_eval(cfg, "base", "base", None, ())
    for seed in cfg.seeds:
        if any(method in cfg.from_sft for method, _, _ in points):
            _method_steps(cfg, steps, "sft", seed, run_id("sft", seed))
        for method, setting, grid in points:
            _method_steps(cfg, steps, method, seed, run_id(f"{method}-{setting}", seed), grid)
    return steps


def step_dependencies(steps: list[Step]) -> dict[str, Step]:
    """Steps by name; a need that no step provides (e.g. `data pref` when dpo is not requested) is an error."""
    by_name = {step.name: step for step in steps}
    for step in steps:
        for need in step.needs:
            if need not in by_name:
                raise ValueError(f"step {step.name!r} needs {need!r}, which is not in the plan")
    return by_name
