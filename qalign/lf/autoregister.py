"""Startup hook: plain `llamafactory-cli train|webui|api` (and any `import llamafactory`) see qalign's GRPO stage.

The wheel (and `pip install -e .`) installs `qalign-autoregister.pth` into site-packages; Python runs its one line
at start-up, which calls `arm()`. Arming costs one tiny finder on `sys.meta_path` and imports nothing but qalign.env
(the flag reader); when `llamafactory` is first imported the finder removes itself and runs
`qalign.lf.register.register_all()`, which queues its patches for LLaMA-Factory's modules as they load. Opt out with
`QALIGN_NO_AUTOREGISTER=1`.
"""

from __future__ import annotations

import sys

OPT_OUT = "QALIGN_NO_AUTOREGISTER"
PTH_FILE = "qalign-autoregister.pth"
TARGET = "llamafactory"


def disabled() -> bool:
    """True when the environment opts out (`QALIGN_NO_AUTOREGISTER=1`, or true / y as LLaMA-Factory reads a flag)."""
    from qalign.env import env_flag  # a few lines on os: the hook stays near-free (tests/test_layers.py)

    return env_flag(OPT_OUT)


class _RegisterOnLlamaFactory:
    """A meta path finder that finds nothing: the first lookup of `llamafactory` registers qalign, then the
    normal finders load it. (Not an importlib.abc subclass: importing that alone costs ~20 ms at start-up.)"""

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname != TARGET:
            return None
        disarm()
        from qalign.lf.register import patched_spec, register_all

        register_all()
        return patched_spec(fullname, path, target)  # this import no longer asks the finder register_all added


def armed() -> bool:
    """Whether the hook waits on sys.meta_path."""
    return any(isinstance(finder, _RegisterOnLlamaFactory) for finder in sys.meta_path)


def arm() -> None:
    """Register qalign when LLaMA-Factory is imported (at once if it already is); no-op when opted out or armed."""
    if disabled() or armed():
        return
    if TARGET in sys.modules:
        from qalign.lf.register import register_all

        register_all()
        return
    sys.meta_path.insert(0, _RegisterOnLlamaFactory())


def disarm() -> None:
    """Take the hook off sys.meta_path (registration already done stays done)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegisterOnLlamaFactory)]
