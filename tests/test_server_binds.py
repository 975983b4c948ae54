"""Issue 15 S1/S2: `qalign webui` / `qalign api` bind 127.0.0.1 unless GRADIO_SERVER_NAME / API_HOST say otherwise
and print where they listen; the Streamlit demo ships a loopback config without usage statistics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from qalign import cli
from qalign.lf import servers

REPO = Path(__file__).resolve().parents[1]


def test_bind_defaults_to_loopback_and_env_wins() -> None:
    env: dict[str, str] = {}
    assert servers.bind_loopback("webui", env) == ("qalign: webui will listen on http://127.0.0.1:7860 (this machine "
                                               "only; set GRADIO_SERVER_NAME=0.0.0.0 to expose it)")
    assert env == {"GRADIO_SERVER_NAME": "127.0.0.1"}
    env = {"API_HOST": "0.0.0.0", "API_PORT": "9000"}
    assert servers.bind_loopback("api", env).startswith("qalign: api will listen on http://0.0.0.0:9000 (from API_HOST")
    assert env["API_HOST"] == "0.0.0.0"
    assert servers.bind_loopback("api", {"API_HOST": "::1"}).startswith("qalign: api will listen on http://[::1]:8000")
    assert servers.bind_loopback("train", env) is None


def test_passthrough_sets_the_env_before_llamafactory_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    seen: dict[str, str | None] = {}
    fake = types.ModuleType("llamafactory.cli")
    fake.main = lambda: seen.update(host=os.environ.get("API_HOST"), argv=" ".join(sys.argv))
    monkeypatch.setitem(sys.modules, "llamafactory.cli", fake)
    monkeypatch.setattr("qalign.lf.register.register_all", lambda: None)
    monkeypatch.delenv("API_HOST", raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    recipe = tmp_path / "chat.yaml"
    recipe.write_text("model_name_or_path: Qwen/Qwen3-8B-AWQ\ntemplate: qwen3\n")
    assert cli.main(["api", str(recipe)]) == 0
    assert seen == {"host": "127.0.0.1", "argv": f"llamafactory-cli api {recipe}"}
    assert "api will listen on http://127.0.0.1:8000" in capsys.readouterr().err


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_and_check(argv: list[str], port_var: str, host_var: str, command: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, port_var: str(port), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO),
           "DISABLE_VERSION_CHECK": "1"}
    env.pop(host_var, None)
    log = tmp_path / f"{command}.log"
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "qalign.cli", *argv], cwd=tmp_path, env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not _listeners(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        addresses = _listeners(port)
        assert addresses, f"{command} did not listen on port {port}:\n{log.read_text()[-3000:]}"
        assert set(addresses) == {"0100007F"}, addresses  # 127.0.0.1 only, not 0.0.0.0 / [::]
        assert f"{command} will listen on http://127.0.0.1:{port}" in log.read_text()
    finally:
        proc.kill()
        proc.wait(30)


NO_PROC = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc/net/tcp")


@NO_PROC
def test_webui_really_listens_on_loopback_only(tmp_path: Path) -> None:
    _serve_and_check(["webui"], "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME", "webui", tmp_path)


@NO_PROC
def test_api_really_listens_on_loopback_only(tiny_qwen3: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "chat.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_qwen3}\ntemplate: qwen3_nothink\ninfer_backend: huggingface\n")
    _serve_and_check(["api", str(recipe)], "API_PORT", "API_HOST", "api", tmp_path)


def test_streamlit_demo_config_is_loopback_without_usage_stats(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from streamlit import config

    monkeypatch.chdir(tmp_path)  # any folder: Streamlit reads the script folder's .streamlit/config.toml
    monkeypatch.setattr(config, "_main_script_path", str(REPO / "demo" / "app.py"))
    try:
        config.get_config_options(force_reparse=True)
        assert config.get_option("server.address") == "127.0.0.1"
        assert config.get_option("browser.gatherUsageStats") is False
    finally:
        monkeypatch.undo()
        config.get_config_options(force_reparse=True)
