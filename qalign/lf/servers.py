"""Where the servers that `qalign webui|webchat|api` start (through LLaMA-Factory) listen.

LLaMA-Factory binds every interface by default (0.0.0.0); the web UI launches training runs with any path, so
qalign defaults the bind address to loopback unless GRADIO_SERVER_NAME / API_HOST say otherwise.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# The servers LLaMA-Factory starts listen on every interface by default; qalign defaults them to loopback.
# command -> (host variable, port variable, LLaMA-Factory's default port)
SERVERS = {"webui": ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "7860"),
           "webchat": ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "7860"),
           "api": ("API_HOST", "API_PORT", "8000")}
LOOPBACK = "127.0.0.1"


def bind_loopback(command: str, environ: MutableMapping[str, str] | None = None) -> str | None:
    """For a server command, default its bind address to 127.0.0.1 in `environ`; return where it will listen."""
    if command not in SERVERS:
        return None
    environ = os.environ if environ is None else environ
    host_var, port_var, default_port = SERVERS[command]
    host = environ.setdefault(host_var, LOOPBACK)
    port = environ.get(port_var, default_port)
    shown = f"[{host}]" if ":" in host else host
    if host in (LOOPBACK, "localhost", "::1"):
        note = f"this machine only; set {host_var}=0.0.0.0 to expose it"
    else:
        note = f"from {host_var}: anyone who can reach this address can use it"
    return f"qalign: {command} will listen on http://{shown}:{port} ({note})"
