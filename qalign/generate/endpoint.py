"""An OpenAI-compatible chat endpoint as a teacher: `qalign api`, vLLM, SGLang, or a hosted API.

`--url` is the API base as OpenAI clients take it (`http://127.0.0.1:8000/v1`; a URL without `/v1` gets it
appended, one ending in `/chat/completions` is used as given). The key is read from an environment variable
(`--api-key-env`, default OPENAI_API_KEY) and sent as `Authorization: Bearer`, the way LLaMA-Factory's API_KEY
checks it; it is never taken from the command line or a file. Requests time out, are retried with exponential
backoff on connection errors, 429 and 5xx, and at most `concurrency` are in flight. Before the first question the
server's `/models` is read, so an unreachable server, a rejected key or a model it does not serve fails at once.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from qalign.errors import QalignError

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(QalignError):
    """The endpoint cannot be used (unreachable, rejects the request, or answers something unusable)."""


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to ask: API base, served model name, sampling, and the client's limits."""

    url: str
    served_model: str | None = None
    api_key_env: str = DEFAULT_KEY_ENV
    num_samples: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 256
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    concurrency: int = 8

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise EndpointError(f"--url {self.url!r} must start with http:// or https://, e.g. "
                                "http://127.0.0.1:8000/v1.")
        if self.timeout <= 0 or self.retries < 0 or self.concurrency < 1 or self.num_samples < 1:
            raise EndpointError("need --timeout > 0, --retries >= 0, --concurrency >= 1 and --num-samples >= 1.")


def api_base(url: str) -> str:
    """The API base (`.../v1`) of `--url`."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


class EndpointTeacher:
    """Asks an OpenAI-compatible chat endpoint for `num_samples` answers per prompt."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.base = api_base(config.url)
        self.key = os.environ.get(config.api_key_env) or None
        self.model = self._check_model()

    def _request(self, path: str, body: dict[str, Any] | None) -> Any:
        """One HTTP call with retries; the decoded JSON answer."""
        cfg, url = self.config, self.base + path
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(cfg.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
            try:
                with urllib.request.urlopen(request, timeout=cfg.timeout) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                if exc.code not in _RETRY_STATUS or attempt == cfg.retries:
                    raise EndpointError(self._http_message(url, exc.code, detail)) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if attempt == cfg.retries:
                    raise EndpointError(
                        f"cannot reach {url} ({reason}) after {cfg.retries + 1} attempt(s). Is the server running "
                        "and is --url right? Start one with `qalign api RECIPE.yaml` (it listens on "
                        "http://127.0.0.1:8000/v1), or raise --timeout / --retries for a slow server.") from None
            time.sleep(min(60.0, cfg.backoff * 2 ** attempt))
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(f"{url} answered something that is not JSON ({raw[:200]!r}). Check that --url "
                                "points at an OpenAI-compatible API (its base ends in /v1).") from None

    def _http_message(self, url: str, code: int, detail: str) -> str:
        if code in (401, 403):
            where = (f"${self.config.api_key_env} is set but was rejected" if self.key
                     else f"${self.config.api_key_env} is not set")
            return (f"{url} refused the request (HTTP {code}: {detail}): {where}. Export the server's key in "
                    f"{self.config.api_key_env}, or name the variable holding it with --api-key-env.")
        if code == 404:
            return (f"{url}: HTTP 404 ({detail}). Check --url (the API base, e.g. http://127.0.0.1:8000/v1) and "
                    "--served-model.")
        return f"{url}: HTTP {code} ({detail}). Check --served-model and the sampling options for this server."

    def _check_model(self) -> str:
        """The served model to ask: --served-model (checked against `/models` when it lists any) or the only one."""
        listing = self._request("/models", None)
        served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)] \
            if isinstance(listing, dict) else []
        wanted = self.config.served_model
        if wanted and served and wanted not in served:
            raise EndpointError(f"{self.base} does not serve {wanted!r}; it serves {', '.join(map(str, served))}. "
                                "Pass one of those as --served-model (qalign api: set API_MODEL_NAME).")
        if wanted:
            return wanted
        if len(served) == 1 and served[0]:
            return str(served[0])
        raise EndpointError(f"{self.base} serves {len(served)} models ({', '.join(map(str, served)) or 'none listed'})"
                            "; pass --served-model NAME.")

    def ask(self, prompt: str) -> list[str]:
        """`num_samples` answers to one prompt (several requests when the server returns fewer choices than n)."""
        cfg, texts = self.config, []
        for _ in range(cfg.num_samples):  # one request usually gives all n; a server ignoring n needs n requests
            body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                    "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_new_tokens,
                    "n": cfg.num_samples - len(texts)}
            texts += _choices(self._request("/chat/completions", body), self.base)
            if len(texts) >= cfg.num_samples:
                return texts[: cfg.num_samples]
        raise EndpointError(f"{self.base} returned fewer than {cfg.num_samples} choices in {cfg.num_samples} requests.")

    def ask_all(self, prompts: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
        """(prompt index, answers) as requests finish, at most `concurrency` in flight; the first error stops the
        run (answers already yielded are kept by the caller)."""
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            pending: dict[Future, int] = {}
            queue = iter(range(len(prompts)))
            for index in queue:
                pending[pool.submit(self.ask, prompts[index])] = index
                if len(pending) >= self.config.concurrency:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        texts = future.result()
                    except BaseException:
                        for other in pending:
                            other.cancel()
                        raise
                    yield index, texts
                    following = next(queue, None)
                    if following is not None:
                        pending[pool.submit(self.ask, prompts[following])] = following


def _choices(answer: Any, base: str) -> list[str]:
    """The texts of a chat completion; a separate `reasoning_content` (vLLM/SGLang reasoning parsers, hosted
    reasoning models) goes back inside <think>...</think>."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices:
        raise EndpointError(f"{base}/chat/completions answered without choices ({str(answer)[:200]}). Is it an "
                            "OpenAI-compatible chat endpoint?")
    texts = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise EndpointError(f"{base}/chat/completions answered a choice without message.content "
                                f"({str(choice)[:200]}).")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        texts.append(f"<think>{reasoning}</think>{content}" if isinstance(reasoning, str) and reasoning else content)
    return texts
