"""The keys `qalign train` accepts and their types, cached so that a typo is reported before the heavy imports.

Reading the types means importing `llamafactory.hparams` (and TRL for the GRPO keys): 6-14 s. The table is written
once to `$XDG_CACHE_HOME/qalign/train-fields-KEY.json` (KEY: the versions of LLaMA-Factory, transformers and TRL and
the sources of qalign's GRPO arguments and registration, which change the table), and read back in milliseconds.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import operator
import os
import types
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from qalign.errors import QalignError
from qalign.io import atomic_write_text

_PACKAGE = Path(__file__).resolve().parents[1]  # qalign/
_SOURCES = ("grpo/args.py", "lf/register.py", "lf/train_fields.py")  # qalign files whose change changes the table
_PLAIN = {t.__name__: t for t in (int, float, bool, str, list, tuple, dict)}


def llamafactory_fields() -> dict[str, Any]:
    """{key: type} of every key `llamafactory-cli train` accepts (model, data, training, finetuning, generation)."""
    from llamafactory.hparams import (
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        TrainingArguments,
    )

    fields: dict[str, Any] = {}
    for cls in (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments):
        hints = get_type_hints(cls)
        fields.update({f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init})
    return fields


def grpo_fields() -> dict[str, Any]:
    """{key: type} of the GRPO stage's keys (reward lists may also be YAML lists)."""
    from qalign.grpo.args import GRPOArguments

    hints = get_type_hints(GRPOArguments)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(GRPOArguments) if f.init}
    return {**fields, "reward_funcs": str | list | None, "reward_weights": str | list | None}


def encode(tp: Any) -> Any:
    """A field type as JSON: enough for `train_args.accepts` and `type_name` to work on the decoded one."""
    origin = get_origin(tp)
    if tp is Any:
        return {"any": True}
    if tp is type(None):
        return {"none": True}
    if origin in (Union, types.UnionType):  # `X | Y` and `Union[X, Y]` print differently in messages
        return {"union": [encode(arg) for arg in get_args(tp)], "pipe": origin is types.UnionType}
    if origin is Literal:
        return {"literal": list(get_args(tp))}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": tp.__name__, "module": tp.__module__, "values": [str(member.value) for member in tp]}
    if tp is Ellipsis:
        return {"ellipsis": True}
    if origin in (list, tuple, dict):  # dict[str, Any]: the parameters too, for the messages
        return {"type": origin.__name__, "args": [encode(arg) for arg in get_args(tp)]}
    if tp in _PLAIN.values():
        return {"type": tp.__name__}
    return {"other": getattr(tp, "__name__", str(tp)), "module": getattr(tp, "__module__", "builtins")}


def decode(obj: Any) -> Any:
    """The inverse of `encode` (enums and other classes come back as stand-ins with the same names and values)."""
    if "any" in obj:
        return Any
    if "none" in obj:
        return type(None)
    if "union" in obj:
        args = tuple(decode(arg) for arg in obj["union"])
        return functools.reduce(operator.or_, args) if obj.get("pipe") else Union[args]  # noqa: UP007
    if "literal" in obj:
        return Literal[tuple(obj["literal"])]
    if "enum" in obj:
        return enum.Enum(obj["enum"], {f"v{i}": value for i, value in enumerate(obj["values"])}, module=obj["module"])
    if "ellipsis" in obj:
        return Ellipsis
    if "type" in obj:
        plain = _PLAIN[obj["type"]]
        return plain[tuple(decode(arg) for arg in obj["args"])] if obj.get("args") else plain
    return type(obj["other"], (), {"__module__": obj["module"]})


def _cache_file() -> Path:
    versions = [metadata.version(name) for name in ("llamafactory", "transformers", "trl")]
    digest = hashlib.sha1("|".join(versions).encode())
    for name in _SOURCES:
        digest.update((_PACKAGE / name).read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "qalign" / f"train-fields-{digest.hexdigest()[:16]}.json"


def cached_fields() -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(LLaMA-Factory fields, GRPO fields) from the cache, or None when it was not written for this stack yet."""
    try:
        table = json.loads(_cache_file().read_text())
        return ({k: decode(v) for k, v in table["llamafactory"].items()},
                {k: decode(v) for k, v in table["grpo"].items()})
    except (OSError, ValueError, KeyError, TypeError, metadata.PackageNotFoundError):
        return None


def live_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """(LLaMA-Factory fields, GRPO fields) from the imported classes (slow); writes the cache for the next run."""
    from qalign.lf.register import register_all

    register_all()  # `stage: grpo` becomes a valid stage
    fields, grpo = llamafactory_fields(), grpo_fields()
    try:
        table = {"llamafactory": {k: encode(v) for k, v in fields.items()},
                 "grpo": {k: encode(v) for k, v in grpo.items()}}
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(table, indent=0))
    except (OSError, QalignError, metadata.PackageNotFoundError):
        pass  # no writable cache: the next run reads the classes again
    return fields, grpo


def train_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """(LLaMA-Factory fields, GRPO fields): cached when possible."""
    return cached_fields() or live_fields()
