"""Files git neither tracks nor has staged stay with the user: not listed to the model, not readable
by its tools, unless --include-untracked; the checks still see them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import PYTEST, git
from fake_llm import FakeLLM

from agentloop.cli import cli

FIX_ADD = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
SECRET = "my private notes: the password is hunter2"
SCRIPT = [{"tool_calls": [{"name": "read_file", "arguments": {"path": "NOTES.local.txt"}},
                          {"name": "search", "arguments": {"pattern": "hunter2"}},
                          {"name": "list_files", "arguments": {}}]},
          {"content": FIX_ADD}]

# The check proves the file is in the workspace without naming it (its command is shown to the model).
SEES_NOTES = "python3 -c \"import pathlib; assert pathlib.Path('NOTES' + '.local.txt').is_file()\""


def run(repo: Path, *flags: str) -> tuple[int, FakeLLM]:
    with FakeLLM(SCRIPT) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, *flags,
                                          "--check", f"{SEES_NOTES} && {PYTEST}"],
                                    catch_exceptions=False)
    return result.exit_code, server


def prepare(calc_repo: Path, monkeypatch) -> None:
    monkeypatch.chdir(calc_repo)
    (calc_repo / "NOTES.local.txt").write_text(SECRET + "\n")
    (calc_repo / "staged_new.py").write_text("VALUE = 1\n")
    git(calc_repo, "add", "staged_new.py")


def test_untracked_files_are_not_shared_by_default(calc_repo, monkeypatch):
    prepare(calc_repo, monkeypatch)
    code, server = run(calc_repo)
    assert code == 0  # the check found the file: it is in the workspace
    sent = json.dumps(server.requests)
    assert "hunter2" not in sent.replace('"pattern": "hunter2"', "").replace('\\"pattern\\": \\"hunter2\\"', "")
    assert "NOTES.local.txt" not in server.requests[0]["messages"][1]["content"]  # not in the file list
    assert "staged_new.py" in server.requests[0]["messages"][1]["content"]  # staged: shared
    tool_answers = [m["content"] for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_answers[0] == "error: NOTES.local.txt: no such file"
    assert "NOTES.local.txt" not in tool_answers[2] and "staged_new.py" in tool_answers[2]
    assert (calc_repo / "NOTES.local.txt").read_text() == SECRET + "\n"


def test_include_untracked_shares_them(calc_repo, monkeypatch):
    prepare(calc_repo, monkeypatch)
    code, server = run(calc_repo, "--include-untracked")
    assert code == 0
    assert "NOTES.local.txt" in server.requests[0]["messages"][1]["content"]
    tool_answers = [m["content"] for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert "hunter2" in tool_answers[0]
