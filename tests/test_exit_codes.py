"""Every command's documented exit codes, driven through the real CLI (click's CliRunner, or a
subprocess where a terminal matters) against real git repositories and the scripted model server."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, CALC_TEST, FIX_ADD, PYTEST, make_repo
from fake_llm import FakeLLM

from agentloop.cli import cli

NO_MATCH = FIX_ADD.replace("return a - b", "return a * 7", 1)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def invoke(cwd: Path, args: list[str], monkeypatch, stdin: str | None = None):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)


def fixed_repo(path: Path, monkeypatch) -> Path:
    """A calc repository with one accepted run, applied to the tree."""
    repo = make_repo(path, {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = invoke(repo, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--check", PYTEST],
                        monkeypatch)
    assert result.exit_code == 0, result.stderr
    return repo


@pytest.fixture(scope="module")
def repo_with_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        yield fixed_repo(tmp_path_factory.mktemp("runs") / "repo", mp)
    finally:
        mp.undo()


# (arguments, where, documented exit code, words the message must contain)
#   where: "outside" a git repository, or "runs" (a repository with one accepted run, left unchanged)
READ_ONLY_CASES = [
    (["runs"], "outside", 2, "not inside a git repository"),
    (["show", "last"], "outside", 2, "no such run"),
    (["undo", "last"], "outside", 2, "not inside a git repository"),
    (["init"], "outside", 2, "not inside a git repository"),
    (["fix", "--check", "true"], "outside", 2, "not inside a git repository"),
    (["hook", "true"], "outside", 2, "not inside a git repository"),
    (["apply", "reply.txt"], "outside", 2, "not inside a git repository"),
    (["replay", "last"], "outside", 2, "no such run"),
    (["export", "last", "--format", "rlef", "--out", "x.jsonl"], "outside", 2, "no such run"),
    (["runs"], "runs", 0, ""),
    (["runs", "--outcome", "acepted"], "runs", 2, "accepted"),
    (["runs", "--outcome", "accepted", "--json"], "runs", 0, ""),
    (["show", "last"], "runs", 0, "accepted"),
    (["show", "-1"], "runs", 0, "accepted"),
    (["show", "-2"], "runs", 2, "only 1 run"),
    (["show", "nope"], "runs", 2, "no such run"),
    (["export", "-1", "--format", "rlef", "--out", "OUT"], "runs", 0, "wrote 1 row "),
    (["export", "last", "--format", "rlef", "--out", "OUT", "--outcome", "acepted"], "runs", 2, "budget_exhausted"),
    (["replay", "last"], "runs", 0, "every check verdict matches"),
    (["apply", "missing-reply.txt"], "runs", 2, "cannot read"),
    (["fix"], "runs", 2, "no checks to run"),
    (["hook"], "runs", 2, "no checks to run"),
    (["hook", "true"], "runs", 0, "pass"),
    (["nosuchcommand"], "runs", 2, "No such command"),
]


@pytest.mark.parametrize("args,where,code,words", READ_ONLY_CASES,
                         ids=[" ".join(c[0]) + f" ({c[1]})" for c in READ_ONLY_CASES])
def test_documented_exit_code(args, where, code, words, repo_with_run, tmp_path, monkeypatch):
    cwd = tmp_path if where == "outside" else repo_with_run
    args = [str(tmp_path / "out.jsonl") if a == "OUT" else a for a in args]
    result = invoke(cwd, args, monkeypatch)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert words in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_undo_then_undo_again(tmp_path, monkeypatch):
    """Undo restores (0); undoing an undone run says so and still exits 0, as its help says."""
    repo = fixed_repo(tmp_path / "repo", monkeypatch)
    assert "a + b" in (repo / "calc.py").read_text()
    first = invoke(repo, ["undo", "last"], monkeypatch)
    assert first.exit_code == 0 and "restored 1 file(s)" in first.stderr
    assert (repo / "calc.py").read_text() == BUGGY_CALC
    again = invoke(repo, ["undo", "-1"], monkeypatch)
    assert again.exit_code == 0 and "already undone" in again.stderr


def test_undo_refuses_when_the_files_changed_since(tmp_path, monkeypatch):
    repo = fixed_repo(tmp_path / "repo", monkeypatch)
    (repo / "calc.py").write_text("# mine now\n")
    result = invoke(repo, ["undo", "last"], monkeypatch)
    assert result.exit_code == 1 and "--force" in result.stderr
    assert (repo / "calc.py").read_text() == "# mine now\n"


def test_init_twice(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    assert invoke(repo, ["init"], monkeypatch).exit_code == 0
    again = invoke(repo, ["init"], monkeypatch)
    assert again.exit_code == 2 and "--force" in again.stderr


def test_apply_codes(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    refused = invoke(repo, ["apply", "-"], monkeypatch, stdin=NO_MATCH)
    assert refused.exit_code == 1
    assert "nothing was changed: 1 of 1 edit(s) could not be applied" in refused.stdout
    assert "send all the edits again" not in refused.stdout  # that sentence is for the model
    applied = invoke(repo, ["apply"], monkeypatch, stdin=FIX_ADD)
    assert applied.exit_code == 0 and "Changed 1 file(s)" in applied.stdout


def test_apply_on_a_terminal_with_no_file_does_not_wait(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC})
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "agentloop", "apply"], cwd=repo, stdin=follower,
                              capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 2
    assert "give a FILE, or pipe the reply in" in proc.stderr


def test_fix_and_hook_exit_3_when_the_server_is_not_there(calc_repo, monkeypatch):
    (calc_repo / ".agentloop.yaml").write_text(f"checks: [{json.dumps(PYTEST)}]\nretries: 0\n")
    api_base = f"http://127.0.0.1:{unused_port()}/v1"
    fix = invoke(calc_repo, ["fix", "-m", "openai/fake", "--api-base", api_base], monkeypatch)
    assert fix.exit_code == 3, fix.stderr
    hook = invoke(calc_repo, ["hook", "-m", "openai/fake", "--api-base", api_base], monkeypatch)
    assert hook.exit_code == 3, hook.stdout
    assert (calc_repo / "calc.py").read_text() == BUGGY_CALC


def test_every_command_help_states_its_exit_codes():
    """The table above tests the codes; this keeps each command's help saying what they are."""
    from agentloop.cli import COMMANDS

    for name in COMMANDS:
        text = " ".join(CliRunner().invoke(cli, [name, "--help"]).stdout.split())
        assert "xit code" in text or "xit status" in text, name
