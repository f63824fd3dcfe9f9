"""Provider failures name their cause and the next step, through the real CLI and real HTTP
(tests/fake_llm.py, or a loopback port nothing listens on)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from click.testing import CliRunner
from conftest import PYTEST
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.record.trajectory import read_events
from agentloop.run.model import key_variable, short_text


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fix(repo: Path, api_base: str, monkeypatch, model: str = "openai/fake") -> tuple[int, dict, str]:
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["fix", "-m", model, "--api-base", api_base, "--json", "--check", PYTEST],
                                catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def attempts(summary: dict) -> list[dict]:
    call = next(e for e in read_events(Path(summary["trajectory"])) if e["type"] == "model_call")
    return call["attempts"]


def test_refused_on_loopback_names_the_url_and_is_retried_once(calc_repo, monkeypatch):
    api_base = f"http://127.0.0.1:{unused_port()}/v1"
    code, s, err = fix(calc_repo, api_base, monkeypatch)
    assert code == 3 and s["outcome"] == "error"
    assert f"cannot connect to the model server at {api_base}: connection refused; is the server running?" in err
    assert len(attempts(s)) == 2  # not the 5 attempts (~25 s) a flaky remote provider gets
    assert "InternalServerError" not in err and "after 1 turns" not in err


def test_401_says_which_variable_holds_the_key(calc_repo, monkeypatch):
    with FakeLLM([{"status": 401, "error": "Incorrect API key provided"}]) as server:
        code, s, err = fix(calc_repo, server.api_base, monkeypatch)
    assert code == 3
    assert "refused the API key (401): check OPENAI_API_KEY" in err


def test_unknown_model_lists_what_the_server_has(calc_repo, monkeypatch):
    with FakeLLM([{"content": "unused"}], models=["qwen2.5-coder-1.5b", "llama-3-8b"], strict_models=True) as server:
        code, s, err = fix(calc_repo, server.api_base, monkeypatch, model="openai/qwen-coder")
    assert code == 3
    assert (f"model 'qwen-coder' not found on {server.api_base}; the server lists: qwen2.5-coder-1.5b, llama-3-8b "
            "(pass e.g. -m openai/qwen2.5-coder-1.5b)") in err
    assert server.model_list_requests == 1


def test_a_body_that_is_not_json_is_one_short_sentence(calc_repo, monkeypatch):
    with FakeLLM([{"raw": "<html>this is a web page, not an API</html>"}]) as server:
        code, s, err = fix(calc_repo, server.api_base, monkeypatch)
    assert code == 3
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert f"the model server at {server.api_base} answered with something that is not valid JSON" in line
    assert "Received response" not in err and "OpenAIException" not in err
    assert len(line) < 300
    assert len(server.requests) == 1  # a wrong URL does not heal in a retry


def test_key_variable_follows_the_provider():
    assert key_variable("anthropic/claude-sonnet-4-5", None) == "ANTHROPIC_API_KEY"
    assert key_variable("gpt-4.1-mini", None) == "OPENAI_API_KEY"
    assert key_variable("openai/local", "http://127.0.0.1:8080/v1").startswith("OPENAI_API_KEY")


def test_short_text_cuts_at_a_word_and_drops_litellm_prefixes():
    text = "litellm.APIError: APIError: OpenAIException - " + "word " * 100
    short = short_text(text, 50)
    assert short.startswith("word") and short.endswith(" ...") and len(short) <= 54
    assert "wor ..." not in short
