"""`agentloop fix` end to end: real git repos, real pytest, real litellm HTTP to a scripted server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PYTEST, git
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.record.trajectory import read_events

FIX_ADD = """I will fix add.

calc.py
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
"""
WRONG_FIX = """calc.py
<<<<<<< SEARCH
    return a - b
=======
    return a - b + 0
>>>>>>> REPLACE
"""
FIX_FROM_WRONG = FIX_ADD.replace("a - b", "a - b + 0")
UDIFF_FIX = """Here is the patch:

```diff
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
```
"""


def run_fix(repo: Path, server: FakeLLM, *args: str, monkeypatch) -> tuple[int, dict, str]:
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base,
                                      "--json", *args], catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.exit_code, summary, result.stderr


def user_messages(request: dict) -> str:
    return "\n".join(str(m.get("content")) for m in request["messages"] if m["role"] in ("user", "tool"))


def test_wrong_fix_then_right_fix(calc_repo, monkeypatch):
    with FakeLLM([{"content": WRONG_FIX}, {"content": FIX_FROM_WRONG}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0, err
    assert summary["outcome"] == "accepted"
    assert summary["turns"] == 2
    assert (calc_repo / "calc.py").read_text().count("return a + b") == 1
    # The second request carries the first turn's failing output and exit code.
    second = user_messages(server.requests[1])
    assert "failed with exit code 1" in second
    assert "assert -1 == 5" in second
    # One progress line per turn, then a summary.
    assert err.count("turn ") >= 2 and "accepted" in err
    events = read_events(Path(summary["trajectory"]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "header" and kinds[-1] == "outcome"
    assert kinds.count("model_call") == 2 and "check" in kinds and "edits" in kinds
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["outcome"] == "accepted" and saved["prompt_tokens"] == 200


def test_budget_stop_when_the_model_never_fixes_it(calc_repo, monkeypatch):
    with FakeLLM([{"content": WRONG_FIX}, {"content": FIX_FROM_WRONG.replace("a + b", "a - b + 1")}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, "--max-turns", "3",
                                   monkeypatch=monkeypatch)
    assert code == 1
    assert summary["outcome"] == "budget_exhausted"
    assert summary["turns"] == 3
    assert len(server.requests) == 3


def test_garbage_replies_give_up(calc_repo, monkeypatch):
    with FakeLLM([{"content": "I think the bug is somewhere in the code. Good luck!"}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 1
    assert summary["outcome"] == "gave_up"
    assert len(server.requests) == 3  # max_format_errors
    # Format-error feedback shows a correct example against the real file.
    assert "<<<<<<< SEARCH" in user_messages(server.requests[1])
    assert "calc.py" in user_messages(server.requests[1])


def test_rate_limit_is_retried(calc_repo, monkeypatch):
    with FakeLLM([{"status": 429, "error": "rate limited"}, {"content": FIX_ADD}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted"
    assert len(server.requests) == 2
    call = next(e for e in read_events(Path(summary["trajectory"])) if e["type"] == "model_call")
    assert [a["status"] for a in call["reply"]["attempts"]] == [429, None]


def test_authentication_error_is_not_retried(calc_repo, monkeypatch):
    with FakeLLM([{"status": 401, "error": "bad key"}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 3 and summary["outcome"] == "error"
    assert len(server.requests) == 1
    assert "Traceback" not in err


def test_model_reads_a_file_before_editing(calc_repo, monkeypatch):
    script = [{"tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}}]}, {"content": FIX_ADD}]
    with FakeLLM(script) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0
    assert summary["turns"] == 1 and summary["model_calls"] == 2
    tool_message = server.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and "return a - b" in tool_message["content"]
    assert any(t["function"]["name"] == "read_file" for t in server.requests[0]["tools"])


def test_unified_diff_reply(calc_repo, monkeypatch):
    with FakeLLM([{"content": UDIFF_FIX}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted"
    assert "return a + b" in (calc_repo / "calc.py").read_text()


def test_accept_output_never_reaches_the_model(calc_repo, monkeypatch):
    secret_check = "echo HIDDEN-ACCEPTANCE-OUTPUT; test -f done.txt"
    with FakeLLM([{"content": FIX_ADD}, {"content": WRONG_FIX}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, "--accept", secret_check,
                                   "--max-turns", "2", monkeypatch=monkeypatch)
    assert code == 1 and summary["outcome"] == "budget_exhausted"
    sent = json.dumps(server.requests)
    assert "HIDDEN-ACCEPTANCE-OUTPUT" not in sent
    assert "test -f done.txt" not in sent
    assert "other requirements of the task still fail" in user_messages(server.requests[1])
    checks = [e for e in read_events(Path(summary["trajectory"])) if e["type"] == "check"]
    assert any("HIDDEN-ACCEPTANCE-OUTPUT" in c["output"] for c in checks)  # recorded, just not shown


def test_checks_already_passing_need_no_model(calc_repo, monkeypatch):
    (calc_repo / "calc.py").write_text((calc_repo / "calc.py").read_text().replace("a - b", "a + b"))
    with FakeLLM([{"content": "unused"}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0 and summary["turns"] == 0 and server.requests == [], _


def test_user_changes_survive_and_no_key_is_recorded(calc_repo, monkeypatch):
    (calc_repo / "notes.txt").write_text("my uncommitted notes\n")
    with open(calc_repo / "calc.py", "a") as fh:
        fh.write("\n\ndef sub(a, b):\n    return -(b - a)\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value-1234567890")
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0
    assert (calc_repo / "notes.txt").read_text() == "my uncommitted notes\n"
    assert "def sub(a, b):\n    return -(b - a)" in (calc_repo / "calc.py").read_text()
    run_dir = Path(summary["run_dir"])
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert "sk-test-secret-value-1234567890" not in path.read_text()
    # The run directory is kept out of git without touching the user's .gitignore.
    assert ".agentloop" not in git(calc_repo, "status", "--porcelain")
    assert not (calc_repo / ".gitignore").exists()


def test_no_checks_is_a_usage_error(calc_repo, monkeypatch):
    monkeypatch.chdir(calc_repo)
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake"])
    assert result.exit_code == 2
    assert "no checks" in result.stderr and "--check" in result.stderr


def test_checks_from_config_file(calc_repo, monkeypatch):
    (calc_repo / ".agentloop.yaml").write_text(f"checks:\n  - run: {PYTEST}\nbudget:\n  max_turns: 2\n")
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, _ = run_fix(calc_repo, server, monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted"


@pytest.mark.parametrize("text, expected", [
    ("checks: [\n", "fix the YAML syntax"),
    ("budget:\n  max_turns: many\n", "budget.max_turns' must be a whole number"),
    ("modle: gpt\n", "'modle' is not a setting"),
    ("checks:\n  - {cmd: x}\n", "unknown field"),
])
def test_bad_config_is_one_line_and_exit_2(calc_repo, monkeypatch, text, expected):
    (calc_repo / ".agentloop.yaml").write_text(text)
    monkeypatch.chdir(calc_repo)
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake"])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_model_with_failing_checks(calc_repo, monkeypatch):
    monkeypatch.chdir(calc_repo)
    result = CliRunner().invoke(cli, ["fix", "--check", PYTEST, "--json"])
    assert result.exit_code == 2
    assert "no model is configured" in result.stderr


def test_server_error_is_retried_and_every_attempt_recorded(calc_repo, monkeypatch):
    with FakeLLM([{"status": 503, "error": "overloaded"}, {"status": 500}, {"content": FIX_ADD}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0 and len(server.requests) == 3
    call = next(e for e in read_events(Path(summary["trajectory"])) if e["type"] == "model_call")
    assert [a["status"] for a in call["reply"]["attempts"]] == [503, 500, None]


def test_context_window_error_is_not_retried(calc_repo, monkeypatch):
    error = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."
    with FakeLLM([{"status": 400, "error": error}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 3 and summary["outcome"] == "error" and len(server.requests) == 1
    assert "ContextWindowExceeded" in summary["reason"] or "context length" in summary["reason"]
