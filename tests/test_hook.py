"""`agentloop hook` in process and in a subprocess: pass path, no-model path, repair path, {files}, env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PYTEST, git, make_repo
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.commands.hook import MODEL_LINE, diff_stat, explanation, restore_user_path

FIX_ADD = """add() subtracts instead of adding; make it add.

calc.py
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
"""
WRONG_FIX = FIX_ADD.replace("a + b", "a - b + 0")


def run_hook(repo: Path, *args: str, monkeypatch, env: dict[str, str] | None = None):
    monkeypatch.chdir(repo)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(cli, ["hook", *args], catch_exceptions=False)


def status(repo: Path) -> str:
    return git(repo, "status", "--porcelain")


def test_pass_path_exits_0_and_never_imports_litellm(calc_repo):
    """A subprocess, so sys.modules is fresh: the pass path must not load litellm, the model or the loop."""
    (calc_repo / "calc.py").write_text((calc_repo / "calc.py").read_text().replace("a - b", "a + b"))
    code = ("import sys\n"
            "from agentloop.cli import cli\n"
            "try:\n"
            f"    cli(['hook', {PYTEST!r}])\n"
            "except SystemExit as exc:\n"
            "    heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'litellm' or m in\n"
            "                   ('agentloop.run.loop', 'agentloop.run.model', 'agentloop.run.session',\n"
            "                    'openai', 'httpx'))\n"
            "    print('RESULT', exc.code, heavy)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOOP_")}
    env["AGENTLOOP_MODEL"] = "openai/fake"  # a model is configured, and still nothing heavy is imported
    proc = subprocess.run([sys.executable, "-c", code], cwd=calc_repo, capture_output=True, text=True, env=env)
    assert "RESULT 0 []" in proc.stdout, proc.stdout + proc.stderr
    assert "1 check(s) pass" in proc.stdout
    assert not (calc_repo / ".agentloop").exists()  # no run recorded when nothing was wrong


def test_no_model_prints_the_failure_and_one_config_line(calc_repo, monkeypatch):
    result = run_hook(calc_repo, PYTEST, monkeypatch=monkeypatch)
    assert result.exit_code == 1
    assert "check failed (exit 1)" in result.stdout
    assert "assert -1 == 5" in result.stdout  # the failing output itself
    assert result.stdout.rstrip().splitlines()[-1] == MODEL_LINE
    assert status(calc_repo) == ""  # nothing written, not even a run


def test_repair_leaves_the_fix_unstaged_and_exits_1(calc_repo, tmp_path, monkeypatch):
    (calc_repo / "notes.txt").write_text("staged work\n")
    git(calc_repo, "add", "notes.txt")
    staged_before = git(calc_repo, "diff", "--cached")
    counter = tmp_path / "runs.txt"
    check = f"echo run >> {counter} && {PYTEST}"
    monkeypatch.setenv("AGENTLOOP_SANDBOX", "off")  # the counter lies outside the repo, which the sandbox keeps out
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = run_hook(calc_repo, check, "-m", "openai/fake", "--api-base", server.api_base,
                          monkeypatch=monkeypatch)
    assert result.exit_code == 1, result.stdout
    assert "return a + b" in (calc_repo / "calc.py").read_text()
    assert git(calc_repo, "diff", "--cached") == staged_before  # nothing staged by agentloop
    assert " M calc.py" in status(calc_repo).splitlines()  # modified in the tree, not in the index
    assert "fixed after 1 turn(s)" in result.stdout
    assert "why: add() subtracts instead of adding" in result.stdout
    assert "calc.py (+1 -1)" in result.stdout and "+    return a + b" in result.stdout
    assert "NOT staged" in result.stdout
    assert git(calc_repo, "log", "--oneline").count("\n") == 1  # no commit made
    # The loop ran with the hook's small budget and in place.
    trajectory = next((calc_repo / ".agentloop" / "runs").glob("*/trajectory.jsonl"))
    events = [json.loads(line) for line in trajectory.read_text().splitlines()]
    assert events[0]["budget"]["max_turns"] == 3 and events[0]["config"]["in_place"] is True
    # The hook's own first run of the checks is the loop's starting point: run twice in all, not three times.
    assert counter.read_text().count("run") == 2
    first = next(e for e in events if e["type"] == "check")
    assert first["turn"] == 0 and not first["passed"] and "assert -1 == 5" in first["output"]
    assert "assert -1 == 5" in (trajectory.parent / first["output_file"]).read_text()


def test_failed_repair_puts_the_files_back(calc_repo, monkeypatch):
    (calc_repo / "calc.py").write_text((calc_repo / "calc.py").read_text() + "# my unstaged note\n")
    before = (calc_repo / "calc.py").read_text()
    with FakeLLM([{"content": WRONG_FIX}, {"content": FIX_ADD.replace("a - b", "a - b + 0")
                                           .replace("a + b", "a - b + 1")}]) as server:
        result = run_hook(calc_repo, PYTEST, "--max-turns", "2", monkeypatch=monkeypatch,
                          env={"AGENTLOOP_MODEL": "openai/fake", "AGENTLOOP_API_BASE": server.api_base})
    assert result.exit_code == 1
    assert len(server.requests) == 2  # --max-turns beats the hook's default of 3
    assert "not fixed (max_turns (2) reached)" in result.stdout
    assert "your files are as they were" in result.stdout
    assert (calc_repo / "calc.py").read_text() == before  # the user's own edit survives
    saved = next((calc_repo / ".agentloop" / "runs").glob("*/final.patch")).read_text()
    assert "a - b + 1" in saved


def test_hook_section_sets_checks_and_budget(calc_repo, monkeypatch):
    (calc_repo / ".agentloop.yaml").write_text(
        f"checks: ['false']\nhook:\n  max_turns: 1\n  checks: [{json.dumps(PYTEST)}]\n")
    git(calc_repo, "add", ".agentloop.yaml")
    with FakeLLM([{"content": WRONG_FIX}]) as server:
        result = run_hook(calc_repo, "-m", "openai/fake", "--api-base", server.api_base, monkeypatch=monkeypatch)
    assert result.exit_code == 1
    assert f"failed ({PYTEST})" in result.stdout  # hook.checks, not checks
    assert len(server.requests) == 1  # hook.max_turns


def test_bad_hook_section_is_one_line(calc_repo, monkeypatch):
    (calc_repo / ".agentloop.yaml").write_text("hook:\n  max_turnz: 1\n")
    monkeypatch.chdir(calc_repo)
    result = CliRunner().invoke(cli, ["hook", "true"])
    assert result.exit_code == 2
    assert "'hook.max_turnz' is not a hook setting" in result.stderr


def test_no_checks_is_a_usage_error(calc_repo, monkeypatch):
    result = run_hook(calc_repo, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and "no checks to run" in result.stderr


def test_files_placeholder_gets_the_staged_files_quoted(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"})
    (repo / "odd name.txt").write_text("x\n")
    (repo / "b.txt").write_text("unstaged\n")
    (repo / "a.txt").write_text("changed\n")
    git(repo, "add", "odd name.txt", "a.txt")
    out = tmp_path / "args.json"
    script = tmp_path / "record.py"
    script.write_text(f"import json, sys\njson.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n")
    check = f"{sys.executable} {script} {{files}}"
    result = run_hook(repo, check, monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stdout
    assert sorted(json.loads(out.read_text())) == ["a.txt", "odd name.txt"]


def test_files_placeholder_with_nothing_staged_skips_the_check(calc_repo, monkeypatch):
    result = run_hook(calc_repo, "false {files}", monkeypatch=monkeypatch)
    assert result.exit_code == 0
    assert "skipped: no staged files" in result.stdout


def test_restore_user_path_undoes_the_hook_venv(tmp_path):
    hook_env = tmp_path / "repoabc" / "py_env-python3.11"
    (hook_env / "bin").mkdir(parents=True)
    (hook_env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    user_venv = tmp_path / "myproject" / ".venv"
    (user_venv / "bin").mkdir(parents=True)
    (user_venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (user_venv / "bin" / "python").write_text("")
    environ = {"PATH": os.pathsep.join([str(hook_env / "bin"), str(user_venv / "bin"), "/usr/bin"]),
               "VIRTUAL_ENV": str(hook_env)}
    assert restore_user_path(environ, prefix=str(hook_env))
    assert environ == {"PATH": os.pathsep.join([str(user_venv / "bin"), "/usr/bin"]), "VIRTUAL_ENV": str(user_venv)}
    # Not a pre-commit environment (e.g. agentloop installed in the user's own venv): left alone.
    environ = {"PATH": str(user_venv / "bin"), "VIRTUAL_ENV": str(user_venv)}
    assert not restore_user_path(environ, prefix=str(user_venv))
    assert environ == {"PATH": str(user_venv / "bin"), "VIRTUAL_ENV": str(user_venv)}


@pytest.mark.parametrize("reply, why", [
    (FIX_ADD, "add() subtracts instead of adding; make it add."),
    ("```diff\n--- a/x\n+++ b/x\n```", ""),
    ("The fix:\n\n```python\nx = 1\n```", "The fix:"),
])
def test_explanation_is_the_prose_before_the_edit(reply, why):
    assert explanation(reply) == why


def test_diff_stat_counts_lines():
    diff = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1,2 @@\n-a\n+b\n+c\n"
    assert diff_stat(diff) == [("x.py", 2, 1)]
