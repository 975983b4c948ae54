"""Metadata lives in pyproject.toml; this only ships `qalign-autoregister.pth` at the root of site-packages."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "qalign-autoregister.pth"  # see qalign/lf/autoregister.py


class BuildPyWithStartupHook(build_py):
    """build_py + the .pth beside the packages: in the wheel's root, or in the editable wheel's unpacked root."""

    def run(self) -> None:
        super().run()
        # editable installs (PEP 660) ship only what lands in the unpacked wheel, which is `install`'s install_lib
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        Path(root).mkdir(parents=True, exist_ok=True)
        self.copy_file(PTH, str(Path(root) / PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


setup(cmdclass={"build_py": BuildPyWithStartupHook})
