"""Recipes and `key=value` overrides: the one recipe reader (YAML/JSON + mappings + overrides, as LLaMA-Factory
merges them), writing overrides for LLaMA-Factory, and applying dotted ones to a nested mapping (OmegaConf)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from qalign.errors import QalignError


def override_value(value: Any) -> str:
    """One value as LLaMA-Factory reads it from `key=value` (YAML): true/false, null, JSON lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def override_args(*layers: dict[str, Any]) -> list[str]:
    """Merge mappings (later wins) into `key=value` overrides for `qalign train`, each key once."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return [f"{key}={override_value(value)}" for key, value in merged.items()]


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, mappings merged key by key at every depth (study files, sweeps, overrides files)."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = deep_merge(out[key], value) if both else value
    return out


def _load(path: Path) -> Any:
    """The recipe file as OmegaConf loads it (LLaMA-Factory's read_args: OmegaConf.load, or json for .json)."""
    from omegaconf import OmegaConf

    try:
        if path.suffix == ".json":
            return OmegaConf.create(json.loads(path.read_text(encoding="utf-8")))
        return OmegaConf.load(path)
    except Exception as exc:  # omegaconf/yaml/json each raise their own types; all mean "does not parse"
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(exc, "lineno", 1)
        raise QalignError(f"{path}:{line}: the recipe does not parse ({str(exc).splitlines()[0]}). Fix that "
                          "line (recipes are YAML mappings of key: value).") from None


def _parsed_overrides(overrides: list[str]) -> Any:
    from omegaconf import OmegaConf

    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise QalignError(f"override {item!r}: expected key=value (e.g. max_steps=20).")
        try:
            OmegaConf.from_cli([item])
        except Exception as exc:
            raise QalignError(f"override {item!r}: the value does not parse ({str(exc).splitlines()[0]}). Quote it "
                              f"for a string (e.g. '{key}=\"...\"'), or fix the brackets of a list.") from None
    return OmegaConf.from_cli(overrides)


def read_recipe(recipe: str | os.PathLike, overrides: Iterable[str] = (),
                layers: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A recipe as LLaMA-Factory reads it: the file (YAML, or JSON), then `layers` (mappings, later wins: a study's
    keys), then `key=value` overrides, merged by OmegaConf. Errors name `file:line` or the override, and the fix."""
    from omegaconf import OmegaConf

    path = Path(recipe)
    if not path.is_file():
        raise QalignError(f"{path}: recipe not found. Pass a recipe file such as recipes/smollm2-135m/sft.yaml or "
                          "recipes/smollm2-135m/predict.yaml.")
    base, parsed = _load(path), _parsed_overrides(list(overrides))
    merged = OmegaConf.to_container(OmegaConf.merge(base, *(OmegaConf.create(dict(layer)) for layer in layers),
                                                    parsed))
    if not isinstance(merged, dict):
        raise QalignError(f"{path}:1: a recipe is a mapping of LLaMA-Factory key: value, got {type(merged).__name__}.")
    return merged


def _check_path(spec: dict[str, Any], key: str, assignment: str) -> None:
    node: Any = spec
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return  # missing levels are created
        if not isinstance(node, dict):
            raise QalignError(f"override {assignment!r}: `{part}` is not a mapping.")


def apply_dotlist(spec: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """`spec` with each `a.b.c=VALUE` applied in order (VALUE parsed as OmegaConf parses a dotlist: YAML).

    An assignment replaces the value at its key (a mapping value is not merged into the old one); missing
    levels are created; a level that holds a non-mapping is an error.
    """
    from omegaconf import OmegaConf

    config = OmegaConf.create(spec)
    for assignment in assignments:
        key, sep, _ = assignment.partition("=")
        if not sep or not key:
            raise QalignError(f"override {assignment!r}: expected KEY=VALUE, e.g. overrides.sft.max_steps=10.")
        _check_path(OmegaConf.to_container(config, resolve=False), key, assignment)
        try:
            value = OmegaConf.select(OmegaConf.from_dotlist([assignment]), key)
        except Exception as exc:  # OmegaConf hands the text to YAML: a yaml.YAMLError (or its own error)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise QalignError(f"override {assignment!r}: the value is not valid YAML ({first}). Quote it for a "
                              f"string, e.g. '{key}=\"...\"'.") from None
        OmegaConf.update(config, key, value, merge=False)
    return OmegaConf.to_container(config, resolve=False)
