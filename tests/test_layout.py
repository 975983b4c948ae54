"""The layout page (docs/layout.md, linked from the README) matches the tree; `make help`: tests/test_makefile.py."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _layout_block() -> str:
    page = (REPO / "docs" / "layout.md").read_text(encoding="utf-8")
    section = page.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def test_layout_page_names_every_folder_and_subpackage() -> None:
    block = _layout_block()
    generated = {"models", "outputs", "reports", "saves", "build", "llamaboard_cache"}  # git-ignored run outputs
    folders = sorted(p.name for p in REPO.iterdir() if p.is_dir() and p.name not in generated
                     and not p.name.startswith((".", "_")) and not p.name.endswith(".egg-info"))
    missing = [name for name in folders if not re.search(rf"^{re.escape(name)}/", block, re.MULTILINE)]
    assert not missing, f"docs/layout.md lacks top-level folder(s) {missing}"
    subpackages = sorted(p.name for p in (REPO / "qalign").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert not [name for name in subpackages if f"  {name}/" not in block], subpackages
    modules = sorted(p.name for p in (REPO / "qalign").glob("*.py") if p.name != "__init__.py")
    assert not [name for name in modules if name not in block], modules


def test_readme_and_docs_pages_link_only_to_files_that_exist() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "#")):
                continue
            if not (page.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken
    readme = pages[0].read_text(encoding="utf-8")
    assert not [p.name for p in pages[1:] if f"](docs/{p.name})" not in readme], "README links every docs/ page"
