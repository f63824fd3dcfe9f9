"""Structured grading of pytest checks, the default protected harness, and flags that count.

Real pytest subprocesses in real temporary repositories; whole runs through `agentloop fix` and the
scripted model where the loop matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PYTEST, make_repo
from fake_llm import FakeLLM
from test_fix_e2e import run_fix

from agentloop.cli import cli
from agentloop.config import load_config
from agentloop.errors import ConfigError
from agentloop.workspace import grading
from agentloop.workspace.guard import HARNESS, default_protected, literals_of, protected_patterns, scan_diff, text_diff
from agentloop.workspace.repo import Workspace

CALC = "def add(a, b):\n    return a - b\n"
TESTS = ("from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
         "def test_zero():\n    assert add(0, 0) == 0\n")
PY = sys.executable


def graded_run(repo: Path, command: str, kind: str = "auto") -> tuple[int, grading.Report]:
    graded = grading.prepare(command, kind, dict(os.environ))
    assert graded is not None
    proc = subprocess.run(graded.command, shell=True, cwd=repo, env=graded.env, capture_output=True, text=True)
    return proc.returncode, graded.read()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TESTS})


# -- which checks are graded ---------------------------------------------------------------------

@pytest.mark.parametrize("command", ["python -m pytest -q", "python3 -m pytest", "pytest -x", "py.test",
                                     f"{PY} -m pytest -q -p no:cacheprovider", "PYTHONPATH=src python -m pytest",
                                     "/usr/bin/python3.11 -m pytest tests/"])
def test_pytest_commands_are_detected(command):
    assert grading.is_pytest(command)


@pytest.mark.parametrize("command", ["make test", "npm test", "python -m unittest", "ruff check .",
                                     "cd sub && python -m pytest", "python -m pytest | tee log", "echo pytest",
                                     "python -c 'import pytest'"])
def test_other_commands_keep_the_exit_code(command):
    assert not grading.is_pytest(command)
    assert grading.prepare(command, "auto", {}) is None


def test_kind_command_opts_out_and_kind_pytest_opts_in(repo):
    assert grading.prepare(PYTEST, "command", {}) is None
    (repo / "Makefile").write_text(f"test:\n\t{PY} -m pytest -q -p no:cacheprovider\n")
    code, report = graded_run(repo, "make test", kind="pytest")  # through the environment: make runs pytest
    assert code != 0 and report.complete
    assert report.outcomes == {"test_calc.py::test_add": "failed", "test_calc.py::test_zero": "passed"}


def test_config_kind_and_allow_test_edits(tmp_path):
    (tmp_path / ".agentloop.yaml").write_text("allow_test_edits: true\nchecks:\n  - {run: make test, kind: pytest}\n")
    config = load_config(tmp_path)
    assert config.allow_test_edits and config.checks[0].kind == "pytest"
    (tmp_path / ".agentloop.yaml").write_text("checks:\n  - {run: make test, kind: junit}\n")
    with pytest.raises(ConfigError, match=r"checks\[0\]\.kind.*auto, pytest, command"):
        load_config(tmp_path)
    (tmp_path / ".agentloop.yaml").write_text("allow_test_edits: sure\n")
    with pytest.raises(ConfigError, match="allow_test_edits"):
        load_config(tmp_path)


# -- the verdict -----------------------------------------------------------------------------------

def test_a_real_failure_and_a_real_pass(repo):
    code, start = graded_run(repo, PYTEST)
    assert code == 1 and "1 test(s) failed" in grading.verdict(start, None)
    (repo / "calc.py").write_text(CALC.replace("a - b", "a + b"))
    code, now = graded_run(repo, PYTEST)
    assert code == 0 and grading.verdict(now, start) == ""
    assert grading.summary(now, "")["counts"] == {"passed": 2}


def test_exit_code_forged_at_exit_does_not_pass(repo):
    (repo / "calc.py").write_text('import atexit, os\natexit.register(getattr(os, "_" + "exit"), 0)\n' + CALC)
    code, report = graded_run(repo, PYTEST)
    assert code == 0  # the forgery works on the exit code ...
    assert "failed" in grading.verdict(report, None)  # ... not on the report


def test_an_exit_before_the_session_ends_leaves_no_complete_report(repo):
    (repo / "calc.py").write_text("import os\n" + CALC.replace("return a - b", "os._exit(0)"))
    code, report = graded_run(repo, PYTEST)
    assert code == 0 and not report.complete
    assert "did not finish" in grading.verdict(report, None)


@pytest.mark.parametrize("shadow", ["pytest.py", "pytest/__init__.py", "_pytest/__init__.py"])
def test_a_runner_shadowed_in_the_repository_is_not_used(repo, shadow):
    (repo / shadow).parent.mkdir(exist_ok=True)
    (repo / shadow).write_text('import sys\nprint("2 passed")\nsys.exit(0)\n')
    code, report = graded_run(repo, PYTEST)
    assert code == 1 and report.outcomes["test_calc.py::test_add"] == "failed"


def test_sitecustomize_on_pythonpath_fails_the_check(repo):
    (repo / "sitecustomize.py").write_text("X = 1\n")
    (repo / "calc.py").write_text(CALC.replace("a - b", "a + b"))
    code, report = graded_run(repo, f"PYTHONPATH=. {PYTEST}")
    assert code == 0 and "sitecustomize" in grading.verdict(report, None)


def test_tests_that_ran_at_the_start_must_run_again_and_pass(repo):
    _, start = graded_run(repo, PYTEST)
    (repo / "calc.py").write_text(CALC.replace("a - b", "a + b"))
    code, deselected = graded_run(repo, f"{PYTEST} -k zero")
    assert code == 0 and "test_calc.py::test_add (did not run)" in grading.verdict(deselected, start)
    (repo / "conftest.py").write_text("import pytest\n\n\ndef pytest_collection_modifyitems(items):\n"
                                      "    items[0].add_marker(pytest.mark.skip)\n")
    code, skipped = graded_run(repo, PYTEST)
    assert code == 0 and "(skipped)" in grading.verdict(skipped, start)
    (repo / "conftest.py").write_text("def pytest_sessionfinish(session):\n    session.exitstatus = 0\n")
    (repo / "calc.py").write_text(CALC)
    code, forced = graded_run(repo, PYTEST)
    assert code == 0 and "failed" in grading.verdict(forced, start)
    (repo / "conftest.py").unlink()
    code, collect_only = graded_run(repo, f"{PYTEST} --co")
    assert code == 0 and "no test passed" in grading.verdict(collect_only, start)


def test_a_newly_skipped_test_fails_and_a_baseline_skip_does_not(tmp_path):
    tests = TESTS + "\n\nimport pytest\n\n\n@pytest.mark.skip\ndef test_later():\n    pass\n"
    repo = make_repo(tmp_path / "r", {"calc.py": CALC.replace("a - b", "a + b"), "test_calc.py": tests})
    _, start = graded_run(repo, PYTEST)
    assert grading.verdict(start, None) == ""
    _, again = graded_run(repo, PYTEST)
    assert grading.verdict(again, start) == ""
    (repo / "calc.py").write_text("import pytest\npytest.skip('no', allow_module_level=True)\n")
    _, module_skipped = graded_run(repo, PYTEST)
    assert grading.verdict(module_skipped, start)


def test_forged_or_stale_report_lines_are_rejected(tmp_path):
    path = tmp_path / "report.jsonl"
    good = ['{"n": "abc", "event": "start"}', '{"n": "abc", "event": "test", "id": "t::a", "when": "call", '
            '"outcome": "passed"}', '{"n": "abc", "event": "end", "exitstatus": 0}']
    path.write_text("\n".join(good) + "\n")
    assert grading.verdict(grading.parse_report(path, "abc"), None) == ""
    assert "nonce" in grading.verdict(grading.parse_report(path, "other"), None)
    path.write_text("\n".join(good + [good[1]]) + "\n")
    assert "tampered" in grading.verdict(grading.parse_report(path, "abc"), None)
    assert "did not finish" in grading.verdict(grading.parse_report(tmp_path / "missing", "abc"), None)


# -- whole runs ------------------------------------------------------------------------------------

FIX = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
FORGE = ("calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n=======\nimport atexit\nimport os\n\n"
         "atexit.register(getattr(os, '_' + 'exit'), 0)\n\n\ndef add(a, b):\n>>>>>>> REPLACE\n")
GUT = ("test_calc.py\n<<<<<<< SEARCH\n    assert add(2, 3) == 5\n=======\n    pass\n>>>>>>> REPLACE\n")


def test_a_forged_exit_code_is_not_accepted_and_the_model_is_told_why(repo, monkeypatch):
    with FakeLLM([{"content": FORGE}, {"content": FIX}]) as server:
        code, summary, err = run_fix(repo, server, "--check", PYTEST, "--sandbox", "off", monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted" and summary["turns"] == 2, err
    told = str(server.requests[1]["messages"][-1]["content"])
    assert "this check did not pass" in told and "test_calc.py::test_add" in told
    events = [json.loads(line) for line in Path(summary["trajectory"]).read_text().splitlines()]
    checks = [e for e in events if e["type"] == "check"]
    assert checks[1]["exit_code"] == 0 and not checks[1]["passed"] and checks[1]["grade"]["ok"] is False
    assert checks[-1]["passed"] and checks[-1]["grade"]["counts"] == {"passed": 2}
    # The forgery stays flagged though the fix came later: such a run is never rewarded.
    assert summary["flags"] == {"exit_trick": 1} and summary["reward"] < 0


def test_an_edit_to_a_test_is_refused_with_a_reason_unless_allowed(repo, monkeypatch):
    with FakeLLM([{"content": GUT}, {"content": FIX}]) as server:
        code, summary, _ = run_fix(repo, server, "--check", PYTEST, "--sandbox", "off", monkeypatch=monkeypatch)
    assert code == 0 and summary["turns"] == 2 and summary["reward"] > 0 and not summary["flags"]
    told = str(server.requests[1]["messages"][-1]["content"])
    assert "test_calc.py" in told and "protected" in told
    assert (repo / "test_calc.py").read_text() == TESTS


def test_a_gutted_test_run_exports_flagged_and_unrewarded(repo, monkeypatch, tmp_path):
    gut_all = GUT + "\n" + GUT.replace("add(2, 3) == 5", "add(0, 0) == 0")
    with FakeLLM([{"content": gut_all}]) as server:
        code, summary, err = run_fix(repo, server, "--check", PYTEST, "--sandbox", "off", "--allow-test-edits",
                                     monkeypatch=monkeypatch)
    assert summary["outcome"] == "accepted", err
    assert summary["flags"]["deleted_assertion"] == 2 and summary["reward"] == -1.0
    runs = CliRunner().invoke(cli, ["runs"])
    assert "FLAGGED deleted_assertion" in runs.output
    shown = CliRunner().invoke(cli, ["show", summary["run_id"]])
    assert "FLAGGED deleted_assertion x2" in shown.output
    for fmt in ("rlef", "openai-sft", "trl-sft", "atif"):
        out = tmp_path / f"{fmt}.jsonl"
        result = CliRunner().invoke(cli, ["export", ".agentloop/runs", "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        row = json.loads(out.read_text())
        flags = row["extra"]["flags"] if fmt == "atif" else row["flags"]
        assert flags == ["deleted_assertion"]
        if fmt in ("rlef", "atif"):
            reward = row["extra"]["reward"] if fmt == "atif" else row["reward"]
            assert reward <= 0
        dropped = CliRunner().invoke(cli, ["export", ".agentloop/runs", "--format", fmt, "--out", str(out),
                                           "--exclude-flagged"])
        assert dropped.exit_code == 0 and out.read_text() == ""
    assert CliRunner().invoke(cli, ["export", ".agentloop/runs", "--format", "rlef", "--out", str(out),
                                    "--min-reward", "1"]).exit_code == 0
    assert out.read_text() == ""


def test_an_older_flagged_run_is_not_exported_with_a_positive_reward(repo, monkeypatch, tmp_path):
    """Runs recorded before flags lowered the reward (footer reward 1.0 with flags) export unrewarded."""
    with FakeLLM([{"content": FIX}]) as server:
        _, summary, _ = run_fix(repo, server, "--check", PYTEST, "--sandbox", "off", monkeypatch=monkeypatch)
    path = Path(summary["trajectory"])
    lines = path.read_text().splitlines()
    footer = json.loads(lines[-1])
    footer["flags"], footer["reward"] = {"deleted_assertion": 1}, 1.0
    path.write_text("\n".join([*lines[:-1], json.dumps(footer)]) + "\n")
    out = tmp_path / "rlef.jsonl"
    assert CliRunner().invoke(cli, ["export", ".agentloop/runs", "--format", "rlef", "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["reward"] == -1.0


# -- the default protected harness -------------------------------------------------------------------

def test_default_protection_follows_the_checks_and_the_pytest_config(tmp_path):
    assert default_protected(tmp_path, ["python -m pytest"]) == list(HARNESS)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert "/pyproject.toml" not in default_protected(tmp_path, [])
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = '-q'\n")
    found = default_protected(tmp_path, ["make -C . test", "cd web && npm test"])
    assert {"/pyproject.toml", "/Makefile", "/package.json"} <= set(found)
    assert protected_patterns(tmp_path, ["docs/**"], [], allow_test_edits=True) == ["docs/**"]
    assert protected_patterns(tmp_path, ["docs/**"], [], allow_test_edits=False)[-1] == "docs/**"


def test_protected_files_hidden_by_gitignore_are_still_seen(tmp_path):
    from agentloop.workspace.guard import ProtectedFiles

    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TESTS, ".gitignore": "conftest.py\n"})
    ws = Workspace(repo)
    guard = ProtectedFiles(repo, default_protected(repo, [PYTEST]), ws.snapshot())
    (repo / "conftest.py").write_text("X = 1\n")
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "test_calc.cpython-311.pyc").write_bytes(b"\0")
    assert guard.changed(ws.list_files()) == ["conftest.py"]


# -- flags -------------------------------------------------------------------------------------------

def test_text_diff_sees_through_gitattributes_and_scan_flags_the_tricks(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TESTS})
    ws = Workspace(repo)
    start = ws.snapshot()
    (repo / ".gitattributes").write_text("*.py -diff\n")
    (repo / "test_calc.py").write_text(TESTS.replace("assert add(2, 3) == 5", "pass"))
    (repo / "calc.py").write_text('import sys\n\n\ndef add(a, b):\n    if "pytest" in sys.modules and a == 10 '
                                  'and b == 7:\n        return a + b\n    return a - b\n')
    assert "GIT binary patch" not in ws.diff(start)  # agentloop's own diff ignores the attributes too
    diff = text_diff(repo, start, ws.snapshot())
    kinds = {f["kind"] for f in scan_diff(diff, HARNESS, literals_of(["assert add(10, 7) == 17"]))}
    assert kinds == {"vcs_attributes", "deleted_assertion", "pytest_detection", "test_literal_case"}


@pytest.mark.parametrize("line, kind", [
    ("atexit.register(os._exit, 0)", "exit_trick"),
    ("os._exit(0)", "hard_exit"),
    ('atexit.register(getattr(os, "_" + "exit"), 0)', "exit_trick"),
    ("os.kill(os.getpid(), 9)", "exit_trick"),
    ('if os.environ.get("PYTEST_CURRENT_TEST"):', "pytest_detection"),
    ('if "pytest" in sys.argv[0]:', "pytest_detection"),
    ("    if a == 10 and b == 7: return 17", "special_case"),
])
def test_scan_flags(line, kind):
    diff = f"diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1 +1 @@\n+{line}\n"
    assert kind in {f["kind"] for f in scan_diff(diff, HARNESS)}


@pytest.mark.parametrize("path, body", [("conftest.py", "+X = 1"), ("setup.cfg", "+addopts = --co"),
                                        ("pyproject.toml", "+[tool.pytest.ini_options]"),
                                        (".agentloop.yaml", '+checks: ["true"]')])
def test_harness_edits_are_flagged(path, body):
    diff = f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n{body}\n"
    assert [f["kind"] for f in scan_diff(diff, HARNESS)] == ["harness_edit"]


def test_plain_code_is_not_flagged():
    diff = ("diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1 +1 @@\n-    return a - b\n"
            "+    if n == 2:\n+        return a\n+    return a + b\n")
    assert scan_diff(diff, HARNESS, literals_of(["assert add(10, 7) == 17", "n = 2"])) == []


def test_a_hook_repair_knows_which_tests_ran_before_it(tmp_path, monkeypatch):
    """The hook's own first run of the checks is graded (its verdict stays the exit code), so a repair
    that makes the failing test module skip itself is not accepted though another module passes."""
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TESTS,
                                         "test_other.py": "def test_other():\n    assert True\n"})
    skip_me = ("calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n=======\nimport pytest\n\n"
               "pytest.skip('later', allow_module_level=True)\n\n\ndef add(a, b):\n>>>>>>> REPLACE\n")
    monkeypatch.chdir(repo)
    with FakeLLM([{"content": skip_me}]) as server:
        monkeypatch.setenv("AGENTLOOP_MODEL", "openai/fake")
        monkeypatch.setenv("AGENTLOOP_API_BASE", server.api_base)
        result = CliRunner().invoke(cli, ["hook", PYTEST, "--max-turns", "1"], catch_exceptions=False)
    assert result.exit_code == 1 and "not fixed" in result.stdout, result.stdout
    events = [json.loads(line) for line in next(repo.glob(".agentloop/runs/*/trajectory.jsonl")).read_text()
              .splitlines()]
    graded = [e for e in events if e["type"] == "check" and e.get("grade")]
    assert graded and "test_calc.py::test_add (did not run)" in graded[-1]["grade"]["verdict"]
    assert (repo / "calc.py").read_text() == CALC
