"""The warm worker's warm-ups, so that forked rollouts start with litellm warm (one throwaway model
call) and with agentloop's own data read (`warm_caches`).

A fresh process's first `litellm.completion` takes some 100 ms more than the next ones: pydantic
builds the response models' schemas on first use, and the OpenAI client's modules set themselves up.
A rollout forked from the warm worker inherits whatever the worker did, so the worker makes that
first call itself, once, against a server of its own on 127.0.0.1 that answers one canned
completion. No key, no network, no model: nothing of it reaches a rollout but the warm state.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CANNED = {"id": "warm-up", "object": "chat.completion", "created": 0, "model": "warm-up",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class _Canned(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(CANNED).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # not to the worker's stderr
        pass


def warm_up_litellm() -> bool:
    """Make one completion through litellm against a canned local server; False if it failed (the
    rollouts then only pay the first call themselves)."""
    from agentloop.run.model import import_litellm

    litellm = import_litellm()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        litellm.completion(model="openai/warm-up", api_base=f"http://127.0.0.1:{server.server_port}/v1",
                           api_key="warm-up", messages=[{"role": "user", "content": "ok"}], timeout=10,
                           max_retries=0)
        return True
    except Exception:  # noqa: BLE001 - an optimisation only
        return False
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        _forget_event_loop()


def _forget_event_loop() -> None:
    """litellm's service logging made the main thread an asyncio event loop during the call. A forked
    rollout would inherit it with its selector's file closed (the child closes the worker's files) and
    log `Bad file descriptor` at its first call: close it, and start asyncio's state afresh, as in a new
    process."""
    import asyncio

    policy = asyncio.get_event_loop_policy()
    loop = getattr(getattr(policy, "_local", None), "_loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_running():
        loop.close()
    asyncio.set_event_loop_policy(None)


def warm_caches() -> None:
    """Fill, once in the warm worker, the per-process caches every rollout would otherwise fill again
    in its runner (some 40 ms of CPU each): models.yaml and the tool definitions (read once per
    process anyway, see agentloop.run.rules and load_tool_specs), the prompt templates compiled by
    jinja (which still checks each file's mtime on use, so an edited template is read again), and
    the compiled regexes of models.yaml's rules and of the default protected patterns."""
    import re

    from agentloop.data import data_dir
    from agentloop.edits.paths import is_protected
    from agentloop.run import feedback, rules, toolbox
    from agentloop.workspace.guard import HARNESS, RUNNERS

    for rule in rules._table().get("rules") or []:
        if isinstance(rule, dict) and isinstance(rule.get("match"), str):
            re.compile(rule["match"])
    toolbox.load_tool_specs()
    environment = feedback._environment()
    for template in sorted(p.name for p in data_dir("prompts").glob("*.j2")):
        environment.get_template(template)
    is_protected("x", [*HARNESS, *(p for patterns in RUNNERS.values() for p in patterns)])
