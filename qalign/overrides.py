"""`key=value` overrides: writing them for LLaMA-Factory, and applying dotted ones to a nested mapping (OmegaConf)."""

from __future__ import annotations

import json
from collections.abc import Iterable
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
