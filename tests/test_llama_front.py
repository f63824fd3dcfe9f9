"""benchmarks/llama_front.py: a client that hangs up mid-completion frees the server (it is restarted),
so the next request does not wait for work nobody will read. Real processes on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for llama-cpp-python: one request at a time; a completion asking for many tokens takes 60 s.
SLOW_SERVER = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, payload):
        body = json.dumps(payload).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        self.reply({"data": [{"id": "m"}]})
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(60 if req.get("max_tokens", 1) > 100 else 0)
        self.reply({"choices": [{"message": {"content": "OK"}}]})
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, max_tokens: int, timeout: float) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 data=json.dumps({"max_tokens": max_tokens}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def test_an_abandoned_completion_is_stopped_and_the_next_one_is_answered(tmp_path):
    port, upstream = free_port(), free_port()
    server = tmp_path / "slow_server.py"
    server.write_text(SLOW_SERVER)
    log = open(tmp_path / "front.log", "w")
    front = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "llama_front.py"), "--port", str(port),
                              "--upstream-port", str(upstream), "--", sys.executable, str(server), str(upstream)],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert post(port, 1, 5)["choices"][0]["message"]["content"] == "OK"
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "front.log").read_text()
                time.sleep(0.2)
        try:
            post(port, 500, 2)  # gives up after 2 s on a 60 s completion
        except OSError:
            pass
        started = time.monotonic()
        assert post(port, 1, 30)["choices"][0]["message"]["content"] == "OK"
        assert time.monotonic() - started < 20  # not the 58 s the abandoned completion had left
        assert "server restarted" in (tmp_path / "front.log").read_text()
    finally:
        front.terminate()
        front.wait(10)
        log.close()
