"""End to end: `streamlit run demo/app.py` on 127.0.0.1, driven in Debian's headless Chromium by tests/e2e/drive.mjs.

The tiny Qwen3 model and a tiny LoRA adapter stand in for SmolLM2. Needs /usr/bin/chromium (Debian's `chromium`)
and `npm ci --prefix tests/e2e` (playwright-core, which drives the installed browser and downloads none); .ci/run
installs both. Set QALIGN_DEMO_SCREENSHOT=PATH to keep a copy of the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from demo import logic
from demo.engine import Engine
from tests.test_demo_fixtures import RECORDS, TEMPLATE, build_tiny_adapter

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "tests" / "e2e"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
MAX_NEW = 200  # the random model never stops early: long enough to watch the answer stream
SERVER_START_S = 120
DRIVER_S = 300


def _skip_reason() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`; .ci/run does)"
    if shutil.which("node") is None:
        return "node not found: the browser test runs tests/e2e/drive.mjs with Node.js"
    if not (E2E / "node_modules" / "playwright-core").is_dir():
        return "tests/e2e/node_modules/playwright-core not found: run `npm ci --prefix tests/e2e` (.ci/run does)"
    return None


SKIP_REASON = _skip_reason()
pytestmark = [pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""), pytest.mark.slow]  # a browser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(server: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer on 127.0.0.1:{port} within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """End the server's process group (it was started in a session of its own)."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)


def test_browser_shows_an_answer_for_each_selected_model(tiny_qwen3: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    adapter = build_tiny_adapter(tiny_qwen3, outputs / "tiny" / "sft")
    record = RECORDS[0]
    passages = logic.passages_to_text(record.ctxs)
    port = _free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "demo" / "app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
        "--", "--model", str(tiny_qwen3), "--template", TEMPLATE, "--outputs", str(outputs),
        "--data", str(tmp_path / "data"), "--max-new-tokens", str(MAX_NEW),
    ]
    log = tmp_path / "streamlit.log"
    screenshot = tmp_path / "demo.png"
    with log.open("w") as log_file:
        server = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_healthy(server, port, log)
        env = {**os.environ, "DEMO_URL": f"http://127.0.0.1:{port}/", "DEMO_SCREENSHOT": str(screenshot),
               "DEMO_MODELS": json.dumps(["base", "tiny/sft"]), "DEMO_QUESTION": record.question,
               "DEMO_PASSAGES": passages, "DEMO_GOLDS": " | ".join(record.answers),
               "DEMO_MAX_NEW_TOKENS": str(MAX_NEW),
               "DEMO_TIMEOUT_MS": str((DRIVER_S - 30) * 1000), "CHROMIUM": str(CHROMIUM)}
        started = time.monotonic()
        driver = subprocess.run(["node", str(E2E / "drive.mjs")], cwd=E2E, env=env, capture_output=True, text=True,
                                timeout=DRIVER_S)
        assert driver.returncode == 0, f"{driver.stderr}\n--- streamlit log ---\n{log.read_text()[-3000:]}"
        print(f"browser run: {time.monotonic() - started:.1f} s")
    finally:
        _stop(server)

    page = json.loads(driver.stdout.strip().splitlines()[-1])
    assert [answer["label"] for answer in page["answers"]] == ["base", "tiny/sft"]
    assert page["errors"] == [] and page["pageErrors"] == []
    final = " ".join(page["answers"][0]["text"].split())
    print(f"{len(page['streamed'])} partial answers streamed before the first model's final one")
    assert page["streamed"], "the first answer never showed partially: it did not stream"
    assert all(final.startswith(" ".join(partial.split())) for partial in page["streamed"]), page["streamed"]
    prompt = logic.build_prompt("answer_only", record.question, passages, 10_000)
    engine = Engine(str(tiny_qwen3), TEMPLATE)
    for shown, adapter_path in zip(page["answers"], [None, adapter], strict=True):
        expected = engine.generate(shown["label"], adapter_path, prompt, MAX_NEW)
        assert " ".join(expected.text.split()) in " ".join(shown["text"].split())  # the model's own answer
        assert "SubEM" in shown["text"] and "latency" in shown["text"] and "first token" in shown["text"]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    if keep := os.environ.get("QALIGN_DEMO_SCREENSHOT"):
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, keep)
