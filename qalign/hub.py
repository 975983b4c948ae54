"""Whether a name that is no local path can still be a Hugging Face Hub id.

Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or no connection to the Hub within a second or two) a path that
does not exist is a mistake, said at once: `datasets` and `transformers` would otherwise retry it as a Hub id for
~25 s and then fail with their own message. Online, Hub ids are left to the libraries.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from qalign.env import HUGGINGFACE_TRUE, env_flag
from qalign.errors import QalignError

# the variables that make each library stay offline
OFFLINE_VARS = {"model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
                "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
_PROBE_SECONDS = 2.0


@functools.lru_cache(maxsize=8)
def _hub_answers(endpoint: str) -> bool:
    """A TCP connection to the endpoint opens within _PROBE_SECONDS (DNS included: run in a thread, since
    getaddrinfo has no timeout of its own)."""
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "huggingface.co", parts.port or (80 if parts.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=_PROBE_SECONDS).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_PROBE_SECONDS + 0.5)
    return bool(result and result[0])


def offline_reason(kind: str = "dataset") -> str | None:
    """Why the Hub cannot be used now for a `kind` (model or dataset) id ("HF_HUB_OFFLINE is set", "no connection to
    huggingface.co"), else None."""
    for var in OFFLINE_VARS[kind]:
        if env_flag(var, HUGGINGFACE_TRUE):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if not _hub_answers(endpoint):
        return f"no connection to {urlsplit(endpoint).netloc or endpoint}"
    return None


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache/huggingface") / "hub"


def in_hub_cache(repo_id: str, kind: str = "model") -> bool:
    """`owner/name` was downloaded before (offline, transformers and datasets can still load it)."""
    return (_hub_cache() / f"{kind}s--{repo_id.replace('/', '--')}").is_dir()


def missing_path_error(key: str, value: str, reason: str, fix: str = "fix the path") -> QalignError:
    """The one message for a name that is neither on disk nor, offline, usable as a Hub id."""
    return QalignError(f"{key}: {value} does not exist: it is neither a local file or folder nor, offline ({reason}), "
                       f"reachable as a Hugging Face Hub id. {fix[0].upper() + fix[1:]}.")


def check_local_or_hub(key: str, value: str, kind: str = "model", fix: str = "fix the path") -> None:
    """Raise missing_path_error when `value` does not exist and the Hub is offline (and it is not in the Hub
    cache); online, a non-existent name is left to the libraries as a Hub id."""
    if Path(value).expanduser().exists():
        return
    reason = offline_reason(kind)
    if reason is not None and not in_hub_cache(value, kind):
        raise missing_path_error(key, value, reason, fix)
