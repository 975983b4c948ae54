"""The package reads top-down: the CLI imports the library, never the reverse (imports parsed with ast).

Each folder names a role (lf/ LLaMA-Factory glue, generate/ generation, converters/ data, grpo/ the stage, study/
the comparison); LAYERS orders them bottom-up and a module imports only its own layer and the ones below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qalign"
# shared helpers below converters and evaluators: they import only each other (and third-party packages)
BOTTOM = {"qalign.errors", "qalign.env", "qalign.io", "qalign.text", "qalign.records", "qalign.overrides",
          "qalign.procs", "qalign.hub", "qalign.paths", "qalign.health"}
# bottom-up; a name covers the module and everything under it, the longest name that matches wins (lf/ and
# generate/ sit on two layers: their readers and engine below the GRPO stage, the patch and `predict` above it)
LAYERS = [
    ("shared helpers", BOTTOM),
    ("scoring and retrieval", {"qalign.evaluators", "qalign.retrieve"}),
    ("LLaMA-Factory readers and the batch engine", {"qalign.lf.datasets", "qalign.lf.inference", "qalign.lf.servers",
                                                    "qalign.generate.engine", "qalign.generate.endpoint",
                                                    "qalign.generate.answer_stop"}),
    ("data, samplers, models and the GRPO stage", {"qalign.converters", "qalign.generate", "qalign.grpo",
                                                   "qalign.awq", "qalign.models"}),
    ("the LLaMA-Factory patch and what needs it", {"qalign.lf", "qalign.generate.predict",
                                                   "qalign.generate.predict_worker"}),
    ("the study", {"qalign.study"}),
    ("the front door", {"qalign.cli"}),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every qalign module PATH imports, at top level or inside functions (`from a import b` counts a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "qalign" or name.startswith("qalign.")}


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}
KNOWN = set(MODULES)


def _edges(module: str) -> set[str]:
    return {name for name in MODULES[module] if name in KNOWN and name != module and name != "qalign"}


def _layer(module: str) -> int:
    """Index in LAYERS of the longest name that is MODULE or a package above it (-1: none)."""
    best, depth = -1, -1
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    return best


def test_the_scan_sees_the_package() -> None:
    assert {"qalign.cli", "qalign.study.sweep", "qalign.study.plan", "qalign.evaluators.predictions"} <= KNOWN
    assert "qalign.overrides" in MODULES["qalign.study.plan"]


@pytest.mark.parametrize("module", sorted(KNOWN - {"qalign.cli"}))
def test_no_module_imports_the_cli(module: str) -> None:
    assert "qalign.cli" not in MODULES[module], f"{module} imports qalign.cli; move the helper below it"


@pytest.mark.parametrize("module", sorted(KNOWN - {"qalign.cli"}))
def test_only_the_front_door_imports_a_command_table(module: str) -> None:
    """`<folder>/cli.py` builds parsers for qalign.cli; a library module needing one of its names moves it down."""
    tables = sorted(name for name in _edges(module) if name.endswith(".cli"))
    assert not tables, f"{module} imports {tables}; move what it needs below the CLI (e.g. qalign/paths.py)"


def test_every_module_has_a_layer() -> None:
    assert not [module for module in KNOWN - {"qalign"} if _layer(module) < 0]


@pytest.mark.parametrize("module", sorted(KNOWN - {"qalign"}))
def test_no_module_imports_a_layer_above_its_own(module: str) -> None:
    upward = sorted(name for name in _edges(module) if _layer(name) > _layer(module))
    assert not upward, (f"{module} ({LAYERS[_layer(module)][0]}) imports "
                        + ", ".join(f"{name} ({LAYERS[_layer(name)][0]})" for name in upward))


def test_evaluators_do_not_import_converters() -> None:
    offenders = {m: sorted(n for n in MODULES[m] if n.startswith("qalign.converters"))
                 for m in KNOWN if m.startswith("qalign.evaluators")}
    assert not {m: names for m, names in offenders.items() if names}


@pytest.mark.parametrize("module", sorted(BOTTOM))
def test_shared_helpers_sit_below_everything(module: str) -> None:
    assert _edges(module) <= BOTTOM, f"{module} imports {sorted(_edges(module) - BOTTOM)}"


def test_no_import_cycles() -> None:
    """Depth-first search over every qalign -> qalign import (lazy ones included)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for name in sorted(_edges(module)):
            if state.get(name) == 1:
                cycle = stack[stack.index(name):] + [name] if name in stack else [module, name]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if name not in state:
                visit(name, [*stack, name])
        state[module] = 2

    for module in sorted(KNOWN):
        if module not in state:
            visit(module, [module])


def test_the_startup_hook_imports_only_the_standard_library_at_start() -> None:
    """qalign-autoregister.pth runs in every interpreter of the environment: its module must stay near-free."""
    tree = ast.parse((PACKAGE / "lf" / "autoregister.py").read_text(encoding="utf-8"))
    top_level = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top_level |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top_level <= {"__future__", "os", "sys"}, top_level
    for init in (PACKAGE / "__init__.py", PACKAGE / "lf" / "__init__.py"):  # the hook's import runs both
        assert init.read_text(encoding="utf-8").count("import") == 0, init
