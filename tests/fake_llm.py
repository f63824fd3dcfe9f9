"""A scripted OpenAI-compatible chat server on 127.0.0.1, for driving agentloop through real HTTP.

Each POST to /v1/chat/completions takes the next step of the script:
  {"content": "...", "tool_calls": [{"name": "read_file", "arguments": {...}}], "finish_reason": "stop"}
  {"status": 429, "error": "slow down"}          # an HTTP error instead of a reply
  {"raw": "{not json"}                            # a 200 whose body is this text, verbatim
GET /v1/models lists `models` (default ["fake"]); a request naming another model gets a 404
"model not found" when `strict_models` is set, as llama.cpp's and vLLM's servers answer.
Requests are recorded (parsed JSON bodies) so tests can assert on what the model was sent.
When the script runs out, the last step repeats.

Run standalone (for tests that spawn other programs, e.g. pre-commit):
  python tests/fake_llm.py SCRIPT.json PORT_FILE
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a run past its time limit, a test that has moved on) is not an error of
        the server: printed, its traceback would land in whatever test captures stderr next."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class FakeLLM:
    def __init__(self, script: list[dict[str, Any]], log_path: str | None = None, *,
                 models: list[str] | None = None, strict_models: bool = False):
        self.script = list(script)
        self.models = list(models or ["fake"])
        self.strict_models = strict_models
        self.model_list_requests = 0
        self.requests: list[dict[str, Any]] = []
        self.log_path = log_path
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_step(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(body) + "\n")
            index = min(len(self.requests), len(self.script)) - 1
            return self.script[index]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    fake.model_list_requests += 1
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if fake.strict_models and body.get("model") not in fake.models:
                    with fake._lock:
                        fake.requests.append(body)
                    self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                               "type": "invalid_request_error", "code": "model_not_found"}})
                    return
                step = fake.next_step(body)
                if step.get("delay"):
                    time.sleep(step["delay"])
                if "raw" in step:
                    data = step["raw"].encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if "status" in step:
                    self._send(step["status"], {"error": {"message": step.get("error", "scripted error"),
                                                          "type": "scripted", "code": step["status"]}})
                    return
                self._send(200, completion(body.get("model", "fake"), step, bool(body.get("logprobs"))))

        return Handler


def completion(model: str, step: dict[str, Any], logprobs: bool = False) -> dict[str, Any]:
    """An OpenAI chat.completion object for one scripted step (with per-word logprobs if asked)."""
    message: dict[str, Any] = {"role": "assistant", "content": step.get("content", "")}
    calls = step.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))}}
            for i, c in enumerate(calls)
        ]
    prompt_tokens = step.get("prompt_tokens", 100)
    completion_tokens = step.get("completion_tokens", 20)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": step.get("finish_reason", "tool_calls" if calls else "stop"),
                     **({"logprobs": {"content": [
                         {"token": word, "logprob": -0.5 * (i % 3), "bytes": list(word.encode()), "top_logprobs": []}
                         for i, word in enumerate(message["content"].split(" "))]}} if logprobs else {})}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


if __name__ == "__main__":
    script_path, port_file = sys.argv[1], sys.argv[2]
    log = sys.argv[3] if len(sys.argv) > 3 else None
    with open(script_path, encoding="utf-8") as fh:
        steps = json.load(fh)
    with FakeLLM(steps, log_path=log) as server:
        with open(port_file + ".tmp", "w") as fh:
            fh.write(str(server.port))
        import os

        os.replace(port_file + ".tmp", port_file)
        threading.Event().wait()
