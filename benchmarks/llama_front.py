"""A front for the llama-cpp-python server that frees it when a client gives up on a request.

llama-cpp-python answers one request at a time and cannot stop a non-streamed completion (its
`--interrupt_requests` only cuts streamed ones, between chunks, so never during the prompt read):
a client that hit its time limit leaves the server busy for minutes and the next run waits behind
it. This front listens on the public port and passes requests to the server on an internal port,
one at a time; when a client hangs up before its answer is complete, it restarts the server (a few
seconds: the model file is in the page cache) rather than let it finish work nobody will read.
Started and stopped by `benchmarks/local_model.py`; stdlib only.

    python benchmarks/llama_front.py --port 8080 --upstream-port 18080 -- SERVER COMMAND ...
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


def say(msg: str) -> None:
    print(f"[llama_front {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Upstream:
    """The llama-cpp-python server process: started, restarted, and waited for."""

    def __init__(self, cmd: list[str], port: int) -> None:
        self.cmd, self.port = cmd, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self.turn = threading.Lock()  # one request upstream at a time

    def start(self) -> None:
        self.ready.clear()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                say(f"the server exited with code {self.proc.returncode}")
                sys.exit(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        self.ready.set()

    def restart(self, why: str) -> None:
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.start()
        say(f"{why}: server restarted in {time.monotonic() - started:.1f}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def client_gone(sock: socket.socket) -> bool:
    """True once the client closed its end (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def make_handler(upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes: streams pass as they come

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.forward()

        def do_POST(self) -> None:  # noqa: N802
            self.forward()

        def forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            while not upstream.turn.acquire(timeout=0.5):
                if client_gone(self.connection):
                    return
            try:
                upstream.ready.wait()
                self.relay(body)
            finally:
                upstream.turn.release()

        def abandon(self, conn: http.client.HTTPConnection, why: str) -> None:
            """The client left: a completion still running upstream is stopped by a restart."""
            conn.close()
            if self.command == "POST" and self.path.rstrip("/").endswith("completions"):
                upstream.restart(why)

        def relay(self, body: bytes) -> None:
            pieces: queue.Queue[object] = queue.Queue()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            conn = http.client.HTTPConnection("127.0.0.1", upstream.port)

            def fetch() -> None:
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    pieces.put(resp)
                    while chunk := resp.read1(65536):
                        pieces.put(chunk)
                except (OSError, http.client.HTTPException) as exc:
                    pieces.put(exc)
                pieces.put(None)

            threading.Thread(target=fetch, daemon=True).start()
            started = time.monotonic()
            while True:
                try:
                    item = pieces.get(timeout=0.5)
                except queue.Empty:
                    if client_gone(self.connection):
                        self.abandon(conn, f"client left {self.path} after {time.monotonic() - started:.0f}s")
                        return
                    continue
                if item is None:
                    return
                if isinstance(item, Exception):
                    died = upstream.proc is not None and upstream.proc.poll() is not None
                    why = f"the server died (exit code {upstream.proc.returncode})" if died else f"upstream: {item}"
                    self.send_error(502, why)
                    if died:  # a crash (e.g. an unsupported CPU instruction) is not hidden by restarts
                        say(why)
                        os._exit(1)
                    return
                try:
                    if isinstance(item, http.client.HTTPResponse):
                        self.send_response(item.status)
                        for key, value in item.getheaders():
                            if key.lower() not in HOP_BY_HOP:
                                self.send_header(key, value)
                        self.end_headers()
                    else:
                        self.wfile.write(item)  # type: ignore[arg-type]
                        self.wfile.flush()
                except OSError:
                    self.abandon(conn, f"client left {self.path} mid-answer")
                    return

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="public port (127.0.0.1)")
    ap.add_argument("--upstream-port", type=int, required=True, help="port the server command listens on")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the server command")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("the server command is missing (after --)")
    upstream = Upstream(cmd, args.upstream_port)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(upstream))
    server.daemon_threads = True

    def shut(signum: int, frame: object) -> None:
        upstream.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, shut)
    upstream.start()
    say(f"serving on 127.0.0.1:{args.port}, server on :{args.upstream_port}")
    try:
        server.serve_forever()
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
