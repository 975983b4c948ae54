"""Issue 16: the endpoint teacher against a real `qalign api` (LLaMA-Factory's OpenAI-compatible server, tiny Qwen3,
127.0.0.1, API_KEY set), and against an unreachable port and servers answering errors or garbage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qalign.cli import main
from tests.test_server_binds import REPO, _free_port
from tests.test_teach import RAW, _lines, _raw

KEY_ENV = "QALIGN_TEST_TEACHER_KEY"  # the key lives in the environment only, as users are told to keep it
SERVED = "tiny-teacher"
POSTS = re.compile(r'"POST /v1/chat/completions HTTP/1.1" 200')


@pytest.fixture(scope="module")
def api_server(tiny_qwen3: Path, tmp_path_factory) -> Iterator[tuple[str, Path, str]]:
    """(base URL, server log, key) of `qalign api` serving the tiny Qwen3 (~8 s to start); stopped after the module."""
    folder = tmp_path_factory.mktemp("api")
    recipe = folder / "chat.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_qwen3}\ntemplate: qwen3_nothink\ninfer_backend: huggingface\n")
    port, key = _free_port(), "test-key-not-a-secret"
    env = {**os.environ, "API_PORT": str(port), "API_KEY": key, "API_MODEL_NAME": SERVED, "PYTHONPATH": str(REPO),
           "DISABLE_VERSION_CHECK": "1"}
    env.pop("API_HOST", None)
    log = folder / "api.log"
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "qalign.cli", "api", str(recipe)], cwd=folder, env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                request = urllib.request.Request(base + "/models", headers={"Authorization": f"Bearer {key}"})
                with urllib.request.urlopen(request, timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"qalign api did not come up:\n{log.read_text()[-3000:]}")
        assert f"api will listen on http://127.0.0.1:{port}" in log.read_text()
        yield base, log, key
    finally:
        proc.kill()
        proc.wait(30)


def _teach(tmp_path: Path, url: str, *extra: str) -> int:
    return main(["teach", "--input", str(_raw(tmp_path)), "--url", url, "--api-key-env", KEY_ENV, "--top-k", "1",
                 "--num-samples", "2", "--max-new-tokens", "4", "--retries", "1", "--timeout", "60", *extra])


def test_endpoint_teacher_asks_resumes_and_reports_server_errors(api_server, tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:
    base, log, key = api_server
    monkeypatch.setenv(KEY_ENV, key)
    out = tmp_path / "t.jsonl"
    assert _teach(tmp_path, base, "--output", str(out), "--served-model", SERVED, "--limit", "2",
                  "--concurrency", "2") == 0
    header, *rows = _lines(out)
    assert header["teacher"] == {"url": base, "served_model": SERVED}
    assert sorted(r["id"] for r in rows) == ["q0", "q1"]
    assert all(len(r["samples"]) == 2 and all(isinstance(s["output"], str) for s in r["samples"]) for r in rows)
    asked = len(POSTS.findall(log.read_text()))
    assert asked == 2  # one request per question: the server returns all n choices

    # a killed run leaves a partial line; the rerun cuts it and asks only the unfinished question
    finished = out.read_bytes()
    with out.open("ab") as handle:
        handle.write(b'{"id": "q2", "sam')
    capsys.readouterr()
    assert _teach(tmp_path, base, "--output", str(out), "--served-model", SERVED) == 0
    assert out.read_bytes().startswith(finished) and [r["id"] for r in _lines(out)[1:]][2:] == ["q2"]
    assert len(POSTS.findall(log.read_text())) == asked + 1
    assert "2 already done, 1 asked, 2 samples drawn now" in capsys.readouterr().out
    assert _teach(tmp_path, base, "--output", str(out), "--served-model", SERVED) == 0  # all done: nothing asked
    assert len(POSTS.findall(log.read_text())) == asked + 1 and len(_lines(out)) == 1 + len(RAW)

    # the server's errors, named with their fix: a rejected key, no key, a model it does not serve
    for env_key, served, message in [("wrong", SERVED, f"HTTP 401.*\\${KEY_ENV} is set but was rejected"),
                                     (None, SERVED, f"HTTP 401.*\\${KEY_ENV} is not set"),
                                     (key, "nope", f"does not serve 'nope'; it serves {SERVED}")]:
        if env_key is None:
            monkeypatch.delenv(KEY_ENV)
        else:
            monkeypatch.setenv(KEY_ENV, env_key)
        assert _teach(tmp_path, base, "--output", str(tmp_path / "e.jsonl"), "--served-model", served) == 2
        assert re.search(message, capsys.readouterr().err)
        assert not (tmp_path / "e.jsonl").exists()  # checked before any question is asked


def test_unreachable_url_fails_with_the_fix(tmp_path: Path, capsys) -> None:
    started = time.monotonic()
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    assert _teach(tmp_path, url, "--output", str(tmp_path / "t.jsonl")) == 2
    err = capsys.readouterr().err
    assert f"cannot reach {url}/models" in err and "after 2 attempt(s)" in err and "qalign api" in err
    assert time.monotonic() - started < 20


class _Garbage(BaseHTTPRequestHandler):
    """/v1/models lists one model; the chat answer is HTML (path /html) or JSON without choices."""

    def _send(self, body: bytes, kind: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/html"):
            self._send(b"<html>proxy login</html>", "text/html")
        else:
            self._send(json.dumps({"data": [{"id": "m"}]}).encode())

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(json.dumps({"object": "error", "message": "?"}).encode())

    def log_message(self, *args) -> None:
        pass


def test_garbage_answers_fail_clearly(tmp_path: Path, capsys) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _teach(tmp_path, root + "/html", "--output", str(tmp_path / "a.jsonl")) == 2
        assert "answered something that is not JSON" in capsys.readouterr().err
        assert _teach(tmp_path, root, "--output", str(tmp_path / "b.jsonl")) == 2  # served model: its only one
        assert "/v1/chat/completions answered without choices" in capsys.readouterr().err
        assert _lines(tmp_path / "b.jsonl")[1:] == []  # nothing finished, nothing written but the settings line
    finally:
        server.shutdown()


class _Flaky(BaseHTTPRequestHandler):
    """A chat endpoint that answers 503 to its first request, then slowly, counting requests in flight."""

    lock = threading.Lock()
    posts = in_flight = most = 0

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"data": [{"id": "m"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        cls = type(self)
        with cls.lock:
            cls.posts += 1
            first = cls.posts == 1
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
        time.sleep(0.3)
        with cls.lock:
            cls.in_flight -= 1
        if first:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        choices = [{"index": i, "message": {"role": "assistant", "content": "Paris", "reasoning_content": "It says."}}
                   for i in range(request["n"])]
        body = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_retries_with_backoff_and_caps_requests_in_flight(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "t.jsonl"
        assert _teach(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/v1", "--output", str(out),
                      "--concurrency", "2") == 0
    finally:
        server.shutdown()
    rows = {r["id"]: r for r in _lines(out)[1:]}
    assert sorted(rows) == ["q0", "q1", "q2"] and _Flaky.posts == 4  # 3 questions + the retried 503
    assert _Flaky.most == 2  # requests overlap, never more than --concurrency
    # reasoning the server returns apart goes back inside <think>; the Paris question keeps its sample
    assert rows["q0"]["samples"] == [{"output": "<think>It says.</think>Paris", "f1": 1.0}] * 2
